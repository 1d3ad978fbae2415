#!/usr/bin/env bash
# boxd against real container engines: the private dockerd of hack/docker.sh (Debian docker.io,
# vfs, no bridge, no iptables) with the local busybox sandbox image runs every boxd
# integration test (the Docker backend's own suite and the wire-level conformance suite, whose
# exec tests run once per exec path: docker exec and the in-sandbox exec agent); the
# Docker backend's suite runs once more against a private Podman API socket (hack/podman.sh:
# DOCKER_HOST may name one); then the FROM-scratch image is built and smoke-tested.
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"
cd "$REPO_ROOT"
bash hack/docker.sh up
eval "$(bash hack/docker.sh env)"
mkdir -p "$STATE_DIR/results"

# run_suite LABEL PACKAGES... runs integration tests into a JSON report and counts them.
run_suite() {
  local label="$1"; shift
  local report="$STATE_DIR/results/$label.json" rc
  set +e
  go test -count=1 -p 1 -tags integration -json "$@" > "$report"
  rc=$?
  set -e
  RESULTS_LABEL="$label" go run ./hack/gotestsum-lite < "$report"
  [ $rc -eq 0 ] || die "$label integration tests failed (report: $report)"
}

run_suite boxd ./boxd/...
# The whole conformance suite once more with the exec agent on wherever a test does not pick
# an exec path itself (the exec tests already run on both paths above).
BOXD_TEST_EXEC_AGENT=1 run_suite boxd-agent ./boxd/test/conformance/

bash hack/podman.sh up
trap 'bash hack/podman.sh down' EXIT
DOCKER_HOST="$(bash hack/podman.sh host)" run_suite boxd-podman ./boxd/internal/docker/

bash hack/image.sh
