#!/usr/bin/env bash
# Builds the Kubernetes binaries of the local cluster from pinned Go modules into the tools
# cache (outside the clone, keyed by version) and prints the directory:
#   kube-apiserver, kube-scheduler, kube-controller-manager, kubelet, kube-proxy  (k8s.io/kubernetes)
#   kwok                                                                          (sigs.k8s.io/kwok)
#   coredns                                                                       (github.com/coredns/coredns)
# k8s.io/kubernetes is not meant to be a dependency: a throwaway module pins it and replaces
# each k8s.io/* staging module with its published version.
#
#   hack/k8s-binaries.sh kube-network-policies
# builds only the NetworkPolicy enforcer (sigs.k8s.io/kube-network-policies, its own version
# directory) and prints the binary's path.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "${1:-}" = kube-network-policies ]; then
  knp="$TOOLS_CACHE/kube-network-policies-$KUBE_NETWORK_POLICIES_VERSION/kube-network-policies"
  if [ ! -x "$knp" ]; then
    log "building kube-network-policies $KUBE_NETWORK_POLICIES_VERSION"
    gobin="$(mktemp -d)"
    # The module's main package is its cmd/ directory, so `go install` names the binary "cmd".
    GOBIN="$gobin" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
      "sigs.k8s.io/kube-network-policies/cmd@$KUBE_NETWORK_POLICIES_VERSION"
    mkdir -p "$(dirname "$knp")"
    mv "$gobin/cmd" "$knp"
    rmdir "$gobin"
  fi
  echo "$knp"
  exit 0
fi

# "-r2": binaries stamped with their version (the API server reports it; helm checks kubeVersion).
DIR="$TOOLS_CACHE/kubernetes-$KUBERNETES_VERSION-r2"
STAGING_VERSION="v0${KUBERNETES_VERSION#v1}"   # v1.34.2 -> v0.34.2
COMPONENTS=(kube-apiserver kube-scheduler kube-controller-manager kubelet kube-proxy)
mkdir -p "$DIR"

missing=()
for c in "${COMPONENTS[@]}"; do [ -x "$DIR/$c" ] || missing+=("$c"); done
if [ ${#missing[@]} -gt 0 ]; then
  work="$TOOLS_CACHE/src/kubernetes-$KUBERNETES_VERSION"
  mkdir -p "$work"
  if [ ! -f "$work/go.sum" ]; then
    log "preparing a module pinning k8s.io/kubernetes@$KUBERNETES_VERSION"
    (
      cd "$work"
      [ -f go.mod ] || go mod init lbk-kubernetes-build >/dev/null 2>&1
      go mod edit -require="k8s.io/kubernetes@$KUBERNETES_VERSION"
      src="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
      for m in $(grep -oE '^\s*k8s.io/[a-z0-9-]+ => ./staging' "$src/go.mod" | awk '{print $1}'); do
        go mod edit -replace="$m=$m@$STAGING_VERSION"
      done
      {
        echo "package main"
        echo "import ("
        for c in "${COMPONENTS[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$c/app\""; done
        echo ")"
        echo "func main() {}"
      } > main.go
      go mod tidy >/dev/null
    )
  fi
  for c in "${missing[@]}"; do
    log "building $c $KUBERNETES_VERSION"
    minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
    ld="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld="$ld -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
    done
    (cd "$work" && CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$DIR/$c.tmp" "k8s.io/kubernetes/cmd/$c" && mv "$DIR/$c.tmp" "$DIR/$c")
  done
fi
if [ ! -x "$DIR/kwok" ]; then
  log "building kwok $KWOK_VERSION"
  GOBIN="$DIR" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
fi
if [ ! -x "$DIR/coredns" ]; then
  log "building coredns $COREDNS_VERSION"
  GOBIN="$DIR" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
fi
echo "$DIR"
