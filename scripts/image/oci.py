#!/usr/bin/env python3
"""Writes an OCI image archive (an OCI image layout in a tar) from layer tarballs.

    oci.py --name docker.io/library/plue:0.1.0 --out plue.oci.tar \
        --layer base.tar --file target/plue=usr/local/bin/plue \
        --entrypoint plue --cmd serve --cmd=--runners --cmd 0 \
        --env HOME=/home/plue --user 65532:65532 --workdir /home/plue --port 8600

`--layer` takes a layer tarball; `--file SRC=DEST` makes a layer of one executable file
at DEST (with its parent directories), owned by root, mode 0755, dated 0, after the
`--layer`s. Layers are stored uncompressed (their digest is their diff id), which containerd imports
as they are (`ctr -n k8s.io images import`). The image is linux/amd64. Nothing here
depends on a container engine: it is how scripts/image/build.sh builds the Dockerfile's
image on machines that have none.
"""
import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile

LAYER = "application/vnd.oci.image.layer.v1.tar"
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_layer(src, dest, out):
    """Writes the layer tarball `out` holding `src` at `dest`; returns `out`."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
        parts = dest.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            d = tarfile.TarInfo("/".join(parts[:depth]))
            d.type = tarfile.DIRTYPE
            d.mode = 0o755
            t.addfile(d)
        i = t.gettarinfo(src, dest)
        i.uid = i.gid = 0
        i.uname = i.gname = "root"
        i.mode = 0o755
        i.mtime = 0
        with open(src, "rb") as f:
            t.addfile(i, f)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="full reference, e.g. docker.io/library/plue:0.1.0")
    p.add_argument("--out", required=True)
    p.add_argument("--layer", action="append", default=[])
    p.add_argument("--file", action="append", default=[], metavar="SRC=DEST")
    p.add_argument("--entrypoint", action="append", default=[])
    p.add_argument("--cmd", action="append", default=[])
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--user", default="")
    p.add_argument("--workdir", default="")
    p.add_argument("--port", action="append", default=[])
    a = p.parse_args()
    if ":" not in a.name.rsplit("/", 1)[-1]:
        sys.exit(f"oci.py: --name {a.name!r} has no tag")

    if not a.layer and not a.file:
        sys.exit("oci.py: give at least one --layer or --file")

    with tempfile.TemporaryDirectory() as tmp:
        blobs = os.path.join(tmp, "blobs", "sha256")
        os.makedirs(blobs)
        for n, spec in enumerate(a.file):
            src, sep, dest = spec.partition("=")
            if not sep or not dest or not os.path.isfile(src):
                sys.exit(f"oci.py: --file {spec!r} is not SRC=DEST of an existing file")
            a.layer.append(file_layer(src, dest.strip("/"), os.path.join(tmp, f"file-{n}.tar")))

        def put_bytes(data):
            digest = hashlib.sha256(data).hexdigest()
            with open(os.path.join(blobs, digest), "wb") as f:
                f.write(data)
            return digest, len(data)

        layers = []
        for path in a.layer:
            if not os.path.isfile(path):
                sys.exit(f"oci.py: layer {path!r} is not a file")
            digest = sha256_file(path)
            os.link(path, os.path.join(blobs, digest)) if os.stat(path).st_dev == os.stat(tmp).st_dev \
                else shutil.copyfile(path, os.path.join(blobs, digest))
            layers.append({"mediaType": LAYER, "digest": "sha256:" + digest, "size": os.path.getsize(path)})

        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                k: v
                for k, v in {
                    "Entrypoint": a.entrypoint or None,
                    "Cmd": a.cmd or None,
                    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + a.env,
                    "User": a.user or None,
                    "WorkingDir": a.workdir or None,
                    "ExposedPorts": {f"{port}/tcp": {} for port in a.port} or None,
                }.items()
                if v is not None
            },
            "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]},
            "history": [{"created_by": f"scripts/image/oci.py layer {os.path.basename(l)}"} for l in a.layer],
        }
        config_digest, config_size = put_bytes(json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": "sha256:" + config_digest, "size": config_size},
            "layers": layers,
        }
        manifest_digest, manifest_size = put_bytes(json.dumps(manifest, sort_keys=True).encode())
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": MANIFEST,
                    "digest": "sha256:" + manifest_digest,
                    "size": manifest_size,
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": a.name,
                        "org.opencontainers.image.ref.name": a.name.rsplit(":", 1)[1],
                    },
                }
            ],
        }
        with open(os.path.join(tmp, "index.json"), "w") as f:
            json.dump(index, f)
        with open(os.path.join(tmp, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)

        partial = a.out + ".partial"
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as out:
            for entry in ("oci-layout", "index.json", "blobs"):
                out.add(os.path.join(tmp, entry), arcname=entry)
        os.replace(partial, a.out)
    print(a.out)


if __name__ == "__main__":
    main()
