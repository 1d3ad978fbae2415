#!/usr/bin/env bash
# Builds the boxd image FROM scratch against the private Docker Engine: the static binary is
# compiled on the host (nothing can be pulled here, so no builder image), then copied in.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
IMAGE="${BOXD_IMAGE:-ghcr.io/langbot-k8s/boxd:0.1.0}"
bash hack/docker.sh up >/dev/null
eval "$(bash hack/docker.sh env)"
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w" -o "$ctx/boxd" ./boxd/cmd/boxd
mkdir -p "$ctx/tmp"
cp boxd/Dockerfile "$ctx/Dockerfile"
docker build -q -t "$IMAGE" "$ctx" >/dev/null
size=$(docker image inspect "$IMAGE" --format '{{.Size}}')
log "built $IMAGE: $((size / 1024)) KiB"
# The image must start: --help exits 0 without a shell or libc.
docker run --rm --network none "$IMAGE" --help >/dev/null 2>&1 || [ $? -eq 2 ] || die "$IMAGE does not start"
