#!/usr/bin/env bash
# The chart with the pinned helm CLI: lint (strict) and template every ci/ scenario, the
# schema generated from its source, and the helm-unittest suites (with snapshots).
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"
cd "$REPO_ROOT"
HELM="$(bash hack/tools.sh helm)"
UNITTEST="$(bash hack/tools.sh helm-unittest)"
CHART=charts/langbot

go run ./cmd/schemagen -check
log "values.schema.json matches schemas/values.schema.yaml"

n=0
for f in "$CHART"/ci/*-values.yaml; do
  "$HELM" lint --strict "$CHART" -f "$f" >/dev/null || { "$HELM" lint --strict "$CHART" -f "$f"; die "helm lint failed for $f"; }
  "$HELM" template langbot "$CHART" -f "$f" >/dev/null || die "helm template failed for $f"
  n=$((n + 1))
done
log "helm lint --strict + helm template: $n scenarios passed"

# A bad value must be refused by helm itself, naming the field.
if out=$("$HELM" template langbot "$CHART" --set box.hostRoot=relative 2>&1); then
  die "helm accepted box.hostRoot=relative"
fi
grep -q "/box/hostRoot" <<<"$out" || die "helm's schema error does not name box.hostRoot: $out"
log "helm refuses a relative box.hostRoot, naming the field"

out=$("$UNITTEST" --strict "$CHART" 2>&1) || { echo "$out"; die "helm-unittest failed"; }
echo "$out"
counts=$(sed -n 's/^Tests: *\([0-9]*\) passed.*/\1/p' <<<"$out")
mkdir -p "$STATE_DIR/results" && echo "chart $((counts + n + 2)) 0" >> "$STATE_DIR/results/counts"
