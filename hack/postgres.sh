#!/usr/bin/env bash
# A private PostgreSQL for the end-to-end suite (the chart's database.use=postgresql): Debian's
# postgresql, its own data directory, socket directory and port, run as the postgres user. It
# listens on loopback (for the test) and on the local cluster's node bridge address, which the
# pods reach (hack/cluster.sh: NODE_IP on bridge lbk0; pods route only the pod and Service
# ranges, so nothing leaves the machine). The address must be one of this machine's: `up`
# refuses any other, so start the cluster first.
#
#   hack/postgres.sh up      initdb (first use), start, create the role and database (idempotent)
#   hack/postgres.sh down    stop it (pg_ctl, by its data directory) and remove its state
#   hack/postgres.sh env     print LBK_PG_HOST/PORT/USER/PASSWORD/DATABASE exports for eval
#   hack/postgres.sh status  running or stopped
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

P="$STATE_DIR/postgres"              # data directory, log, generated password (per clone)
R="$RUN_DIR/postgres"                # Unix socket directory (short path)
DATA="$P/data"
PG_HOST="${LANGBOT_K8S_PG_HOST:-10.244.0.1}"   # hack/cluster.sh NODE_IP
PG_PORT="${LANGBOT_K8S_PG_PORT:-25432}"
PG_USER=langbot
PG_DATABASE=langbot

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
as_pg() { runuser -u postgres -- "$@"; }
running() { [ -f "$DATA/postmaster.pid" ] && as_pg "$(bindir)/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }
psql_admin() { as_pg "$(bindir)/psql" -X -q -v ON_ERROR_STOP=1 -h "$R" -p "$PG_PORT" -d postgres "$@"; }

local_address() { ip -o -4 addr show | awk '{print $4}' | cut -d/ -f1 | grep -qx "$1"; }

up() {
  need_apt postgresql
  local_address "$PG_HOST" || die "$PG_HOST is not an address of this machine: start the local cluster first (hack/cluster.sh up puts it on bridge lbk0), or set LANGBOT_K8S_PG_HOST to a local address pods reach"
  mkdir -p "$P" "$R"
  chown postgres:postgres "$P" "$R"
  chmod 700 "$P"
  if [ ! -f "$DATA/PG_VERSION" ]; then
    [ -f "$P/password" ] || { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$P/password"; chmod 600 "$P/password"; }
    log "initdb $DATA"
    as_pg "$(bindir)/initdb" -D "$DATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 -E UTF8 >/dev/null
    # Socket-peer for the script's admin work; password (SCRAM) over TCP from loopback and the
    # pod range only.
    cat > "$DATA/pg_hba.conf" <<HBA
local all postgres peer
host $PG_DATABASE $PG_USER 127.0.0.1/32 scram-sha-256
host $PG_DATABASE $PG_USER 10.244.0.0/16 scram-sha-256
HBA
    chown postgres:postgres "$DATA/pg_hba.conf"
  fi
  local listen="127.0.0.1,$PG_HOST"
  [ "$PG_HOST" = 127.0.0.1 ] && listen=127.0.0.1
  if ! running; then
    log "starting PostgreSQL on $listen port $PG_PORT (data $DATA)"
    as_pg "$(bindir)/pg_ctl" -D "$DATA" -l "$P/postgres.log" -w -t 60 start \
      -o "-c listen_addresses=$listen -p $PG_PORT -c unix_socket_directories=$R" >/dev/null
  fi
  # Both listeners or nothing: a missing bridge address would leave the pods without a database.
  wait_for "PostgreSQL on $PG_HOST:$PG_PORT (log: $P/postgres.log)" 30 bash -c "echo > /dev/tcp/$PG_HOST/$PG_PORT"
  local pw; pw="$(cat "$P/password")"
  psql_admin <<SQL
SELECT 'CREATE ROLE $PG_USER LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER')\gexec
ALTER ROLE $PG_USER WITH LOGIN PASSWORD '$pw';
SELECT 'CREATE DATABASE $PG_DATABASE OWNER $PG_USER' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DATABASE')\gexec
SQL
  log "PostgreSQL ready: role $PG_USER, database $PG_DATABASE on $PG_HOST:$PG_PORT"
}

down() {
  if running; then
    as_pg "$(bindir)/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null || true
  fi
  rm -rf "$P" "$R"
  log "PostgreSQL stopped, state removed"
}

env_out() {
  [ -f "$P/password" ] || die "no PostgreSQL state: run hack/postgres.sh up"
  printf 'export LBK_PG_HOST=%s LBK_PG_PORT=%s LBK_PG_USER=%s LBK_PG_PASSWORD=%s LBK_PG_DATABASE=%s\n' \
    "$PG_HOST" "$PG_PORT" "$PG_USER" "$(cat "$P/password")" "$PG_DATABASE"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) env_out ;;
  status) if running; then echo "postgres running"; else echo "postgres stopped"; fi ;;
  *) die "usage: hack/postgres.sh up|down|env|status" ;;
esac
