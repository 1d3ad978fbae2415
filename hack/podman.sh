#!/usr/bin/env bash
# A private Podman API service (Debian's podman, rootful, its own storage and socket, vfs, runc,
# cgroupfs) so boxd's Docker backend is tested against a Podman socket too (DOCKER_HOST may
# name one, §9.1). Sandboxes run with --network none; nothing leaves the machine.
#
#   hack/podman.sh up      start it (idempotent) and load the local sandbox image from the
#                          private Docker Engine (hack/docker.sh up)
#   hack/podman.sh down    remove its containers, stop it (by PID), remove its run directory
#   hack/podman.sh env     print `export DOCKER_HOST=...` for eval
#   hack/podman.sh host    print the DOCKER_HOST value
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

P="$RUN_DIR/podman"                  # short: socket, pid file, run root, tmp dir
DATA="$STATE_DIR/podman-data"        # images and containers (vfs), per clone
SOCK="$P/podman.sock"
HOST="unix://$SOCK"
CONF="$P/containers.conf"
SANDBOX_IMAGE="langbot-k8s/sandbox:local"

pm() {
  CONTAINERS_CONF="$CONF" podman --root "$DATA" --runroot "$P/run" --tmpdir "$P/tmp" \
    --storage-driver vfs --cgroup-manager cgroupfs --events-backend file --runtime runc "$@"
}

running() { [ -S "$SOCK" ] && curl -fsS --unix-socket "$SOCK" http://podman/_ping >/dev/null 2>&1; }

up() {
  need_apt podman curl
  mkdir -p "$P/run" "$P/tmp" "$DATA"
  # Podman raises RLIMIT_NOFILE of every container to its own default, which an unprivileged
  # parent (a CI container) may forbid: keep the caller's limits.
  printf '[containers]\ndefault_ulimits = []\n' > "$CONF"
  if ! running; then
    if [ -f "$P/pid" ] && kill -0 "$(cat "$P/pid")" 2>/dev/null; then
      log "podman service (pid $(cat "$P/pid")) is starting; waiting"
    else
      rm -f "$SOCK" "$P/pid"
      log "starting private podman service on $HOST (data $DATA)"
      # setsid: the service outlives the calling shell and is stopped by `down` through its PID.
      setsid bash -c 'echo $$ > "$1"; shift; exec "$@"' _ "$P/pid" \
        env CONTAINERS_CONF="$CONF" podman --root "$DATA" --runroot "$P/run" --tmpdir "$P/tmp" \
        --storage-driver vfs --cgroup-manager cgroupfs --events-backend file --runtime runc \
        system service --time 0 "$HOST" >"$STATE_DIR/podman.log" 2>&1 < /dev/null &
    fi
    wait_for "podman service on $HOST (log: $STATE_DIR/podman.log)" 60 running
  fi
  if ! pm image exists "$SANDBOX_IMAGE"; then
    bash hack/docker.sh up >/dev/null
    log "loading $SANDBOX_IMAGE from the private Docker Engine"
    docker -H "$(bash hack/docker.sh host)" save "$SANDBOX_IMAGE" | pm load -q >/dev/null
  fi
  log "podman ready: DOCKER_HOST=$HOST ($(pm --version))"
}

down() {
  if [ -f "$P/pid" ]; then
    local pid; pid="$(cat "$P/pid")"
    if kill -0 "$pid" 2>/dev/null; then
      # Containers first (with their exec sessions), so no conmon outlives the service.
      pm rm -af -t 0 >/dev/null 2>&1 || true
      stop_pid "$pid" 60
    fi
  fi
  # Exec sessions leave a conmon each, waiting out podman's exit-command delay (300 s) after
  # the exec ended; they all name this clone's run directory.
  local left; left="$(pgrep -f -- "$P/run" || true)"
  [ -z "$left" ] || kill -9 $left 2>/dev/null || true
  rm -rf "$P"
  log "podman service stopped"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) echo "export DOCKER_HOST=$HOST" ;;
  host) echo "$HOST" ;;
  *) die "usage: hack/podman.sh up|down|env|host" ;;
esac
