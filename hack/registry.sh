#!/usr/bin/env bash
# A real OCI registry for tests: Debian's docker-registry (distribution 2.8) on loopback only,
# with TLS (a throwaway CA made here) and htpasswd (bcrypt) authentication, as users' registries
# are. Images and charts pushed to it live under the per-clone STATE_DIR; the pid file under RUN_DIR.
#
#   hack/registry.sh up     start it (idempotent)
#   hack/registry.sh down   stop it (by PID); its data stays for the next `up`
#   hack/registry.sh env    print exports for eval: LBK_REGISTRY (127.0.0.1:PORT), LBK_REGISTRY_USER,
#                           LBK_REGISTRY_PASSWORD, LBK_REGISTRY_CA (PEM of the CA that signed it)
#
# Clients trust it through the CA file: helm (--ca-file, or SSL_CERT_FILE), go-containerregistry
# (SSL_CERT_FILE), curl (--cacert); containerd through a hosts.toml naming the same CA.
# The port is derived from the clone path (5000 + 0..999), so two clones do not collide.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

R="$RUN_DIR/registry"                # pid file
S="$STATE_DIR/registry"              # data, certificates, credentials, config
PORT="${LBK_REGISTRY_PORT:-$((5000 + 0x$(printf '%s' "$REPO_ROOT" | sha256sum | cut -c1-4) % 1000))}"
ADDR="127.0.0.1:$PORT"
USER_NAME="langbot"

running() {
  [ -f "$R/pid" ] && kill -0 "$(cat "$R/pid")" 2>/dev/null || return 1
  # Without credentials the registry answers 401 with a Basic challenge: up, TLS and auth on.
  [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$S/certs/ca.pem" "https://$ADDR/v2/")" = 401 ]
}

make_certs() {
  [ -f "$S/certs/server.pem" ] && return 0
  mkdir -p "$S/certs"
  local c="$S/certs"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=langbot-k8s test registry CA" \
    -keyout "$c/ca-key.pem" -out "$c/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$c/server-key.pem" -out "$c/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$c/ext.cnf"
  openssl x509 -req -in "$c/server.csr" -CA "$c/ca.pem" -CAkey "$c/ca-key.pem" -CAcreateserial -days 3650 \
    -extfile "$c/ext.cnf" -out "$c/server.pem" 2>/dev/null
  rm -f "$c/server.csr" "$c/ext.cnf"
}

make_auth() {
  [ -f "$S/auth/htpasswd" ] && return 0
  mkdir -p "$S/auth" && chmod 700 "$S/auth"
  head -c 18 /dev/urandom | base64 | tr '+/' '-_' > "$S/auth/password"
  htpasswd -Bbn "$USER_NAME" "$(cat "$S/auth/password")" > "$S/auth/htpasswd"
}

write_config() {
  mkdir -p "$S/data"
  cat > "$S/config.yml" <<EOF
version: 0.1
log:
  level: warn
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: $S/data
  delete:
    enabled: true
http:
  addr: $ADDR
  tls:
    certificate: $S/certs/server.pem
    key: $S/certs/server-key.pem
  headers:
    X-Content-Type-Options: [nosniff]
auth:
  htpasswd:
    realm: langbot-k8s-test
    path: $S/auth/htpasswd
EOF
}

up() {
  need_apt docker-registry apache2-utils openssl curl
  mkdir -p "$R" "$S"
  running && return 0
  make_certs
  make_auth
  write_config
  if [ -f "$R/pid" ] && kill -0 "$(cat "$R/pid")" 2>/dev/null; then
    log "registry (pid $(cat "$R/pid")) is starting; waiting"
  else
    log "starting docker-registry on https://$ADDR (data $S/data)"
    # setsid: it outlives the calling shell and is stopped by `down` through its PID.
    setsid docker-registry serve "$S/config.yml" > "$STATE_DIR/registry.log" 2>&1 < /dev/null &
    echo $! > "$R/pid"
  fi
  wait_for "docker-registry on $ADDR (log: $STATE_DIR/registry.log)" 60 running
  log "registry ready: https://$ADDR (user $USER_NAME, CA $S/certs/ca.pem)"
}

down() {
  [ -f "$R/pid" ] || return 0
  stop_pid "$(cat "$R/pid")" 10
  rm -f "$R/pid"
  log "registry stopped"
}

env_out() {
  [ -f "$S/auth/password" ] || die "the registry was never started: run hack/registry.sh up"
  printf 'export LBK_REGISTRY=%q LBK_REGISTRY_USER=%q LBK_REGISTRY_PASSWORD=%q LBK_REGISTRY_CA=%q\n' \
    "$ADDR" "$USER_NAME" "$(cat "$S/auth/password")" "$S/certs/ca.pem"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) env_out ;;
  *) die "usage: hack/registry.sh up|down|env" ;;
esac
