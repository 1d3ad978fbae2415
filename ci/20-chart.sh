#!/usr/bin/env bash
# The chart with both pinned helm CLIs (Helm 3 = HELM_VERSION, Helm 4 = HELM4_VERSION): lint
# (strict) and template every ci/ scenario with each, the schema generated from its source, and
# the helm-unittest suites (with snapshots). helm-unittest renders with the Helm 3 SDK it embeds
# (v3.21.3 for v1.1.2) whichever helm runs it; it is run standalone, then once more as a plugin of
# Helm 4 (legacy cli/v1 plugin) to check that a Helm 4 user can run the suites too.
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"
cd "$REPO_ROOT"
HELM3="$(bash hack/tools.sh helm)"
HELM4="$(bash hack/tools.sh helm4)"
UNITTEST="$(bash hack/tools.sh helm-unittest)"
CHART=charts/langbot

go run ./cmd/schemagen -check
log "values.schema.json matches schemas/values.schema.yaml"

n=0
for HELM in "$HELM3" "$HELM4"; do
  v="$("$HELM" version --template '{{.Version}}')"
  for f in "$CHART"/ci/*-values.yaml; do
    "$HELM" lint --strict "$CHART" -f "$f" >/dev/null || { "$HELM" lint --strict "$CHART" -f "$f"; die "helm $v lint failed for $f"; }
    "$HELM" template langbot "$CHART" -f "$f" >/dev/null || die "helm $v template failed for $f"
    n=$((n + 1))
  done
  log "helm $v lint --strict + helm template: every scenario passed"

  # A bad value must be refused by helm itself, naming the field.
  if out=$("$HELM" template langbot "$CHART" --set box.hostRoot=relative 2>&1); then
    die "helm $v accepted box.hostRoot=relative"
  fi
  grep -q "/box/hostRoot" <<<"$out" || die "helm $v's schema error does not name box.hostRoot: $out"
  log "helm $v refuses a relative box.hostRoot, naming the field"
  n=$((n + 1))
done

# Both majors render the same manifests: Helm 4 only adds blank lines between documents, and
# the generated control tokens (randAlphaNum when no Secret exists yet) differ on every render.
same_render() { grep -v -e '^$' -e '^  token: ' ; }
for f in "$CHART"/ci/*-values.yaml; do
  diff <("$HELM3" template langbot "$CHART" -f "$f" | same_render) <("$HELM4" template langbot "$CHART" -f "$f" | same_render) >&2 \
    || die "helm $HELM_VERSION and $HELM4_VERSION render $f differently"
  n=$((n + 1))
done
log "helm $HELM_VERSION and $HELM4_VERSION render every scenario alike"

out=$("$UNITTEST" --strict "$CHART" 2>&1) || { echo "$out"; die "helm-unittest failed"; }
echo "$out"
counts=$(sed -n 's/^Tests: *\([0-9]*\) passed.*/\1/p' <<<"$out")

# The same suites through Helm 4's plugin mechanism, in a throwaway plugin directory holding the
# binary under the name its plugin.yaml runs (without the install hooks, which download).
plugins="$(mktemp -d)"
trap 'rm -rf "$plugins"' EXIT
mkdir -p "$plugins/unittest"
cp "$UNITTEST" "$plugins/unittest/untt-linux-$(go env GOARCH)"
sed '/^platformHooks:/,$d' "$(dirname "$UNITTEST")/plugin.yaml" > "$plugins/unittest/plugin.yaml"
out4=$(HELM_PLUGINS="$plugins" "$HELM4" unittest --strict "$CHART" 2>&1) || { echo "$out4"; die "helm-unittest as a Helm 4 plugin failed"; }
grep -q "^Tests: *$counts passed" <<<"$out4" || { echo "$out4"; die "helm-unittest under Helm 4 did not pass the same $counts tests"; }
log "helm-unittest as a plugin of Helm $HELM4_VERSION: $counts passed"
mkdir -p "$STATE_DIR/results" && echo "chart $((counts + n + 1)) 0" >> "$STATE_DIR/results/counts"
