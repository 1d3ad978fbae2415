#!/usr/bin/env bash
# A real local Kubernetes cluster on this machine, offline:
#   control plane  etcd (Debian) + kube-apiserver, -scheduler, -controller-manager (k8s.io/kubernetes)
#   a real node    kubelet + its own containerd (CRI, native snapshotter, runc) + bridge CNI
#                  + kube-proxy (iptables) + CoreDNS on the bridge address
#   node pools     kwok-simulated nodes with their own labels and taints
#   storage        StorageClass lbk-hostpath, served by test/provisioner (hostPath PVs)
#   Docker         the private dockerd of hack/docker.sh is the node's Docker daemon for the box
#   gVisor         Debian's runsc (ptrace platform) as the node's runtime handler "runsc", through
#                  containerd's runc.v2 shim and a wrapper; RuntimeClass "gvisor"
#   NetworkPolicy  sigs.k8s.io/kube-network-policies on the node (nfqueue verdicts); this kernel has
#                  no nftables queue expression, so this script diverts the packets with iptables'
#                  NFQUEUE target instead. LBK_NETWORK_POLICIES=off leaves the enforcer out.
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
NETPOL_QUEUE=100                # nfqueue number shared by the diversion rules and the enforcer
NETPOL_METRICS=127.0.0.1:29080
NETWORK_POLICIES="${LBK_NETWORK_POLICIES:-on}"

pidfile() { echo "$R/$1.pid"; }
running() { local p; p="$(pidfile "$1")"; [ -f "$p" ] && kill -0 "$(cat "$p")" 2>/dev/null; }
start() { # start NAME CMD... : a background process with its log and pid file
  # A process already running with another command line (an `up` that changed its flags) is
  # restarted; one started before command lines were recorded is kept as it is.
  local name="$1"; shift
  local cmdfile="$R/$name.cmd"
  if running "$name"; then
    if [ ! -f "$cmdfile" ]; then printf '%s\n' "$*" > "$cmdfile"; fi
    [ "$(cat "$cmdfile")" = "$*" ] && return 0
    log "restarting $name: its command line changed"
    stop_pid "$(cat "$(pidfile "$name")")" 30
  fi
  setsid "$@" >>"$C/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$(pidfile "$name")"
  printf '%s\n' "$*" > "$cmdfile"
}
api() { curl -sfk -H "Authorization: Bearer $(cat "$C/admin.token")" "https://127.0.0.1:$API_PORT$1"; }

binaries() {
  BIN="$(bash "$REPO_ROOT/hack/k8s-binaries.sh" | tail -1)"
  HELPERS="$C/bin"
  mkdir -p "$HELPERS"
  (cd "$REPO_ROOT" && CGO_ENABLED=0 go build -o "$HELPERS/provisioner" ./test/provisioner)
  if [ "$NETWORK_POLICIES" = on ]; then KNP="$(bash "$REPO_ROOT/hack/k8s-binaries.sh" kube-network-policies | tail -1)"; fi
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
  # gVisor: runsc speaks runc's command line, so containerd's runc.v2 shim drives it through a
  # wrapper that picks the ptrace platform (no KVM here). Its own state root: runsc and runc
  # keep different state files.
  cat > "$HELPERS/runsc-ptrace" <<'SH'
#!/bin/sh
# runc-compatible entry point of the node's "runsc" runtime handler (written by hack/cluster.sh).
# Debian's runsc 0.0~20221219 with the ptrace platform, and three fixes for this node:
#  - `start` sets up the sandbox's network stack from the pod's network namespace, and refuses
#    when it believes that is the node's own: it tests for /proc/sys/net/core/rmem_default,
#    which older kernels showed only in the root namespace; this kernel shows it in every one.
#    So `start` runs with /proc/sys/net hidden (a private mount namespace), and `create`
#    instead makes the real check: a container whose network namespace is the node's is
#    refused (a hostNetwork pod cannot use this handler: gVisor would take over the node's
#    interfaces).
#  - `start` of a pod's app container leaves a gofer process running that would inherit the
#    shim's output pipe, and the shim waits for that pipe to close: the output goes through a
#    file.
#  - `kill` of a container that was created but never started fails in runsc ("cannot signal
#    container in state created"), so the pod sandbox could never be removed: it is deleted.
set -u
log="$(dirname "$0")/../logs/runsc"
runsc() { /usr/bin/runsc --platform=ptrace --debug-log="$log/%COMMAND%.log" "$@"; }
cmd="" id="" bundle="" skip=""
for a in "$@"; do
  if [ -n "$skip" ]; then [ "$skip" = bundle ] && bundle="$a"; skip=""; continue; fi
  case "$a" in
    --root|--log|--log-format|--pid-file|--console-socket|--process) skip=1 ;;
    --bundle|-b) skip=bundle ;;
    --bundle=*) bundle="${a#--bundle=}" ;;
    -*) ;;
    *) if [ -z "$cmd" ]; then cmd="$a"; elif [ -z "$id" ]; then id="$a"; fi ;;
  esac
