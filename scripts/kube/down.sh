#!/usr/bin/env bash
# Stops the cluster of scripts/kube/up.sh and leaves nothing behind but files: every pod
# sandbox stopped and removed through the CRI first (so the CNI plugins release each
# pod's network namespace and rules), then the components in reverse order, then what
# they leave: iptables rules and ipsets of kube-proxy and kube-router, the bridge and the
# node's address, mounts under the state directory, the kubelet's cgroups. It then checks
# and fails, naming what is left, if any process, mount, network namespace, link or
# cgroup of the cluster remains.
#
#   scripts/kube/down.sh [--purge]     # --purge also removes PLUE_KUBE_STATE
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"
purge=0; [[ ${1:-} == --purge ]] && purge=1
S="$KUBE_STATE"
KUBE_BIN="$(cat "$S/run/bin" 2>/dev/null)"

stop() { # stop NAME: SIGTERM, then SIGKILL after 10 s
  local pid; pid="$(kube_pid "$1")"
  [[ -z $pid ]] && { rm -f "$S/run/$1.pid"; return 0; }
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
  rm -f "$S/run/$1.pid"
}

# 1. No new pods: the kubelet stops first, then every sandbox goes through the CRI.
stop kubelet
if [[ -n $(kube_pid containerd) && -x $KUBE_BIN/crictl ]]; then
  crictl=("$KUBE_BIN/crictl" --runtime-endpoint "unix://$KUBE_SOCK" --timeout 30s)
  "${crictl[@]}" stopp $("${crictl[@]}" pods -q 2>/dev/null) >/dev/null 2>&1
  "${crictl[@]}" rmp -f $("${crictl[@]}" pods -q 2>/dev/null) >/dev/null 2>&1
fi
# 2. The rest, in reverse order of start.
for ((i = ${#KUBE_COMPONENTS[@]} - 1; i >= 0; i--)); do stop "${KUBE_COMPONENTS[$i]}"; done
# Shims whose containers are gone exit on their own; any left belong to this cluster.
pkill -KILL -f "containerd-shim-runc-v2 .*-address $KUBE_SOCK" 2>/dev/null
# 3. Rules and sets the components wrote.
if [[ -x $KUBE_BIN/kube-proxy ]]; then "$KUBE_BIN/kube-proxy" --cleanup >/dev/null 2>&1; fi
if [[ -x $KUBE_BIN/kube-router ]]; then "$KUBE_BIN/kube-router" --cleanup-config >/dev/null 2>&1; fi
for table in filter nat mangle raw; do
  iptables-save -t "$table" 2>/dev/null | grep -oE '^:(KUBE-|CNI-)[^ ]+' | cut -c2- | while read -r chain; do
    iptables -t "$table" -S 2>/dev/null | grep -E -- "-j $chain( |$)" | sed 's/^-A /-D /' |
      while read -r rule; do eval iptables -t "$table" "$rule" 2>/dev/null; done
    iptables -t "$table" -F "$chain" 2>/dev/null; iptables -t "$table" -X "$chain" 2>/dev/null
  done
done
ipset list -n 2>/dev/null | grep -E '^(KUBE-|kube-router)' | xargs -r -n1 ipset destroy 2>/dev/null
ip link del "$KUBE_BRIDGE" 2>/dev/null
ip addr del "$KUBE_NODE_IP/32" dev lo 2>/dev/null
# 4. Mounts (deepest first) and network namespaces the CRI made and did not remove.
findmnt -rn -o TARGET | grep -F "$S/" | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^cni-'); do
  umount "/run/netns/$ns" 2>/dev/null; ip netns del "$ns" 2>/dev/null
done
# 5. The kubelet's cgroups (kubepods and its QoS classes), deepest first.
for ctl in /sys/fs/cgroup/*/; do
  [[ -d $ctl/kubepods ]] && find "$ctl/kubepods" -depth -type d -exec rmdir {} + 2>/dev/null
done
rm -f "$S/env"

# 6. Check.
left=()
for c in "${KUBE_COMPONENTS[@]}"; do [[ -n $(kube_pid "$c") ]] && left+=("process $c"); done
pgrep -f "$KUBE_SOCK" >/dev/null && left+=("processes naming $KUBE_SOCK: $(pgrep -f "$KUBE_SOCK" | tr '\n' ' ')")
mounts="$(findmnt -rn -o TARGET | grep -F "$S/")" && left+=("mounts: $mounts")
ip netns list 2>/dev/null | grep -q '^cni-' && left+=("network namespaces: $(ip netns list | grep '^cni-' | tr '\n' ' ')")
ip link show "$KUBE_BRIDGE" >/dev/null 2>&1 && left+=("link $KUBE_BRIDGE")
ip -4 addr show dev lo | grep -q " $KUBE_NODE_IP/32 " && left+=("address $KUBE_NODE_IP on lo")
for ctl in /sys/fs/cgroup/*/; do [[ -d $ctl/kubepods ]] && left+=("cgroup ${ctl}kubepods"); done
if ((${#left[@]})); then
  kube_log "left behind after stopping:"; printf '  %s\n' "${left[@]}" >&2
  exit 1
fi
((purge)) && rm -rf "$S"
kube_log "cluster stopped; nothing left running or mounted"
