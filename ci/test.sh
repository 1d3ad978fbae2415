#!/usr/bin/env bash
# Every test, stage by stage, with how long each took. `make test` and .ci/run call this;
# .github/workflows/ci.yaml calls the same stage scripts.
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"
cd "$REPO_ROOT"
stages=(ci/10-unit.sh ci/20-chart.sh ci/30-boxd.sh ci/40-e2e.sh)
declare -A took
for s in "${stages[@]}"; do
  [ -f "$s" ] || continue
  log "=== $s"
  start=$SECONDS
  bash "$s"
  took[$s]=$((SECONDS - start))
done
log "stage timings:"
for s in "${stages[@]}"; do [ -n "${took[$s]:-}" ] && printf '  %-20s %5ss\n' "$s" "${took[$s]}" >&2; done
