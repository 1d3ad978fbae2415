#!/usr/bin/env bash
# Builds the CLI tools the tests need from pinned Go module versions into TOOLS_CACHE
# (outside the clone, keyed by version) and prints the path of each. Nothing is downloaded
# as a release binary: everything comes from the Go module proxy.
#
#   hack/tools.sh helm            -> path of the helm 3 binary (HELM_VERSION)
#   hack/tools.sh helm4           -> path of the helm 4 binary (HELM4_VERSION)
#   hack/tools.sh helm-unittest   -> path of the helm-unittest binary
#   hack/tools.sh actionlint      -> path of the actionlint binary (ACTIONLINT_VERSION, GitHub workflow linter)
#   hack/tools.sh all             -> builds every tool
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# The workflow linter of ci/25-release.sh (the other pinned versions are in lib.sh).
ACTIONLINT_VERSION="v1.7.12"

# helm_kube_minor MODULE@VERSION prints the minor of the k8s.io/client-go that module's own go.mod
# requires: `go install mod@version` builds with that go.mod, so that is the Kubernetes the SDK
# was built against.
helm_kube_minor() {
  local gomod minor
  gomod="$(cd "$(mktemp -d)" && go mod download -json "$1" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  [ -f "$gomod" ] || die "could not download $1"
  minor="$(sed -n 's/^[[:space:]]*k8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$gomod" | head -1)"
  [ -n "$minor" ] || die "$1: no k8s.io/client-go requirement in $gomod"
  echo "$minor"
}

build_helm() {
  # The ldflags mirror helm 3's own Makefile: without them the binary reports version "v3.21"
  # and assumes Kubernetes 1.20 for `helm template` / `helm lint` (kubeVersion checks fail).
  # The Makefile stamps client-go's v0.N as Kubernetes 1.N; so do we, N read from helm's go.mod.
  local minor; minor="$(helm_kube_minor "helm.sh/helm/v3@$HELM_VERSION")"
  local dir="$TOOLS_CACHE/helm-$HELM_VERSION-k1.$minor"
  if [ ! -x "$dir/helm" ]; then
    log "building helm $HELM_VERSION (first use on this machine, ~4 min)"
    mkdir -p "$dir"
    local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    for p in pkg/chartutil pkg/lint/rules; do
      ld="$ld -X helm.sh/helm/v3/$p.k8sVersionMajor=1 -X helm.sh/helm/v3/$p.k8sVersionMinor=$minor"
    done
    GOBIN="$dir" GOFLAGS=-buildvcs=false CGO_ENABLED=0 go install -trimpath -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  fi
  echo "$dir/helm"
}

# Helm 4 takes its default Kubernetes version from the client-go version in the binary's own
# build info at run time (pkg/chart/common: client-go v0.N -> 1.N), which `go install` keeps, so
# only the version needs stamping (its Makefile's internal/version.version; metadata stays empty
# as for a tagged release).
build_helm4() {
  local dir="$TOOLS_CACHE/helm-$HELM4_VERSION"
  if [ ! -x "$dir/helm" ]; then
    log "building helm $HELM4_VERSION (first use on this machine, ~5 min)"
    mkdir -p "$dir"
    GOBIN="$dir" GOFLAGS=-buildvcs=false CGO_ENABLED=0 go install -trimpath \
      -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM4_VERSION" "helm.sh/helm/v4/cmd/helm@$HELM4_VERSION"
  fi
  echo "$dir/helm"
}

# helm-unittest's go.mod carries a replace directive, so `go install pkg@version` refuses it:
# download the module, copy it somewhere writable and build there.
build_helm_unittest() {
  local dir="$TOOLS_CACHE/helm-unittest-$HELM_UNITTEST_VERSION"
  if [ ! -x "$dir/helm-unittest" ]; then
    log "building helm-unittest $HELM_UNITTEST_VERSION (first use on this machine, ~2 min)"
    local src
    src="$(cd "$(mktemp -d)" && go mod download -json "github.com/helm-unittest/helm-unittest@$HELM_UNITTEST_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
    [ -n "$src" ] || die "could not download helm-unittest $HELM_UNITTEST_VERSION"
    local work; work="$(mktemp -d)"
    cp -r "$src/." "$work/"
    chmod -R u+w "$work"
    mkdir -p "$dir"
    (cd "$work" && GOFLAGS=-buildvcs=false CGO_ENABLED=0 go build -o "$dir/helm-unittest" ./cmd/helm-unittest)
    cp "$work/plugin.yaml" "$dir/plugin.yaml" 2>/dev/null || true
    rm -rf "$work"
  fi
  echo "$dir/helm-unittest"
}

# actionlint reports its version from the module version in its build info, which `go install
# mod@version` records, so nothing needs stamping.
build_actionlint() {
  local dir="$TOOLS_CACHE/actionlint-$ACTIONLINT_VERSION"
  if [ ! -x "$dir/actionlint" ]; then
    log "building actionlint $ACTIONLINT_VERSION (first use on this machine, ~1 min)"
    mkdir -p "$dir"
    GOBIN="$dir" GOFLAGS=-buildvcs=false CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
      "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
  fi
  echo "$dir/actionlint"
}

case "${1:-all}" in
  helm) build_helm ;;
  helm4) build_helm4 ;;
  helm-unittest) build_helm_unittest ;;
  actionlint) build_actionlint ;;
  all) build_helm; build_helm4; build_helm_unittest; build_actionlint ;;
  *) die "unknown tool '$1' (helm, helm4, helm-unittest, actionlint, all)" ;;
esac
