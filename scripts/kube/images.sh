#!/usr/bin/env bash
# Imports the cluster's images into the containerd of scripts/kube/up.sh (there is no
# registry to pull from): Kubernetes's pause (as registry.k8s.io/pause:3.10, the sandbox
# image containerd is configured with), the cluster DNS (CoreDNS) and the project's own image from
# scripts/image/build.sh. An image already there with the same content is not imported
# again.
#
#   scripts/kube/images.sh BIN_DIR [--binary PATH]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"
bin=$1; shift
ctr=(ctr --address "$KUBE_SOCK" -n k8s.io)
python=/usr/bin/python3
cache="${PLUE_REAL_CACHE:-$HOME/.cache/plue-real}/images"
mkdir -p "$cache"

# import ARCHIVE NAME: imports unless NAME already has the archive's manifest.
import() {
  local archive=$1 name=$2 want have
  want="$("$python" -c 'import json,sys,tarfile; t=tarfile.open(sys.argv[1]); print(json.load(t.extractfile("index.json"))["manifests"][0]["digest"])' "$archive")"
  have="$("${ctr[@]}" images ls "name==$name" 2>/dev/null | awk 'NR>1 {print $3}')"
  if [[ $have != "$want" ]]; then
    "${ctr[@]}" images import "$archive" >/dev/null
    kube_log "imported $name ($want)"
  fi
}

# binary_image BINARY NAME ENTRYPOINT USER: imports NAME, an image of BINARY alone at
# ENTRYPOINT (its archive cached by the binary's digest).
binary_image() {
  local binary=$1 name=$2 entrypoint=$3 user=$4 archive
  archive="$cache/$(basename "$binary")-$(sha256sum "$binary" | cut -c1-12).oci.tar"
  if [[ ! -f $archive ]]; then
    "$python" "$root/scripts/image/oci.py" --name "$name" --out "$archive" \
      --file "$binary=$entrypoint" --entrypoint "$entrypoint" --user "$user" >/dev/null
  fi
  import "$archive" "$name"
}
binary_image "$bin/pause" registry.k8s.io/pause:3.10 /pause 65535:65535
binary_image "$bin/cluster-dns" "$KUBE_DNS_IMAGE" /coredns 65532:65532

if [[ $# == 0 && ! -x $root/target/release/plue && ! -x $root/target/debug/plue ]]; then
  kube_log "no plue binary built yet: the project's image is imported when one is (tests/real_kube.rs imports the binary it tests)"
  exit 0
fi
plue="$("$root/scripts/image/build.sh" "$@")"
name="$("$python" -c 'import json,sys,tarfile; t=tarfile.open(sys.argv[1]); print(json.load(t.extractfile("index.json"))["manifests"][0]["annotations"]["io.containerd.image.name"])' "$plue")"
import "$plue" "$name"
