#!/usr/bin/env bash
# Starts a real single-node Kubernetes on this machine and prints the path of a file to
# source (KUBECONFIG and the cluster's addresses):
#
#   source "$(scripts/kube/up.sh)"      # then: kubectl get nodes
#   scripts/kube/down.sh                # stops it and leaves nothing running or mounted
#
# etcd (Debian), kube-apiserver with RBAC (Node,RBAC) and Pod Security admission
# (`restricted` enforced in every namespace but kube-system), kube-controller-manager,
# kube-scheduler, a kubelet on containerd + runc (Debian) with the CNI bridge (Debian's
# plugins), kube-proxy (iptables), the cluster DNS (CoreDNS) and kube-router's firewall,
# which enforces NetworkPolicies. The Kubernetes binaries come from scripts/kube/build.sh
# (pinned Go modules, cached); the images (Kubernetes's pause, the project's own image from
# scripts/image/build.sh) are imported into containerd, there being no registry here:
# pods use them with `imagePullPolicy: Never` or `IfNotPresent`.
#
# Needs root (it starts a kubelet). Running it again while the cluster is up only
# re-imports the project's image when it changed. State lives in PLUE_KUBE_STATE
# (default /tmp/plue-kube); `down.sh --purge` removes it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"
[[ $(id -u) == 0 ]] || kube_die "the kubelet needs root"
for tool in etcd containerd runc openssl ipset iptables; do
  command -v "$tool" >/dev/null || kube_die "$tool is missing (apt-get install etcd-server containerd runc containernetworking-plugins ipset iptables openssl)"
done
[[ -x /usr/lib/cni/bridge ]] || kube_die "the CNI plugins are missing (apt-get install containernetworking-plugins)"

KUBE_BIN="$("$here/build.sh")"
S="$KUBE_STATE"
mkdir -p "$S"/{pki,run,log,etc,cni/net.d,containerd,kubelet,etcd}
chmod 0700 "$S/pki"
echo "$KUBE_BIN" >"$S/run/bin"

# ---------------------------------------------------------------- host network
sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 \
  net.bridge.bridge-nf-call-ip6tables=1
# The node's address on the loopback link (these kernels have no dummy links): local to
# the host, reached by pods through their gateway, never routed off the machine.
if ! ip -4 addr show dev lo | grep -q " $KUBE_NODE_IP/32 "; then
  ip addr add "$KUBE_NODE_IP/32" dev lo label "$KUBE_LINK"
fi

# ---------------------------------------------------------------- certificates
pki="$S/pki"
# cert NAME CN [O] [SANs]: a key and a certificate signed by the cluster's CA.
cert() {
  local name=$1 cn=$2 org=${3:-} sans=${4:-}
  [[ -f $pki/$name.crt ]] && return 0
  local subj="/CN=$cn"; [[ -n $org ]] && subj="/O=$org$subj"
  openssl genrsa -out "$pki/$name.key" 2048 2>/dev/null
  openssl req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    [[ -n $sans ]] && echo "subjectAltName=$sans"
  } >"$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 3650 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}
# kubeconfig NAME CERT: a kubeconfig authenticating with a client certificate.
kubeconfig() {
  local name=$1 crt=$2
  cat >"$pki/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: plue
  cluster:
    server: $KUBE_API
    certificate-authority: $pki/ca.crt
users:
- name: $name
  user:
    client-certificate: $pki/$crt.crt
    client-key: $pki/$crt.key
contexts:
- name: plue
  context: {cluster: plue, user: $name}
current-context: plue
EOF
}
if [[ ! -f $pki/ca.crt ]]; then
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -out "$pki/ca.crt" \
    -days 3650 -subj "/CN=plue-kube-ca" 2>/dev/null
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
fi
cert apiserver kube-apiserver "" \
  "IP:$KUBE_NODE_IP,IP:$KUBE_API_SVC_IP,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost"
cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
cert admin plue-admin system:masters
cert controller-manager system:kube-controller-manager
cert scheduler system:kube-scheduler
cert kubelet-client "system:node:$KUBE_NODE" system:nodes
cert kubelet-serving "$KUBE_NODE" "" "IP:$KUBE_NODE_IP,DNS:$KUBE_NODE"
cert kube-proxy system:kube-proxy
cert kube-router plue-kube-router
kubeconfig admin admin
kubeconfig controller-manager controller-manager
kubeconfig scheduler scheduler
kubeconfig kubelet kubelet-client
kubeconfig kube-proxy kube-proxy
kubeconfig kube-router kube-router

