#!/usr/bin/env bash
# helm install on the local Kubernetes cluster: builds (first use) and starts the cluster,
# runs the end-to-end suite with the pinned helm, and tears the cluster down. The private
# PostgreSQL (hack/postgres.sh, on the node's bridge address) runs only for the scenario that
# needs it (TestExternalPostgreSQL) and is stopped with the cluster.
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"
cd "$REPO_ROOT"
bash hack/docker.sh up
eval "$(bash hack/docker.sh env)"
trap 'bash hack/postgres.sh down; bash hack/cluster.sh down' EXIT
timed "cluster up" bash hack/cluster.sh up
export KUBECONFIG="$(bash hack/cluster.sh kubeconfig)"
export HELM="$(bash hack/tools.sh helm)"
mkdir -p "$STATE_DIR/results"
pg_scenario=TestExternalPostgreSQL
set +e
timed "e2e suite" go test -count=1 -p 1 -timeout 40m -tags e2e -json -skip "^$pg_scenario\$" ./test/e2e/... > "$STATE_DIR/results/e2e.json"
rc=$?
set -e
RESULTS_LABEL=e2e go run ./hack/gotestsum-lite < "$STATE_DIR/results/e2e.json"

timed "postgres up" bash hack/postgres.sh up
set +e
(eval "$(bash hack/postgres.sh env)" &&
  timed "e2e postgres" go test -count=1 -p 1 -timeout 15m -tags e2e -json -run "^$pg_scenario\$" ./test/e2e/...) > "$STATE_DIR/results/e2e-postgres.json"
pg_rc=$?
set -e
cp "$STATE_DIR/postgres/postgres.log" "$STATE_DIR/results/postgres.log" 2>/dev/null || true
bash hack/postgres.sh down
RESULTS_LABEL=e2e-postgres go run ./hack/gotestsum-lite < "$STATE_DIR/results/e2e-postgres.json"
[ $rc -eq 0 ] && [ $pg_rc -eq 0 ] || die "end-to-end suite failed (cluster logs: $STATE_DIR/cluster/logs; PostgreSQL log: $STATE_DIR/results/postgres.log)"
