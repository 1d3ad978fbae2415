#!/usr/bin/env bash
# A real local Kubernetes cluster on this machine, offline:
#   control plane  etcd (Debian) + kube-apiserver, -scheduler, -controller-manager (k8s.io/kubernetes)
#   a real node    kubelet + its own containerd (CRI, native snapshotter, runc) + bridge CNI
#                  + kube-proxy (iptables) + CoreDNS on the bridge address
#   node pools     kwok-simulated nodes with their own labels and taints
#   storage        StorageClass lbk-hostpath, served by test/provisioner (hostPath PVs)
#   Docker         the private dockerd of hack/docker.sh is the node's Docker daemon for the box
# Everything listens on loopback or the node's bridge (10.244.0.1); pods get routes for the pod
# and Service ranges only, and no masquerading, so nothing leaves the machine.
#
#   hack/cluster.sh up | down | status | kubeconfig | env
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

C="$STATE_DIR/cluster"          # certs, configs, data, logs
R="$RUN_DIR/cluster"            # sockets and pids
KUBECONFIG_FILE="$C/kubeconfig"
NODE=lbk-node
BRIDGE=lbk0
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
SVC_CIDR=10.96.0.0/16
ETCD_PORT=23790
API_PORT=26443
TOKEN_FILE="$C/tokens.csv"

pidfile() { echo "$R/$1.pid"; }
running() { local p; p="$(pidfile "$1")"; [ -f "$p" ] && kill -0 "$(cat "$p")" 2>/dev/null; }
start() { # start NAME CMD... : a background process with its log and pid file
  local name="$1"; shift
  running "$name" && return 0
  setsid "$@" >"$C/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$(pidfile "$name")"
}
api() { curl -sfk -H "Authorization: Bearer $(cat "$C/admin.token")" "https://127.0.0.1:$API_PORT$1"; }

binaries() {
  BIN="$(bash "$REPO_ROOT/hack/k8s-binaries.sh" | tail -1)"
  HELPERS="$C/bin"
  mkdir -p "$HELPERS"
  (cd "$REPO_ROOT" && CGO_ENABLED=0 go build -o "$HELPERS/provisioner" ./test/provisioner)
}

certs_and_configs() {
  mkdir -p "$C"/{logs,etcd,pki,kubelet,pv,cni/net.d,containerd} "$R"
  [ -f "$C/pki/sa.key" ] || openssl genrsa -out "$C/pki/sa.key" 2048 2>/dev/null
  [ -f "$C/pki/sa.pub" ] || openssl rsa -in "$C/pki/sa.key" -pubout -out "$C/pki/sa.pub" 2>/dev/null
  [ -f "$C/admin.token" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$C/admin.token"
  echo "$(cat "$C/admin.token"),admin,admin,system:masters" > "$TOKEN_FILE"
  cat > "$KUBECONFIG_FILE" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "https://127.0.0.1:$API_PORT", insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: "$(cat "$C/admin.token")"}
contexts:
- name: local
  context: {cluster: local, user: admin}
current-context: local
KC
  cat > "$C/containerd/config.toml" <<TOML
version = 2
root = "$C/containerd/root"
state = "$R/containerd-state"
[grpc]
  address = "$R/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/langbot-k8s/pause:local"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$C/cni/net.d"
TOML
  cat > "$C/cni/net.d/10-lbk.conflist" <<CNI
{"cniVersion": "0.4.0", "name": "lbk", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
            "routes": [{"dst": "10.244.0.0/16"}, {"dst": "$SVC_CIDR"}], "dataDir": "$C/cni/ipam"}},
  {"type": "loopback"}]}
CNI
  cat > "$C/kubelet/config.yaml" <<KY
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
localStorageCapacityIsolation: false
containerRuntimeEndpoint: unix://$R/containerd.sock
clusterDNS: [$NODE_IP]
clusterDomain: cluster.local
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
resolvConf: ""
KY
  cat > "$C/kube-proxy.yaml" <<KP
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: 10.244.0.0/16
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
hostnameOverride: $NODE
clientConnection: {kubeconfig: $KUBECONFIG_FILE}
conntrack: {maxPerCore: 0}
KP
  cat > "$C/Corefile" <<CF
.:53 {
    bind $NODE_IP
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $KUBECONFIG_FILE local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
}
CF
}

bridge() {
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip addr show "$BRIDGE" | grep -q "$NODE_IP/" || ip addr add "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  sysctl -qw net.ipv4.ip_forward=1 || true
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
}

