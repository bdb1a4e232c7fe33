#!/usr/bin/env bash
# Builds the Kubernetes commands of the release go.mod pins, the NetworkPolicy
# controller (netpol/), the cluster DNS (dns/), crictl (crictl/) and Helm (helm/) into a
# cache keyed by their pins, and prints the cache's bin directory. A second call with the same pins
# builds nothing; a cold one takes most of half an hour on 2 cores (README.md).
#
#   scripts/kube/build.sh            -> prints e.g. ~/.cache/plue-real/kube-1a2b3c/bin
#
# PLUE_REAL_CACHE moves the cache (default ~/.cache/plue-real).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${PLUE_REAL_CACHE:-$HOME/.cache/plue-real}"
key="$(cat "$here/build.sh" "$here"/go.{mod,sum} "$here"/{netpol,dns,crictl,helm}/go.{mod,sum} "$here/dns/main.go" \
  "$here/pause/pause.c" | sha256sum | cut -c1-12)"
out="$cache/kube-$key"
bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl kube-router cluster-dns crictl helm pause)
done_all=1
for b in "${bins[@]}"; do [[ -x "$out/bin/$b" ]] || done_all=0; done
if [[ $done_all == 1 ]]; then echo "$out/bin"; exit 0; fi

mkdir -p "$out/bin.partial"
export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath"
# -p 2: this is a 2-core machine and the Rust build may be running beside us.
# The release's version, as Kubernetes's own build stamps it (Helm checks a chart's
# kubeVersion against what the API server says it is).
release="$(sed -n 's#^require k8s.io/kubernetes v##p' "$here/go.mod")"
minor="$(cut -d. -f2 <<<"$release")"
stamp=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  stamp+=" -X $pkg.gitVersion=v$release -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  stamp+=" -X $pkg.gitTreeState=clean"
done
( cd "$here" && go build -p 2 -ldflags="-s -w$stamp" -o "$out/bin.partial/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-proxy \
    k8s.io/kubernetes/cmd/kubectl ) >&2
( cd "$here/netpol" && go build -p 2 -ldflags="-s -w" -o "$out/bin.partial/kube-router" \
    github.com/cloudnativelabs/kube-router/v2/cmd/kube-router ) >&2
( cd "$here/dns" && go build -p 2 -ldflags="-s -w" -o "$out/bin.partial/cluster-dns" . ) >&2
( cd "$here/crictl" && go build -p 2 -ldflags="-s -w" -o "$out/bin.partial/crictl" \
    sigs.k8s.io/cri-tools/cmd/crictl ) >&2
( cd "$here/helm" && go build -p 2 -ldflags="-s -w" -o "$out/bin.partial/helm" helm.sh/helm/v3/cmd/helm ) >&2
# The pod sandbox's pause process: a static C program, as Kubernetes builds its own.
gcc -Os -static -o "$out/bin.partial/pause" "$here/pause/pause.c" >&2
rm -rf "$out/bin" && mv "$out/bin.partial" "$out/bin"
# Builds of other pins are not needed again: keep the disk for this one.
find "$cache" -maxdepth 1 -name 'kube-*' ! -path "$out" -exec rm -rf {} +
echo "$out/bin"
