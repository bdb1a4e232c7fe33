# Shared by scripts/kube/{up,down,images}.sh: where the cluster lives and its addresses.
# Sourced, not run.
#
# Addresses (none of them leaves the machine):
#   node        10.250.0.1 on the loopback link (label lo:plue): the API server (:6443)
#               and the kubelet (:10250) listen here, so pods reach them through their
#               gateway
#   pods        10.251.0.0/24 on the bridge plue-cni0 (gateway 10.251.0.1)
#   services    10.252.0.0/16 (the API server's Service is 10.252.0.1, the cluster
#               DNS's, kube-system/kube-dns, 10.252.0.10)
# Everything else (etcd, the components' health and metrics ports) is on 127.0.0.1.

KUBE_STATE="${PLUE_KUBE_STATE:-/tmp/plue-kube}"
KUBE_NODE=plue-node
KUBE_NODE_IP=10.250.0.1
KUBE_LINK=lo:plue
KUBE_BRIDGE=plue-cni0
KUBE_POD_CIDR=10.251.0.0/16
KUBE_POD_SUBNET=10.251.0.0/24
KUBE_SVC_CIDR=10.252.0.0/16
KUBE_API_SVC_IP=10.252.0.1
KUBE_DNS_IP=10.252.0.10
# The cluster DNS's image: CoreDNS as scripts/kube/dns builds it (images.sh imports it).
KUBE_DNS_IMAGE=plue.test/cluster-dns:$(sed -n 's#^require github.com/coredns/coredns ##p' "$(dirname "${BASH_SOURCE[0]}")/dns/go.mod")
KUBE_ETCD=127.0.0.1:23790
KUBE_API="https://$KUBE_NODE_IP:6443"
KUBE_SOCK="$KUBE_STATE/containerd/containerd.sock"
# The components in the order up.sh starts them; down.sh stops them in reverse.
KUBE_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy kube-router)

kube_log() { printf '%s scripts/kube: %s\n' "$(date +%T)" "$*" >&2; }
kube_die() { kube_log "error: $*"; exit 1; }

# kube_pid NAME: the running process of a component, or nothing.
kube_pid() {
  local f="$KUBE_STATE/run/$1.pid"
  [[ -f $f ]] || return 0
  local pid; pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

kube_ctl() { "$KUBE_BIN/kubectl" --kubeconfig "$KUBE_STATE/pki/admin.kubeconfig" "$@"; }
