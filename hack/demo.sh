#!/usr/bin/env bash
# The main job:
#  1-4. render and validate the chart for a realistic values stack (a two-pool cluster with the
#       Box on a dedicated tainted pool), explain where everything lands, check the pinned helm;
#  5.   start the local Kubernetes cluster (a real node + two kwok pools), build and load the
#       images, `helm install` with the box on, show where each component landed and one
#       sandbox command running through the box, print how to reach the UI, and leave it
#       running (the command to stop it is printed last).
# LangBot's own images cannot be pulled offline: the install uses this repo's stand-ins for
# langbot and the plugin runtime (test/standins), and the real boxd.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
mkdir -p "$STATE_DIR/demo"
OUT="$STATE_DIR/demo"

log "building langbotctl"
go build -o "$OUT/langbotctl" ./cmd/langbotctl
HELM="$(bash hack/tools.sh helm)"
STACK=(-f examples/two-pool-values.yaml --set config.timezone=Asia/Shanghai)

echo
echo "== 1. validate: JSON schema, Helm render, strict decode, Box invariants"
"$OUT/langbotctl" validate "${STACK[@]}"

echo
echo "== 2. explain: placement on the two pools of examples/two-pool-nodes.yaml, Pod Security, exposure"
"$OUT/langbotctl" explain "${STACK[@]}" --nodes examples/two-pool-nodes.yaml

echo
echo "== 3. a mistake a user makes: the box root outside allowedMountRoots and a latest tag"
if "$OUT/langbotctl" validate "${STACK[@]}" --set box.allowedMountRoots='{/srv}' --set box.image.tag=latest; then
  die "the bad values were accepted"
fi

echo
echo "== 4. the same stack through the pinned helm CLI ($("$HELM" version --short))"
"$HELM" lint --strict charts/langbot "${STACK[@]}" | tail -1
"$HELM" template langbot charts/langbot "${STACK[@]}" > "$OUT/langbot.yaml"
printf '   %s\n' "$(grep -c '^kind:' "$OUT/langbot.yaml") objects written to $OUT/langbot.yaml:"
grep '^kind:' "$OUT/langbot.yaml" | sort | uniq -c | sed 's/^/   /'

echo
echo "== 5. helm install on the local cluster (real node with Docker + kwok pools 'box' and 'general')"
need_apt jq curl
bash hack/docker.sh up
eval "$(bash hack/docker.sh env)"
SOCK="${DOCKER_HOST#unix://}"
bash hack/cluster.sh up
export KUBECONFIG="$(bash hack/cluster.sh kubeconfig)"
TOKEN="$(cat "$STATE_DIR/cluster/admin.token")"
API=https://127.0.0.1:26443
get() { curl -sfk -H "Authorization: Bearer $TOKEN" "$API$1"; }
NS=langbot-demo
"$HELM" upgrade --install langbot charts/langbot -n "$NS" --create-namespace --wait --timeout 5m \
  -f test/e2e/values/standins.yaml -f test/e2e/values/real-node.yaml -f charts/langbot/ci/box-docker-values.yaml \
  --set box.docker.socketPath="$SOCK" >/dev/null
echo "   installed release 'langbot' in namespace $NS"
echo
echo "   where each component landed:"
get "/api/v1/namespaces/$NS/pods" | jq -r '.items[] | "     \(.metadata.labels["app.kubernetes.io/component"])\t\(.metadata.name)\ton \(.spec.nodeName)\t\(.status.phase)"'
echo "   nodes:"
get /api/v1/nodes | jq -r '.items[] | "     \(.metadata.name)\tpool=\(.metadata.labels.pool)\t\(if .metadata.annotations["kwok.x-k8s.io/node"] then "simulated (kwok)" else "real (kubelet + containerd + Docker)" end)"'
echo
echo "   one sandbox command through the box (the langbot stand-in ran 'cat' on a file it wrote under the shared root):"
# The stand-in serves only what LangBot serves; it writes its outcome on its data volume (a
# hostPath PV on this machine).
outcome() {
  local pv; pv="$(get "/api/v1/namespaces/$NS/persistentvolumeclaims/langbot-data" | jq -r .spec.volumeName)"
  cat "$(get "/api/v1/persistentvolumes/$pv" | jq -r .spec.hostPath.path)/standin-outcome.json"
}
deadline=$((SECONDS + 180))
until status="$(outcome 2>/dev/null | jq .box)" && [ "$(jq -r .state <<<"$status")" = ok ]; do
  [ $SECONDS -lt $deadline ] || { echo "$status"; die "the sandbox round trip did not succeed"; }
  sleep 1
done
jq -r '"     file:   \(.file)\n     stdout: \(.exec.stdout)\n     exit:   \(.exec.exit_code), \(.exec.duration_ms) ms, backend \(.exec.backend_name)"' <<<"$status"
echo "   a skill from the Box's skill store (created and edited over RPC, run from its read-only mount):"
jq -r '"     package: \(.skill.package_root)\n     mounted: \(.skill.mount) (ro)\n     stdout:  \(.skill.stdout)"' <<<"$status"
echo "   the sandbox container on the node's Docker daemon:"
docker ps --filter label=langbot.box=true --format '     {{.Names}}  {{.Image}}  {{.Status}}'
echo
echo "Reach the web UI (here the stand-in) through the API server:"
echo "   curl -k -H \"Authorization: Bearer \$(cat $STATE_DIR/cluster/admin.token)\" $API/api/v1/namespaces/$NS/services/langbot:5300/proxy/"
echo "   export KUBECONFIG=$KUBECONFIG   # for helm and any kubectl you have"
echo
echo "The cluster keeps running. Stop it with:"
echo "   make cluster-down"