done
case "$cmd" in
create)
  netns="$(grep -o '{"type":"network"[^}]*}' "$bundle/config.json" | sed -n 's/.*"path":"\([^"]*\)".*/\1/p')"
  if ! grep -q '"type":"network"' "$bundle/config.json" ||
     { [ -n "$netns" ] && [ "$(stat -L -c %d:%i "$netns")" = "$(stat -L -c %d:%i /proc/1/ns/net)" ]; }; then
    echo "runsc-ptrace: refusing container $id: its network namespace is the node's (a hostNetwork pod cannot use the gvisor RuntimeClass)" >&2
    exit 1
  fi
  exec /usr/bin/runsc --platform=ptrace --debug-log="$log/%COMMAND%.log" "$@" ;;
start)
  out="$(mktemp)"; rc=0
  unshare --mount --propagation slave -- sh -c 'mount -t tmpfs -o ro,size=4k lbk-hide /proc/sys/net && exec "$@"' sh \
    /usr/bin/runsc --platform=ptrace --debug-log="$log/%COMMAND%.log" "$@" > "$out" 2>&1 < /dev/null || rc=$?
  cat "$out" >&2; rm -f "$out"; exit "$rc" ;;
kill)
  runsc "$@" && exit 0
  rc=$?
  root="$(printf '%s\n' "$@" | sed -n '/^--root$/{n;p;q}')"
  if runsc --root "$root" state "$id" 2>/dev/null | grep -q '"status": "created"'; then
    exec /usr/bin/runsc --platform=ptrace --debug-log="$log/%COMMAND%.log" --root "$root" delete --force "$id"
  fi
  exit "$rc" ;;
esac
exec /usr/bin/runsc --platform=ptrace --debug-log="$log/%COMMAND%.log" "$@"
SH
  chmod +x "$HELPERS/runsc-ptrace"
  mkdir -p "$C/logs/runsc"
  cat > "$C/containerd/config.toml.new" <<TOML
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
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc.options]
        BinaryName = "$HELPERS/runsc-ptrace"
        Root = "$R/runsc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$C/cni/net.d"
