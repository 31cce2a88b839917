#!/usr/bin/env python3
"""Builds the OCI benchmark image as an OCI layout, deterministically.

    oci_content.py DIR NAME=SIZE...

Each NAME=SIZE becomes one layer: a gzip member of stored (level 0) deflate
blocks holding SIZE pseudo-random bytes seeded by NAME, so the blob is valid
gzip (skopeo keeps it as it is), costs nothing to compress, is incompressible
on the wire, and has the same digest on every run. The image gets a config,
a manifest tagged `latest`, and DIR/blobs.tsv lists `NAME<TAB>DIGEST<TAB>SIZE`
for the layers, the config and the manifest. Memory stays flat whatever SIZE.
"""

import hashlib
import json
import os
import random
import sys
import zlib

CHUNK = 1 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def blob_path(layout, digest):
    return os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1])


def add_bytes(layout, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with open(blob_path(layout, digest), "wb") as out:
        out.write(data)
    return digest, len(data)


def add_layer(layout, name, size):
    """Streams a stored-gzip layer of `size` bytes seeded by `name`."""
    rng = random.Random(name)
    gzip = zlib.compressobj(level=0, wbits=31)
    blob_hash, diff_hash = hashlib.sha256(), hashlib.sha256()
    tmp = os.path.join(layout, f"{name}.tmp")
    written = 0
    with open(tmp, "wb") as out:

        def emit(data):
            nonlocal written
            blob_hash.update(data)
            written += len(data)
            out.write(data)

        left = size
        while left > 0:
            n = min(left, CHUNK)
            data = rng.randbytes(n)
            diff_hash.update(data)
            emit(gzip.compress(data))
            left -= n
        emit(gzip.flush())
    digest = "sha256:" + blob_hash.hexdigest()
    os.replace(tmp, blob_path(layout, digest))
    return digest, written, "sha256:" + diff_hash.hexdigest()


def main():
    layout, specs = sys.argv[1], sys.argv[2:]
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(layout, "oci-layout"), "w") as out:
        out.write('{"imageLayoutVersion":"1.0.0"}')
    rows, layers, diff_ids = [], [], []
    for spec in specs:
        name, size = spec.split("=", 1)
        digest, written, diff_id = add_layer(layout, name, int(size))
        rows.append((name, digest, written))
        layers.append(
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": digest,
                "size": written,
            }
        )
        diff_ids.append(diff_id)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        },
        separators=(",", ":"),
    ).encode()
    config_digest, config_size = add_bytes(layout, config)
    rows.append(("config", config_digest, config_size))
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": layers,
        },
        separators=(",", ":"),
    ).encode()
    manifest_digest, manifest_size = add_bytes(layout, manifest)
    rows.append(("manifest", manifest_digest, manifest_size))
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }
        ],
    }
    with open(os.path.join(layout, "index.json"), "w") as out:
        json.dump(index, out)
    with open(os.path.join(layout, "blobs.tsv"), "w") as out:
        for name, digest, size in rows:
            out.write(f"{name}\t{digest}\t{size}\n")


if __name__ == "__main__":
    main()
