#!/usr/bin/env bash
# Builds the boxd image FROM scratch against the private Docker Engine, then checks it.
#   hack/image.sh          build + smoke test (what `make image` runs)
#   hack/image.sh build    build only
#   hack/image.sh smoke    smoke-test the existing image
# Nothing can be pulled here, so there is no builder image: the static binary
# (CGO_ENABLED=0, -trimpath -ldflags "-s -w") is compiled on the host and sent with an empty
# /tmp and boxd/Dockerfile as the whole build context.
# Smoke test: the image runs boxd in stdio mode (-s) with the engine's socket mounted, as the
# chart does; over stdin it gets box_health, box_init and a box_exec that creates a sandbox
# through the socket and writes into a host workspace mounted at the same path in boxd and in
# the sandbox. The reply and the file on the host are checked. box_init turns the exec agent
# on (docker.exec_agent): boxd copies /boxagent under the shared host root and the sandbox
# runs the commands through it, which a last box_exec checks.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
IMAGE="${BOXD_IMAGE:-ghcr.io/langbot-k8s/boxd:0.1.0}"
SANDBOX_IMAGE="langbot-k8s/sandbox:local"

build() {
  [ -f boxd/cmd/boxd/main.go ] || die "boxd/cmd/boxd does not exist yet: nothing to put in $IMAGE"
  local ctx
  ctx="$(mktemp -d)"
  trap 'rm -rf "$ctx"' RETURN
  CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w" -o "$ctx/boxd" ./boxd/cmd/boxd
  # The in-sandbox exec agent (box.docker.exec_agent): boxd finds it next to itself.
  CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w" -o "$ctx/boxagent" ./boxd/cmd/boxagent
  mkdir -p "$ctx/tmp"
  chmod 1777 "$ctx/tmp"
  cp boxd/Dockerfile "$ctx/Dockerfile"
  docker build -q -t "$IMAGE" "$ctx" >/dev/null
  local size
  size=$(docker image inspect "$IMAGE" --format '{{.Size}}')
  log "built $IMAGE: $((size / 1024)) KiB ($(docker image inspect "$IMAGE" --format '{{len .RootFS.Layers}}') layers, FROM scratch)"
}

smoke() {
  docker image inspect "$IMAGE" >/dev/null 2>&1 || die "$IMAGE is not built: run hack/image.sh build"
  # --help exits 0 without a shell or libc.
  docker run --rm --network none "$IMAGE" --help >/dev/null 2>&1 || die "$IMAGE --help failed"
  local sock="${DOCKER_HOST#unix://}" ws out
  [ -S "$sock" ] || die "DOCKER_HOST=$DOCKER_HOST is not a unix socket: the smoke test mounts it"
  ws="$(mktemp -d /tmp/lbk-image-smoke-XXXXXX)"
  trap 'rm -rf "$ws"' RETURN
  local ctx='{"instance_uuid":"image-smoke","workspace_uuid":"smoke","placement_generation":1}'
  # BOXD_SCOPE keeps this boxd's start-up recovery away from containers of other runtimes
  # sharing the engine.
  # Like LangBot, box_init's reply is awaited before the sandbox actions: boxd answers stdio
  # requests concurrently and refuses sandbox actions until box_init has been applied.
  local exec3 exec4
  exec3='{"seq_id":3,"action":"box_exec","data":{"session_id":"smoke","image":"'"$SANDBOX_IMAGE"'","host_path":"'"$ws"'/default","cmd":"echo from-sandbox > /workspace/out && cat /workspace/out","timeout_sec":60},"context":'"$ctx"'}'
  exec4='{"seq_id":4,"action":"box_exec","data":{"session_id":"smoke","image":"'"$SANDBOX_IMAGE"'","host_path":"'"$ws"'/default","cmd":"tr '"'\\\\0'"' '"' '"' < /proc/$PPID/cmdline","timeout_sec":60},"context":'"$ctx"'}'
  local pipes pid in from ok=1
  pipes="$(mktemp -d /tmp/lbk-image-smoke-pipes-XXXXXX)"
  mkfifo "$pipes/in" "$pipes/out"
  timeout 120 docker run -i --rm --network none \
    -e LANGBOT_BOX_TRUSTED_INSTANCE_UUID=image-smoke -e BOXD_SCOPE="image-smoke-$$" \
    -v "$sock:/var/run/docker.sock" -v "$ws:$ws" "$IMAGE" -s <"$pipes/in" >"$pipes/out" 2>"$ws.log" &
  pid=$!
  exec {in}>"$pipes/in" {from}<"$pipes/out"
  trap '' PIPE # a boxd that died fails the next write (reported below) instead of killing the script
  out=""
  await_reply() { # await_reply SEQ: read replies (in any order) until SEQ's has come
    local line
    while ! grep -q "\"seq_id\":$1," <<<"$out"; do
      IFS= read -r -t 120 line <&"$from" || return 1
      out+="$line"$'\n'
    done
  }
  printf '%s\n' '{"seq_id":1,"action":"box_health","data":{}}' \
    '{"seq_id":2,"action":"box_init","data":{"backend":"local","local":{"host_root":"'"$ws"'","allowed_mount_roots":["'"$ws"'"]},"docker":{"exec_agent":true}}}' >&"$in"
  await_reply 1 && await_reply 2 || ok=0
  [ $ok = 1 ] && printf '%s\n' "$exec3" >&"$in" && await_reply 3 || ok=0
  [ $ok = 1 ] && printf '%s\n' "$exec4" >&"$in" && await_reply 4 || ok=0
  exec {in}>&-
  cat <&"$from" >/dev/null || true
  exec {from}<&-
  wait "$pid" || ok=0
  rm -rf "$pipes"
  [ $ok = 1 ] || { cat "$ws.log" >&2; rm -f "$ws.log"; die "$IMAGE: boxd in stdio mode failed: $out"; }
  rm -f "$ws.log"
  grep -q '"seq_id":1,"code":0,.*"available":true' <<<"$out" || die "$IMAGE: box_health did not report the engine available: $out"
  grep -q '"seq_id":3,"code":0,.*"stdout":"from-sandbox"' <<<"$out" || die "$IMAGE: box_exec through the socket failed: $out"
  [ "$(cat "$ws/default/out")" = "from-sandbox" ] || die "$IMAGE: the sandbox's file is not in the host workspace"
  grep -q '"seq_id":4,"code":0,.*"stdout":"/.boxd-agent"' <<<"$out" || die "$IMAGE: box_exec did not run through the exec agent: $out"
  log "$IMAGE: stdio RPC, sandbox through the mounted socket, shared host workspace, exec agent: ok"
}

bash hack/docker.sh up >/dev/null
eval "$(bash hack/docker.sh env)"
case "${1:-all}" in
  build) build ;;
  smoke) smoke ;;
  all) build; smoke ;;
  *) die "usage: hack/image.sh [build|smoke]" ;;
esac
