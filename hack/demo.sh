#!/usr/bin/env bash
# The main job: render and validate the chart for a realistic values stack (a two-pool
# cluster with the Box on a dedicated tainted pool), explain where everything lands, and
# show that the pinned helm CLI agrees. Nothing is installed: the local-cluster install is
# not built yet (issue 6), and this script says so.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
mkdir -p "$STATE_DIR/demo"
OUT="$STATE_DIR/demo"

log "building langbotctl"
go build -o "$OUT/langbotctl" ./cmd/langbotctl
HELM="$(bash hack/tools.sh helm)"
STACK=(-f examples/two-pool-values.yaml --set config.timezone=Asia/Shanghai)

echo
echo "== 1. validate: JSON schema, Helm render, strict decode, Box invariants"
"$OUT/langbotctl" validate "${STACK[@]}"

echo
echo "== 2. explain: placement on the two pools of examples/two-pool-nodes.yaml, Pod Security, exposure"
"$OUT/langbotctl" explain "${STACK[@]}" --nodes examples/two-pool-nodes.yaml

echo
echo "== 3. a mistake a user makes: the box root outside allowedMountRoots and a latest tag"
if "$OUT/langbotctl" validate "${STACK[@]}" --set box.allowedMountRoots='{/srv}' --set box.image.tag=latest; then
  die "the bad values were accepted"
fi

echo
echo "== 4. the same stack through the pinned helm CLI ($("$HELM" version --short))"
"$HELM" lint --strict charts/langbot "${STACK[@]}" | tail -1
"$HELM" template langbot charts/langbot "${STACK[@]}" > "$OUT/langbot.yaml"
printf '   %s\n' "$(grep -c '^kind:' "$OUT/langbot.yaml") objects written to $OUT/langbot.yaml:"
grep '^kind:' "$OUT/langbot.yaml" | sort | uniq -c | sed 's/^/   /'

echo
echo "Done: rendered and validated the chart for a two-pool cluster. Install it on a real cluster with:"
echo "   helm install langbot ./charts/langbot -n langbot --create-namespace -f examples/two-pool-values.yaml"
echo "(Installing into a local cluster built by this repository is not part of 'make demo' yet.)"
