#!/usr/bin/env bash
# boxd (docker exec path and exec agent path) next to the raw Docker Engine API, in one
# interleaved run on the private engine, then boxd's kubernetes backend next to raw Pods.
# Prints markdown tables; the JSON goes to .cache/bench/<time>.json for `make bench-compare`.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
bash hack/docker.sh up >/dev/null
eval "$(bash hack/docker.sh env)"
bash hack/image.sh >/dev/null 2>&1 || true
mkdir -p "$STATE_DIR/bench"
CGO_ENABLED=0 go build -o "$STATE_DIR/bench/boxd" ./boxd/cmd/boxd
# boxd finds the exec agent next to its binary (the "boxd agent" rows).
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$STATE_DIR/bench/boxagent" ./boxd/cmd/boxagent
# The kubernetes rows (BENCH_KUBE=0 leaves them out) run on the local cluster's real node: it is
# brought up when it is not running, and down again afterwards in that case only.
kube=()
if [ "${BENCH_KUBE:-1}" = 1 ]; then
  # (status read whole first: grep -q closing the pipe early fails it under pipefail)
  status="$(bash hack/cluster.sh status)"
  if ! grep -q "^kube-apiserver running" <<<"$status"; then
    trap 'bash hack/cluster.sh down' EXIT
    bash hack/cluster.sh up
  fi
  export KUBECONFIG="$(bash hack/cluster.sh kubeconfig)"
  kube=(--kube)
fi
go run ./boxd/cmd/boxbench run --boxd "$STATE_DIR/bench/boxd" --json "$STATE_DIR/bench/$(date +%Y%m%d-%H%M%S).json" "${kube[@]}" "$@"
