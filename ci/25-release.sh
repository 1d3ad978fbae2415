#!/usr/bin/env bash
# What a release ships, against a real OCI registry (hack/registry.sh: Debian's docker-registry
# with TLS and htpasswd on loopback): the boxd image index for linux/amd64 + linux/arm64 built from
# the committed sources, pushed and read back (both manifests, architectures, labels, the amd64
# boxd run here, anonymous pulls refused, the digest pinned in Chart.yaml), and the chart packaged
# with provenance (`make package`, a key made by the test), pushed with Helm 3 and Helm 4 and
# installed from oci:// with --verify; a changed archive and a stranger's signature are refused.
# Tests carry the build tag `release` (test/release).
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"
cd "$REPO_ROOT"
need_apt gnupg
bash hack/registry.sh up
mkdir -p "$STATE_DIR/results"
report="$STATE_DIR/results/release.json"
set +e
go test -count=1 -p 1 -tags release -json ./test/release/ > "$report"
rc=$?
set -e
RESULTS_LABEL=release go run ./hack/gotestsum-lite < "$report"
[ $rc -eq 0 ] || die "release tests failed (report: $report); a stale boxd digest in Chart.yaml is fixed by \`make image-digest\`"
