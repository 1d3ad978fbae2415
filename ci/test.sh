#!/usr/bin/env bash
# Every test, stage by stage, with how long each took. `make test` and .ci/run call this;
# .github/workflows/ci.yaml calls the same stage scripts.
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"
cd "$REPO_ROOT"
stages=(ci/10-unit.sh ci/20-chart.sh ci/25-release.sh ci/30-boxd.sh ci/40-e2e.sh)
declare -A took
mkdir -p "$STATE_DIR/results" && : > "$STATE_DIR/results/counts"
for s in "${stages[@]}"; do
  [ -f "$s" ] || continue
  log "=== $s"
  start=$SECONDS
  bash "$s"
  took[$s]=$((SECONDS - start))
done
log "stage timings:"
for s in "${stages[@]}"; do
  if [ -n "${took[$s]:-}" ]; then printf "  %-20s %5ss\n" "$s" "${took[$s]}" >&2; fi
done
# One closing line for CI: every Go test, helm-unittest test and chart check counted.
awk '{p += $2; f += $3} END {printf "%d passed, %d failed\n", p, f}' "$STATE_DIR/results/counts"
