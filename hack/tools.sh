#!/usr/bin/env bash
# Builds the CLI tools the tests need from pinned Go module versions into TOOLS_CACHE
# (outside the clone, keyed by version) and prints the path of each. Nothing is downloaded
# as a release binary: everything comes from the Go module proxy.
#
#   hack/tools.sh helm            -> path of the helm binary
#   hack/tools.sh helm-unittest   -> path of the helm-unittest binary
#   hack/tools.sh all             -> builds every tool
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

build_helm() {
  # The ldflags mirror helm's own Makefile: without them the binary reports version "v3.22"
  # and assumes Kubernetes 1.20 for `helm template` / `helm lint` (kubeVersion checks fail).
  local dir="$TOOLS_CACHE/helm-$HELM_VERSION-k1.37"
  if [ ! -x "$dir/helm" ]; then
    log "building helm $HELM_VERSION (first use on this machine, ~4 min)"
    mkdir -p "$dir"
    local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    for p in pkg/chartutil pkg/lint/rules; do
      ld="$ld -X helm.sh/helm/v3/$p.k8sVersionMajor=1 -X helm.sh/helm/v3/$p.k8sVersionMinor=37"
    done
    GOBIN="$dir" GOFLAGS=-buildvcs=false CGO_ENABLED=0 go install -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
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

case "${1:-all}" in
  helm) build_helm ;;
  helm-unittest) build_helm_unittest ;;
  all) build_helm; build_helm_unittest ;;
  *) die "unknown tool '$1' (helm, helm-unittest, all)" ;;
esac