kwok_stages() {
  local src
  src="$(cd "$(mktemp -d)" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  : > "$C/kwok-stages.yaml"
  for d in node/fast node/heartbeat pod/fast; do
    for f in "$src/kustomize/stage/$d"/*.yaml; do
      case "$(basename "$f")" in kustomization.yaml) continue ;; esac
      { echo "---"; cat "$f"; } >> "$C/kwok-stages.yaml"
    done
  done
}

load_images() {
  eval "$(bash "$REPO_ROOT/hack/docker.sh" env)"
  bash "$REPO_ROOT/hack/e2e-images.sh"
  local images=(langbot-k8s/pause:local langbot-k8s/sandbox:local ghcr.io/langbot-k8s/boxd:0.1.0
                langbot-k8s/langbot-standin:dev langbot-k8s/plugin-runtime-standin:dev)
  docker save "${images[@]}" | ctr -a "$R/containerd.sock" -n k8s.io images import --snapshotter native - >/dev/null
  log "loaded ${#images[@]} images into the node's containerd"
}

# The cluster uses machine-wide resources (ports, the lbk0 bridge, iptables): one per machine.
check_free() {
  running kube-apiserver && return 0
  local port
  for port in "$ETCD_PORT" "$API_PORT" 10248; do # loopback only: nothing leaves the machine
    if (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "port $port is taken: another local cluster (another clone's hack/cluster.sh) is running on this machine; stop it with its 'hack/cluster.sh down' first"
    fi
  done
}

up() {
  need_apt etcd-server containerd runc containernetworking-plugins iptables conntrack openssl curl socat
  check_free
  local t0=$SECONDS
  timed "binaries" binaries
  certs_and_configs
  [ -f "$C/iptables.saved" ] || iptables-save > "$C/iptables.saved"
  bridge
  export PATH="$BIN:$PATH"

  start etcd etcd --data-dir "$C/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" --initial-cluster "default=http://127.0.0.1:$((ETCD_PORT + 10))"
  wait_for "etcd" 60 curl -sf "http://127.0.0.1:$ETCD_PORT/health"
  start kube-apiserver "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" --cert-dir "$C/pki" \
    --service-account-key-file "$C/pki/sa.pub" --service-account-signing-key-file "$C/pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc --token-auth-file "$TOKEN_FILE" \
    --authorization-mode Node,RBAC --service-cluster-ip-range "$SVC_CIDR" --allow-privileged=true \
    --enable-priority-and-fairness=false --kubelet-preferred-address-types InternalIP,Hostname
  timed "apiserver ready" wait_for "kube-apiserver /readyz" 180 api /readyz
  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$KUBECONFIG_FILE" \
    --authentication-kubeconfig "$KUBECONFIG_FILE" --authorization-kubeconfig "$KUBECONFIG_FILE" \
    --bind-address 127.0.0.1 --leader-elect=false --service-account-private-key-file "$C/pki/sa.key" \
    --use-service-account-credentials=false --cluster-cidr 10.244.0.0/16
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$KUBECONFIG_FILE" \
    --authentication-kubeconfig "$KUBECONFIG_FILE" --authorization-kubeconfig "$KUBECONFIG_FILE" \
    --bind-address 127.0.0.1 --leader-elect=false
  start containerd containerd --config "$C/containerd/config.toml"
  wait_for "containerd" 60 ctr -a "$R/containerd.sock" version
  timed "images" load_images
  start kubelet "$BIN/kubelet" --config "$C/kubelet/config.yaml" --kubeconfig "$KUBECONFIG_FILE" \
    --hostname-override "$NODE" --node-ip "$NODE_IP" --root-dir "$C/kubelet/root" \
    --node-labels "pool=docker,lbk.dev/real=true"
  start kube-proxy "$BIN/kube-proxy" --config "$C/kube-proxy.yaml"
  start coredns "$BIN/coredns" -conf "$C/Corefile"
  kwok_stages
  start kwok "$BIN/kwok" --kubeconfig "$KUBECONFIG_FILE" --config "$C/kwok-stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake
  start provisioner "$HELPERS/provisioner" --kubeconfig "$KUBECONFIG_FILE" --root "$C/pv"
  timed "node ready" wait_for "node $NODE Ready" 180 node_ready "$NODE"
  apply_objects
  for n in kwok-box-1 kwok-general-1 kwok-general-2; do wait_for "node $n Ready" 120 node_ready "$n"; done
  log "cluster up in $((SECONDS - t0))s: export KUBECONFIG=$KUBECONFIG_FILE"
}

node_ready() {
  api "/api/v1/nodes/$1" | grep -A3 '"type": "Ready"' | grep -q '"status": "True"'
}

post() { # post PATH JSON
  curl -sfk -X POST -H "Authorization: Bearer $(cat "$C/admin.token")" -H "Content-Type: application/json" \
    "https://127.0.0.1:$API_PORT$1" -d "$2" >/dev/null || true
}

fake_node() { # fake_node NAME POOL TAINT_JSON
  post /api/v1/nodes "{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{\"name\":\"$1\",
    \"annotations\":{\"kwok.x-k8s.io/node\":\"fake\",\"node.alpha.kubernetes.io/ttl\":\"0\"},
    \"labels\":{\"pool\":\"$2\",\"kubernetes.io/hostname\":\"$1\",\"type\":\"kwok\"}},
    \"spec\":{\"taints\":$3},
    \"status\":{\"allocatable\":{\"cpu\":\"32\",\"memory\":\"256Gi\",\"pods\":\"110\"},
               \"capacity\":{\"cpu\":\"32\",\"memory\":\"256Gi\",\"pods\":\"110\"}}}"
}

apply_objects() {
  # Gateway API's HTTPRoute CRD (the chart's httpRoute option), taken from the pinned Go module.
  local gw
  gw="$(cd "$C" && go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  curl -sfk -X POST -H "Authorization: Bearer $(cat "$C/admin.token")" -H "Content-Type: application/yaml" \
    "https://127.0.0.1:$API_PORT/apis/apiextensions.k8s.io/v1/customresourcedefinitions" \
    --data-binary "@$gw/config/crd/standard/gateway.networking.k8s.io_httproutes.yaml" >/dev/null || true
  wait_for "the HTTPRoute CRD" 60 api /apis/gateway.networking.k8s.io/v1/httproutes
  post /apis/storage.k8s.io/v1/storageclasses '{"apiVersion":"storage.k8s.io/v1","kind":"StorageClass",
    "metadata":{"name":"lbk-hostpath","annotations":{"storageclass.kubernetes.io/is-default-class":"true"}},
    "provisioner":"lbk.dev/hostpath","reclaimPolicy":"Delete","volumeBindingMode":"Immediate"}'
  fake_node kwok-box-1 box '[{"key":"dedicated","value":"box","effect":"NoSchedule"}]'
  fake_node kwok-general-1 general '[]'
  fake_node kwok-general-2 general '[]'
}

down() {
  for p in provisioner kwok coredns kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
    if running "$p"; then kill "$(cat "$(pidfile "$p")")" 2>/dev/null || true; fi
  done
  # Pods first (their shims), then containerd.
  if running containerd; then
    for c in $(ctr -a "$R/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr -a "$R/containerd.sock" -n k8s.io tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
    done
    kill "$(cat "$(pidfile containerd)")" 2>/dev/null || true
  fi
  for p in provisioner kwok coredns kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd containerd; do
    local f; f="$(pidfile "$p")"
    if [ -f "$f" ]; then
      await_exit "$(cat "$f")" 30
      rm -f "$f"
    fi
  done
  pkill -9 -f "containerd-shim-runc-v2 -namespace k8s.io -id .* -address $R/containerd.sock" 2>/dev/null || true
  grep " $C/kubelet/root" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  grep " $R" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  if [ -f "$C/iptables.saved" ]; then iptables-restore < "$C/iptables.saved" && rm -f "$C/iptables.saved"; fi
  # A table that did not exist when the state was saved is not in the dump, so restoring does not
  # flush it: drop whatever kube-proxy and the kubelet left (KUBE-* chains and jumps) explicitly.
  iptables-save | grep -v -e '^:KUBE-' -e '^-A KUBE-' -e '-j KUBE-' | iptables-restore
  ip link del "$BRIDGE" 2>/dev/null || true
  for ns in $(ip netns list 2>/dev/null | awk '/^cni-/{print $1}'); do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$C" "$R"
  log "cluster down, state removed"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) for p in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy coredns kwok provisioner; do
            if running "$p"; then echo "$p running"; else echo "$p stopped"; fi; done ;;
  kubeconfig) echo "$KUBECONFIG_FILE" ;;
  env) echo "export KUBECONFIG=$KUBECONFIG_FILE" ;;
  *) die "usage: hack/cluster.sh up|down|status|kubeconfig|env" ;;
esac