TOML
  if cmp -s "$C/containerd/config.toml.new" "$C/containerd/config.toml"; then
    rm "$C/containerd/config.toml.new"
  else
    mv "$C/containerd/config.toml.new" "$C/containerd/config.toml"
    CONTAINERD_CONFIG_CHANGED=1
  fi
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
# Without per-QoS/per-pod cgroups an in-place resize dereferences the pod cgroup's nil memory
# setting and the kubelet panics (kuberuntime_manager.go doPodResizeAction, 1.34.2; seen when
# a container's actuated-resources record was missing): the node does not resize in place.
featureGates: {InPlacePodVerticalScaling: false}
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
  # (not `ip addr show | grep -q`: with pipefail, grep's early exit fails the pipeline)
  case "$(ip -4 addr show dev "$BRIDGE")" in *" $NODE_IP/"*) ;; *) ip addr add "$NODE_IP/24" dev "$BRIDGE" ;; esac
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
  need_apt etcd-server containerd runc runsc containernetworking-plugins iptables conntrack openssl curl socat
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
  # Pods reach the API server through the kubernetes Service, whose endpoint is the advertised
  # address: the node's bridge address (a loopback one is refused as an endpoint, leaving the
  # Service without any), served by a relay to the loopback listener that host clients use.
  # The self-signed serving certificate names it; one made for the old loopback advertisement
  # is made again.
  case "$(openssl x509 -in "$C/pki/apiserver.crt" -noout -text 2>/dev/null)" in
    *"IP Address:$NODE_IP"*) ;;
    *) rm -f "$C/pki/apiserver.crt" "$C/pki/apiserver.key" ;;
  esac
  start kube-apiserver "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address "$NODE_IP" --secure-port "$API_PORT" --cert-dir "$C/pki" \
    --service-account-key-file "$C/pki/sa.pub" --service-account-signing-key-file "$C/pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc --token-auth-file "$TOKEN_FILE" \
    --authorization-mode Node,RBAC --service-cluster-ip-range "$SVC_CIDR" --allow-privileged=true \
    --enable-priority-and-fairness=false --kubelet-preferred-address-types InternalIP,Hostname
  timed "apiserver ready" wait_for "kube-apiserver /readyz" 180 api /readyz
  start apiserver-relay socat "TCP-LISTEN:$API_PORT,bind=$NODE_IP,reuseaddr,fork" "TCP:127.0.0.1:$API_PORT"
  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$KUBECONFIG_FILE" \
    --authentication-kubeconfig "$KUBECONFIG_FILE" --authorization-kubeconfig "$KUBECONFIG_FILE" \
    --bind-address 127.0.0.1 --leader-elect=false --service-account-private-key-file "$C/pki/sa.key" \
    --root-ca-file "$C/pki/apiserver.crt" --use-service-account-credentials=false --cluster-cidr 10.244.0.0/16
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$KUBECONFIG_FILE" \
    --authentication-kubeconfig "$KUBECONFIG_FILE" --authorization-kubeconfig "$KUBECONFIG_FILE" \
    --bind-address 127.0.0.1 --leader-elect=false
  if [ -n "${CONTAINERD_CONFIG_CHANGED:-}" ] && running containerd; then
    # A cluster that is already up gets the new runtime handlers: restarting containerd leaves
    # the pods' shims (and so the pods) running.
    log "containerd's configuration changed: restarting it"
    stop_pid "$(cat "$(pidfile containerd)")" 30
  fi
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
  if [ "$NETWORK_POLICIES" = on ]; then
    timed "network policy enforcer" network_policies
  elif ! running kube-network-policies; then
    netpol_rules del # no diversion to a queue nobody reads (that would drop every new pod connection)
  fi
  for n in kwok-box-1 kwok-general-1 kwok-general-2; do wait_for "node $n Ready" 120 node_ready "$n"; done
  log "cluster up in $((SECONDS - t0))s: export KUBECONFIG=$KUBECONFIG_FILE"
}

