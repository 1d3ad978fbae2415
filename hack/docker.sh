#!/usr/bin/env bash
# A private Docker Engine for tests, benchmarks and the local cluster's "Docker-equipped node".
# Debian's docker.io, its own data root and socket, vfs storage, no bridge, no iptables: sandbox
# containers run with --network none, so nothing leaves the machine.
#
#   hack/docker.sh up      start it (idempotent) and build the local sandbox image
#   hack/docker.sh down    stop it (by PID) and remove its exec root
#   hack/docker.sh env     print `export DOCKER_HOST=...` for eval
#   hack/docker.sh host    print the DOCKER_HOST value
#
# Images it provides (nothing can be pulled here):
#   langbot-k8s/sandbox:local   busybox-static root file system (sh, cat, sleep, ...), via docker import
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

D="$RUN_DIR/docker"                 # short: holds the socket, pid file and exec root
DATA="$STATE_DIR/docker-data"        # images and containers (vfs), per clone
SOCK="$D/docker.sock"
HOST="unix://$SOCK"
SANDBOX_IMAGE="langbot-k8s/sandbox:local"

dk() { docker -H "$HOST" "$@"; }

running() { [ -S "$SOCK" ] && dk version --format '{{.Server.APIVersion}}' >/dev/null 2>&1; }

build_sandbox_image() {
  if dk image inspect "$SANDBOX_IMAGE" >/dev/null 2>&1; then return 0; fi
  log "building $SANDBOX_IMAGE from busybox-static"
  local root; root="$(mktemp -d)"
  mkdir -p "$root"/{bin,tmp,workspace,etc,root,home,usr/bin,proc,sys,dev}
  cp /bin/busybox "$root/bin/busybox"
  # Every applet as a hard link so `sh -lc`, cat, sleep, env, ... exist on PATH.
  for a in $("$root/bin/busybox" --list); do
    [ -e "$root/bin/$a" ] || ln "$root/bin/busybox" "$root/bin/$a"
  done
  chmod 755 "$root"
  # busybox-static is linked against glibc, whose resolver loads NSS modules at run time: ship
  # them (same glibc as the binary, from this Debian) so wget/nslookup can resolve Service names.
  mkdir -p "$root/lib/x86_64-linux-gnu" "$root/lib64"
  for l in libc.so.6 libnss_dns.so.2 libnss_files.so.2 libresolv.so.2; do
    [ -e "/lib/x86_64-linux-gnu/$l" ] && cp -L "/lib/x86_64-linux-gnu/$l" "$root/lib/x86_64-linux-gnu/"
  done
  cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/" 2>/dev/null || true
  printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/sh\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
  chmod 1777 "$root/tmp"
  tar -C "$root" -c . | dk import \
    -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' -c 'WORKDIR /workspace' -c 'CMD ["sh"]' \
    - "$SANDBOX_IMAGE" >/dev/null
  rm -rf "$root"
}

up() {
  need_apt docker.io busybox-static
  mkdir -p "$D" "$DATA"
  if ! running; then
    if [ -f "$D/pid" ] && kill -0 "$(cat "$D/pid")" 2>/dev/null; then
      log "dockerd (pid $(cat "$D/pid")) is starting; waiting"
    else
      rm -f "$SOCK" "$D/pid"
      log "starting private dockerd on $HOST (data $DATA)"
      # setsid: the daemon outlives the calling shell and is stopped by `down` through its PID.
      setsid dockerd \
        --data-root "$DATA" --exec-root "$D/exec" --pidfile "$D/pid" \
        --host "$HOST" --storage-driver vfs \
        --iptables=false --ip6tables=false --bridge=none --ip-masq=false \
        --containerd-namespace "lbk-$(basename "$RUN_DIR")" --containerd-plugins-namespace "lbk-$(basename "$RUN_DIR")-p" \
        >"$STATE_DIR/dockerd.log" 2>&1 < /dev/null &
    fi
    wait_for "dockerd on $HOST (log: $STATE_DIR/dockerd.log)" 120 running
  fi
  build_sandbox_image
  log "dockerd ready: DOCKER_HOST=$HOST (API $(dk version --format '{{.Server.APIVersion}}'))"
}

down() {
  if [ -f "$D/pid" ]; then
    local pid; pid="$(cat "$D/pid")"
    if kill -0 "$pid" 2>/dev/null; then
      # Containers first, so no shim outlives the daemon.
      dk ps -aq 2>/dev/null | xargs -r docker -H "$HOST" rm -f >/dev/null 2>&1 || true
      stop_pid "$pid" 60
    fi
  fi
  rm -rf "$D"
  log "dockerd stopped"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) echo "export DOCKER_HOST=$HOST" ;;
  host) echo "$HOST" ;;
  *) die "usage: hack/docker.sh up|down|env|host" ;;
esac
