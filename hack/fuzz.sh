#!/usr/bin/env bash
# Runs every fuzz target of the repository for FUZZTIME each (default 30s): `make fuzz`,
# `make fuzz FUZZTIME=10m`. ci/10-unit.sh runs them for 10s each. The committed seed corpora
# (testdata/fuzz/<Target>/) also run as plain unit tests with every `go test`. A failing input
# is written to testdata/fuzz/<Target>/ by `go test`: commit it with the fix.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
FUZZTIME="${1:-${FUZZTIME:-30s}}"
for pkg in $(go list ./... ); do
  dir="$(go list -f '{{.Dir}}' "$pkg")"
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
    log "fuzzing $pkg $target for $FUZZTIME"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg" | tail -2
  done
done