# ---------------------------------------------------------------- components
# start NAME COMMAND...: runs a component in its own session, logging to log/NAME.log.
start() {
  local name=$1; shift
  if [[ -n $(kube_pid "$name") ]]; then return 0; fi
  setsid "$@" >>"$S/log/$name.log" 2>&1 </dev/null &
  echo $! >"$S/run/$name.pid"
}
# wait_for WHAT SECONDS COMMAND...: until the command succeeds, or fail naming the log.
wait_for() {
  local what=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      kube_log "$what not ready after ${seconds}s; the end of its log:"
      tail -n 30 "$S/log/$what.log" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
}
curl_ok() { curl -sfk --max-time 2 "$@"; }

started=$SECONDS
start etcd etcd --name plue --data-dir "$S/etcd" \
  --listen-client-urls "http://$KUBE_ETCD" --advertise-client-urls "http://$KUBE_ETCD" \
  --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
  --initial-cluster plue=http://127.0.0.1:23800 --quota-backend-bytes 2147483648
wait_for etcd 30 curl_ok "http://$KUBE_ETCD/health"

cat >"$S/etc/admission.yaml" <<EOF
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1
    kind: PodSecurityConfiguration
    defaults: {enforce: restricted, enforce-version: latest, audit: restricted, warn: restricted}
    exemptions: {namespaces: [kube-system]}
EOF
start kube-apiserver "$KUBE_BIN/kube-apiserver" \
  --etcd-servers "http://$KUBE_ETCD" \
  --bind-address "$KUBE_NODE_IP" --advertise-address "$KUBE_NODE_IP" --secure-port 6443 \
  --service-cluster-ip-range "$KUBE_SVC_CIDR" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "$pki/ca.crt" \
  --kubelet-preferred-address-types InternalIP \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
  --admission-control-config-file "$S/etc/admission.yaml" \
  --allow-privileged=false --profiling=false --event-ttl 30m
wait_for kube-apiserver 90 curl_ok --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$KUBE_API/readyz"

start kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
  --kubeconfig "$pki/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$pki/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$pki/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port 10257 --leader-elect=false \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --use-service-account-credentials --service-cluster-ip-range "$KUBE_SVC_CIDR" \
  --cluster-cidr "$KUBE_POD_CIDR" --allocate-node-cidrs=false --profiling=false
start kube-scheduler "$KUBE_BIN/kube-scheduler" \
  --kubeconfig "$pki/scheduler.kubeconfig" \
  --authentication-kubeconfig "$pki/scheduler.kubeconfig" \
  --authorization-kubeconfig "$pki/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port 10259 --leader-elect=false --profiling=false

# ---------------------------------------------------------------- containerd + CNI
cat >"$S/etc/containerd.toml" <<EOF
version = 2
root = "$S/containerd/root"
state = "$S/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$KUBE_SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$S/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  enable_unprivileged_ports = false
  # No lower OOM score than containerd's own: raising a process's priority needs
  # CAP_SYS_RESOURCE, which the sandboxes these machines run sessions in do not grant.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$S/cni/net.d"