# The NetworkPolicy enforcer (sigs.k8s.io/kube-network-policies) decides on each new connection
# that userspace gets from nfqueue $NETPOL_QUEUE. Its own nftables rules use nftables' queue
# expression, which this kernel lacks (CONFIG_NFT_QUEUE unset: adding the rule fails with ENOENT,
# the whole table with it), so the packets are diverted here with iptables' NFQUEUE target (xt,
# built in) at the same place and with the same exceptions as its rules: the first packet of
# every connection from or to a pod, except the node's root processes (kubelet probes); and also
# on INPUT, because here the API server, CoreDNS and the node's other services are on the node
# itself, a path the enforcer's postrouting hook never sees. No --queue-bypass: while the
# enforcer is not listening, pods' new connections are dropped (fail closed, as it is by default).
netpol_rules() { # netpol_rules add|del
  if [ "$1" = add ]; then
    iptables -t mangle -N LBK-NETPOL 2>/dev/null || iptables -t mangle -F LBK-NETPOL
    iptables -t mangle -N LBK-NETPOL-OUT 2>/dev/null || iptables -t mangle -F LBK-NETPOL-OUT
    iptables -t mangle -A LBK-NETPOL -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN
    iptables -t mangle -A LBK-NETPOL -s "$POD_CIDR" -j NFQUEUE --queue-num "$NETPOL_QUEUE"
    iptables -t mangle -A LBK-NETPOL -d "$POD_CIDR" -j NFQUEUE --queue-num "$NETPOL_QUEUE"
    iptables -t mangle -A LBK-NETPOL-OUT -m owner --uid-owner 0 -j RETURN
    iptables -t mangle -A LBK-NETPOL-OUT -j LBK-NETPOL
  fi
  for hook in "POSTROUTING -j LBK-NETPOL-OUT" "INPUT -i $BRIDGE -j LBK-NETPOL"; do
    # shellcheck disable=SC2086
    if iptables -t mangle -C $hook 2>/dev/null; then
      [ "$1" = del ] && iptables -t mangle -D $hook
    else
      [ "$1" = add ] && iptables -t mangle -A $hook
    fi
  done
  if [ "$1" = del ]; then
    for ch in LBK-NETPOL-OUT LBK-NETPOL; do iptables -t mangle -F "$ch" 2>/dev/null && iptables -t mangle -X "$ch"; done
  fi
  return 0
}

netpol_queue_bound() { awk -v q="$NETPOL_QUEUE" '$1 == q {found=1} END {exit !found}' /proc/net/netfilter/nfnetlink_queue; }

network_policies() {
  # Its own ServiceAccount with read access to what it evaluates; the token is a legacy
  # service-account-token Secret, so a running API server needs no new flags.
  post /api/v1/namespaces/kube-system/serviceaccounts '{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"kube-network-policies"}}'
  post /apis/rbac.authorization.k8s.io/v1/clusterroles '{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole",
    "metadata":{"name":"lbk:kube-network-policies"},"rules":[
      {"apiGroups":[""],"resources":["pods","namespaces","nodes"],"verbs":["get","list","watch"]},
      {"apiGroups":["networking.k8s.io"],"resources":["networkpolicies"],"verbs":["get","list","watch"]}]}'
  post /apis/rbac.authorization.k8s.io/v1/clusterrolebindings '{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding",
    "metadata":{"name":"lbk:kube-network-policies"},
    "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"lbk:kube-network-policies"},
    "subjects":[{"kind":"ServiceAccount","name":"kube-network-policies","namespace":"kube-system"}]}'
  post /api/v1/namespaces/kube-system/secrets '{"apiVersion":"v1","kind":"Secret","type":"kubernetes.io/service-account-token",
    "metadata":{"name":"kube-network-policies-token","annotations":{"kubernetes.io/service-account.name":"kube-network-policies"}}}'
  wait_for "the enforcer's service account token" 60 netpol_token
  # It only knows the in-cluster configuration (fixed paths under /var/run/secrets): it runs in
  # a mount namespace of its own whose /run holds its token and the API server's CA, and reaches
  # the API server on loopback, like every process of the node.
  local sa="$C/netpol/run/secrets/kubernetes.io/serviceaccount" token
  mkdir -p "$sa"
  token="$(netpol_token)"
  if ! cmp -s "$C/pki/apiserver.crt" "$sa/ca.crt" || [ "$token" != "$(cat "$sa/token" 2>/dev/null)" ]; then
    # A new serving certificate (or token): a running enforcer would fail to verify it.
    if running kube-network-policies; then
      log "restarting kube-network-policies: the API server's certificate or its token changed"
      stop_pid "$(cat "$(pidfile kube-network-policies)")" 30
    fi
    printf '%s' "$token" > "$sa/token"
    cp "$C/pki/apiserver.crt" "$sa/ca.crt"
  fi
  echo kube-system > "$sa/namespace"
  start kube-network-policies unshare --mount --propagation private -- \
    sh -c 'mount --bind "$0" /run && exec "$@"' "$C/netpol/run" \
    env KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT="$API_PORT" \
    "$KNP" --hostname-override "$NODE" --nfqueue-id "$NETPOL_QUEUE" --metrics-bind-address "$NETPOL_METRICS" \
    --disable-nri --netfilter-bug-1766-fix=false
  # It binds the queue once its informers are in sync; only then are packets diverted to it.
  wait_for "kube-network-policies bound to nfqueue $NETPOL_QUEUE (log: $C/logs/kube-network-policies.log)" 60 netpol_queue_bound
  netpol_rules add
}

