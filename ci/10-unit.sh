#!/usr/bin/env bash
# Go unit tests of every package (those needing a daemon are in 30-boxd / 40-e2e).
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"
cd "$REPO_ROOT"
go vet ./...
report="$STATE_DIR/results/unit.json"
mkdir -p "$(dirname "$report")"
set +e
go test -count=1 -json ./... > "$report"
rc=$?
set -e
# Human-readable output from the JSON stream, and the counts for ci/test.sh's summary.
go run ./hack/gotestsum-lite < "$report"
[ $rc -eq 0 ] || exit $rc
# A short fuzzing pass of every fuzz target (the seed corpora already ran above).
bash hack/fuzz.sh 10s
