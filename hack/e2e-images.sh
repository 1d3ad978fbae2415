#!/usr/bin/env bash
# Images the local cluster needs, built against the private Docker Engine (nothing can be pulled):
#   langbot-k8s/pause:local                  pod sandbox image (busybox sleeping forever)
#   langbot-k8s/sandbox:local                busybox sandbox / helm test image (hack/docker.sh)
#   ghcr.io/langbot-k8s/boxd:0.1.0           boxd, FROM scratch (hack/image.sh)
#   langbot-k8s/langbot-standin:dev          test/standins/langbot as /usr/local/bin/uv, FROM scratch
#   langbot-k8s/plugin-runtime-standin:dev   test/standins/pluginruntime as /usr/local/bin/uv, FROM scratch
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
bash hack/docker.sh up >/dev/null
eval "$(bash hack/docker.sh env)"
bash hack/image.sh

if ! docker image inspect langbot-k8s/pause:local >/dev/null 2>&1; then
  printf 'FROM langbot-k8s/sandbox:local\nENTRYPOINT ["sleep", "2147483647"]\n' | docker build -q -t langbot-k8s/pause:local - >/dev/null
fi

# Like rockchin/langbot (LangBot's Dockerfile), each stand-in image runs its program through
# `uv` from /app with CMD ["uv", "run", "--no-sync", "main.py"] and has /.dockerenv (LangBot's
# platform check): the binary is installed as /usr/local/bin/uv and parses the uv command line
# the chart renders (`uv run --no-sync -m langbot_plugin.cli.__init__ rt ...` for the runtime).
standin() { # standin PKG IMAGE
  local ctx; ctx="$(mktemp -d)"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$ctx/uv" "./$1"
  : > "$ctx/dockerenv"
  printf '%s\n' 'FROM scratch' 'COPY uv /usr/local/bin/uv' 'COPY dockerenv /.dockerenv' \
    'ENV PATH=/usr/local/bin:/usr/bin:/bin' 'WORKDIR /app' 'CMD ["uv", "run", "--no-sync", "main.py"]' > "$ctx/Dockerfile"
  docker build -q -t "$2" "$ctx" >/dev/null
  rm -rf "$ctx"
}
standin test/standins/langbot langbot-k8s/langbot-standin:dev
standin test/standins/pluginruntime langbot-k8s/plugin-runtime-standin:dev
log "e2e images built"
