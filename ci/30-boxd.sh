#!/usr/bin/env bash
# boxd against a real Docker Engine: the private dockerd of hack/docker.sh (Debian docker.io,
# vfs, no bridge, no iptables), the local busybox sandbox image, the wire-level conformance
# suite, then the FROM-scratch image.
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"
cd "$REPO_ROOT"
bash hack/docker.sh up
eval "$(bash hack/docker.sh env)"
report="$STATE_DIR/results/boxd.json"
mkdir -p "$(dirname "$report")"
set +e
go test -count=1 -p 1 -tags integration -json ./boxd/... > "$report"
rc=$?
set -e
RESULTS_LABEL=boxd go run ./hack/gotestsum-lite < "$report"
[ $rc -eq 0 ] || die "boxd integration tests failed"
bash hack/image.sh