netpol_token() {
  local t
  t="$(api /api/v1/namespaces/kube-system/secrets/kube-network-policies-token | sed -n 's/^ *"token": "\(.*\)".*/\1/p')"
  [ -n "$t" ] && printf '%s' "$t" | base64 -d
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
  # gVisor sandboxes run only where runsc is: the real node.
  post /apis/node.k8s.io/v1/runtimeclasses '{"apiVersion":"node.k8s.io/v1","kind":"RuntimeClass",
    "metadata":{"name":"gvisor"},"handler":"runsc","scheduling":{"nodeSelector":{"lbk.dev/real":"true"}}}'
  fake_node kwok-box-1 box '[{"key":"dedicated","value":"box","effect":"NoSchedule"}]'
  fake_node kwok-general-1 general '[]'
  fake_node kwok-general-2 general '[]'
}

down() {
  for p in kube-network-policies provisioner kwok coredns kube-proxy kubelet kube-scheduler kube-controller-manager apiserver-relay kube-apiserver etcd; do
    if running "$p"; then kill "$(cat "$(pidfile "$p")")" 2>/dev/null || true; fi
  done
  # Pods first (their shims), then containerd.
  if running containerd; then
    for c in $(ctr -a "$R/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr -a "$R/containerd.sock" -n k8s.io tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
    done
    kill "$(cat "$(pidfile containerd)")" 2>/dev/null || true
  fi
  # gVisor sandboxes: their sandbox and gofer processes are not the shims' to kill.
  for c in $(runsc --root "$R/runsc/k8s.io" list -quiet 2>/dev/null); do
    runsc --root "$R/runsc/k8s.io" delete --force "$c" >/dev/null 2>&1 || true
  done
  for p in kube-network-policies provisioner kwok coredns kube-proxy kubelet kube-scheduler kube-controller-manager apiserver-relay kube-apiserver etcd containerd; do
    local f; f="$(pidfile "$p")"
    if [ -f "$f" ]; then
      await_exit "$(cat "$f")" 30
      rm -f "$f"
    fi
  done
  pkill -9 -f "containerd-shim-runc-v2 -namespace k8s.io -id .* -address $R/containerd.sock" 2>/dev/null || true
  grep " $C/kubelet/root" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  grep " $R" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  netpol_rules del
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
  status) for p in etcd kube-apiserver apiserver-relay kube-controller-manager kube-scheduler containerd kubelet kube-proxy coredns kwok provisioner kube-network-policies; do
            if running "$p"; then echo "$p running"; else echo "$p stopped"; fi; done ;;
  kubeconfig) echo "$KUBECONFIG_FILE" ;;
  env) echo "export KUBECONFIG=$KUBECONFIG_FILE" ;;
  *) die "usage: hack/cluster.sh up|down|status|kubeconfig|env" ;;
esac
