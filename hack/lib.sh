#!/usr/bin/env bash
# Shared helpers for hack/ and ci/ scripts. Source it; do not run it.
#
# Two cache locations:
#   TOOLS_CACHE  built tools keyed by version, OUTSIDE the clone, so a fresh clone on the same
#                machine reuses them: ${XDG_CACHE_HOME:-$HOME/.cache}/langbot-k8s/tools
#   STATE_DIR    per-clone runtime state (private dockerd, cluster), git-ignored: <repo>/.cache
#                Unix socket paths are limited to 107 bytes, so sockets live under RUN_DIR,
#                a short per-clone directory in /tmp derived from the clone path.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_CACHE="${LANGBOT_K8S_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/langbot-k8s/tools}"
STATE_DIR="${LANGBOT_K8S_STATE_DIR:-$REPO_ROOT/.cache}"
RUN_DIR="${LANGBOT_K8S_RUN_DIR:-/tmp/lbk-$(printf '%s' "$REPO_ROOT" | sha256sum | cut -c1-10)}"
export REPO_ROOT TOOLS_CACHE STATE_DIR RUN_DIR

# Pinned tool versions (one place).
HELM_VERSION="v3.21.4"    # helm 3 CLI; the Helm SDK in go.mod is the same release
HELM4_VERSION="v4.3.2"
HELM_UNITTEST_VERSION="v1.1.2"
KUBERNETES_VERSION="v1.34.2"
KWOK_VERSION="v0.8.0"
COREDNS_VERSION="v1.15.0"
KUBE_NETWORK_POLICIES_VERSION="v0.8.0"  # NetworkPolicy enforcer of the local cluster (nfqueue)
GATEWAY_API_VERSION="v1.3.0"   # HTTPRoute CRD for the local cluster (from the Go module, no download)
export HELM_VERSION HELM4_VERSION HELM_UNITTEST_VERSION KUBERNETES_VERSION KWOK_VERSION COREDNS_VERSION KUBE_NETWORK_POLICIES_VERSION

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# need_apt PKG... installs Debian packages that are missing (root, apt reachable).
need_apt() {
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  if [ ! -f "$STATE_DIR/.apt-updated" ] || [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -print -quit 2>/dev/null)" ]; then
    apt-get update -qq
    mkdir -p "$STATE_DIR" && touch "$STATE_DIR/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# timed NAME CMD... runs CMD and prints how long the stage took.
timed() {
  local name="$1"; shift
  local start=$SECONDS
  "$@"
  log "stage '$name' took $((SECONDS - start))s"
}

# await_exit PID TIMEOUT_S waits for a process to exit, then kills it with SIGKILL.
await_exit() {
  local pid="$1" deadline=$((SECONDS + $2))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
}

# stop_pid PID TIMEOUT_S sends SIGTERM, then SIGKILL if it is still there after TIMEOUT_S.
stop_pid() {
  kill "$1" 2>/dev/null || true
  await_exit "$1" "$2"
}

# wait_for DESC TIMEOUT_S CMD... polls CMD until it succeeds (a readiness check, not a sleep).
wait_for() {
  local desc="$1" timeout="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "timed out after ${timeout}s waiting for $desc"
    sleep 0.2
  done
}
