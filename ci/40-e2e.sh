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

# run_json LABEL CMD...: a `go test -json` run into a report, counted; failures are collected.
failed=()
run_json() {
  local label="$1" rc; shift
  set +e
  "$@" > "$STATE_DIR/results/$label.json"
  rc=$?
  set -e
  RESULTS_LABEL="$label" go run ./hack/gotestsum-lite < "$STATE_DIR/results/$label.json"
  [ $rc -eq 0 ] || failed+=("$label")
}

# boxd's kubernetes backend on the real node: the backend's own suite (Pods, the exec agent,
# managed processes, restarts, faults), then the wire-level conformance suite with every boxd
# on that backend, without the tests that drive the Docker Engine itself (kubeSkipped in
# boxd/test/conformance/kube_test.go). Its box root claim is a directory of its own.
timed "boxd kubernetes suite" run_json boxd-kube go test -count=1 -p 1 -timeout 20m -tags integration_kube -json ./boxd/internal/kube/
kube_skip="$(sed -n 's/^const kubeSkipped = "\(.*\)"$/\1/p' boxd/test/conformance/kube_test.go)"
[ -n "$kube_skip" ] || die "kubeSkipped not found in boxd/test/conformance/kube_test.go"
kube_tmp="$(mktemp -d /tmp/lbk-kconf.XXXXXX)" # short: tests make unix sockets under TMPDIR
timed "boxd conformance on kubernetes" run_json boxd-conformance-kube env TMPDIR="$kube_tmp" BOXD_TEST_BACKEND=kubernetes \
  go test -count=1 -p 1 -timeout 30m -tags integration -json -skip "$kube_skip" ./boxd/test/conformance/
rm -rf "$kube_tmp"

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
[ ${#failed[@]} -eq 0 ] || die "boxd on kubernetes failed: ${failed[*]} (reports: $STATE_DIR/results)"
[ $rc -eq 0 ] && [ $pg_rc -eq 0 ] || die "end-to-end suite failed (cluster logs: $STATE_DIR/cluster/logs; PostgreSQL log: $STATE_DIR/results/postgres.log)"