EOF
cat >"$S/cni/net.d/10-plue.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "plue",
  "plugins": [
    {"type": "bridge", "bridge": "$KUBE_BRIDGE", "isGateway": true, "ipMasq": true,
     "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$KUBE_POD_SUBNET"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$S/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
start containerd containerd --config "$S/etc/containerd.toml"
wait_for containerd 30 ctr --address "$KUBE_SOCK" version
"$here/images.sh" "$KUBE_BIN"

# ---------------------------------------------------------------- kubelet
# The pods' resolv.conf for dnsPolicy Default: the host's, unless it names a loopback
# resolver a pod cannot reach.
if grep -qE '^nameserver +127\.' /etc/resolv.conf; then
  echo "nameserver $KUBE_NODE_IP" >"$S/etc/resolv.conf"
else
  cp /etc/resolv.conf "$S/etc/resolv.conf"
fi
cat >"$S/etc/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $KUBE_NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$KUBE_SOCK
failSwapOn: false
failCgroupV1: false
clusterDNS: [$KUBE_DNS_IP]
clusterDomain: cluster.local
resolvConf: $S/etc/resolv.conf
# Images cannot be pulled again here: never collect them, and evict pods only when the
# machine is really short (its disk is shared with builds).
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 200Mi, nodefs.available: 2%, imagefs.available: 2%, nodefs.inodesFree: 2%}
serializeImagePulls: false
maxPods: 60
podPidsLimit: 4096
EOF
start kubelet "$KUBE_BIN/kubelet" --config "$S/etc/kubelet.yaml" \
  --kubeconfig "$pki/kubelet.kubeconfig" --hostname-override "$KUBE_NODE" \
  --node-ip "$KUBE_NODE_IP" --root-dir "$S/kubelet" --cert-dir "$S/kubelet/pki"
node_ready() {
  [[ $(kube_ctl get node "$KUBE_NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}
wait_for kubelet 120 node_ready

# ---------------------------------------------------------------- services, DNS, policies
start kube-proxy "$KUBE_BIN/kube-proxy" --kubeconfig "$pki/kube-proxy.kubeconfig" \
  --hostname-override "$KUBE_NODE" --cluster-cidr "$KUBE_POD_CIDR" --proxy-mode iptables \
  --metrics-bind-address 127.0.0.1:10249 --healthz-bind-address 127.0.0.1:10256 \
  --conntrack-max-per-core 0
kube_ctl apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "plue:kube-router"}
rules:
- apiGroups: [""]
  resources: [namespaces, pods, services, nodes, endpoints]
  verbs: [list, get, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [list, get, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, get, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "plue:kube-router"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "plue:kube-router"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: plue-kube-router}]
EOF
start kube-router "$KUBE_BIN/kube-router" --kubeconfig "$pki/kube-router.kubeconfig" \
  --hostname-override "$KUBE_NODE" --run-firewall=true --run-router=false \
  --run-service-proxy=false --enable-cni=false --metrics-port 0 --health-port 20244
wait_for kube-proxy 30 curl_ok http://127.0.0.1:10256/healthz
wait_for kube-router 30 curl_ok http://127.0.0.1:20244/healthz

# The default ServiceAccount of a new namespace comes from the controller-manager.
wait_for kube-controller-manager 60 kube_ctl -n default get serviceaccount default

# The cluster DNS where clusters keep it: pods labelled k8s-app=kube-dns in kube-system
# behind the kube-dns Service (NetworkPolicies, the chart's among them, name it so).
kube_ctl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: cluster-dns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "plue:cluster-dns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "plue:cluster-dns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "plue:cluster-dns"}
subjects: [{kind: ServiceAccount, name: cluster-dns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cluster-dns, namespace: kube-system}
data:
  Corefile: |
    .:53 {
        errors
        cache 5
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }
        forward . /etc/resolv.conf
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: cluster-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: cluster-dns
      dnsPolicy: Default
      # Port 53 without a capability (a safe sysctl, allowed by every kubelet).
      securityContext: {sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: "0"}]}
      containers:
      - name: dns
        image: $KUBE_DNS_IMAGE
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
          readOnlyRootFilesystem: true
        volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes: [{name: config, configMap: {name: cluster-dns}}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: $KUBE_DNS_IP
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
EOF
dns_ready() {
  [[ $(kube_ctl -n kube-system get deployment cluster-dns -o jsonpath='{.status.readyReplicas}') == 1 ]]
}
wait_for kubelet 120 dns_ready

cat >"$S/env" <<EOF
export KUBECONFIG=$pki/admin.kubeconfig
export PATH=$KUBE_BIN:\$PATH
export PLUE_KUBE_BIN=$KUBE_BIN
export PLUE_KUBE_STATE=$S
export PLUE_KUBE_NODE_IP=$KUBE_NODE_IP
export PLUE_KUBE_POD_CIDR=$KUBE_POD_CIDR
export PLUE_KUBE_SVC_CIDR=$KUBE_SVC_CIDR
EOF
kube_log "cluster up in $((SECONDS - started))s (node $KUBE_NODE, API $KUBE_API)"
echo "$S/env"
