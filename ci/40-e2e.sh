#!/usr/bin/env bash
# helm install on the local Kubernetes cluster: builds (first use) and starts the cluster,
# runs the end-to-end suite with the pinned helm, and tears the cluster down.
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"
cd "$REPO_ROOT"
bash hack/docker.sh up
eval "$(bash hack/docker.sh env)"
trap 'bash hack/cluster.sh down' EXIT
timed "cluster up" bash hack/cluster.sh up
export KUBECONFIG="$(bash hack/cluster.sh kubeconfig)"
export HELM="$(bash hack/tools.sh helm)"
report="$STATE_DIR/results/e2e.json"
mkdir -p "$(dirname "$report")"
set +e
timed "e2e suite" go test -count=1 -p 1 -timeout 40m -tags e2e -json ./test/e2e/... > "$report"
rc=$?
set -e
RESULTS_LABEL=e2e go run ./hack/gotestsum-lite < "$report"
[ $rc -eq 0 ] || die "end-to-end suite failed (cluster logs: $STATE_DIR/cluster/logs)"
