"""Importing the images built by hack/images.py (OCI archives) into the node's containerd."""

from __future__ import annotations

import json
import tarfile
import time
from pathlib import Path

from node_clients import _ctr
from node_common import Node, NodeError, log


def archive_digest(archive: Path, ref: str) -> str | None:
    """The manifest digest an OCI archive holds for `ref` (what `ctr images ls` shows once imported)."""
    try:
        with tarfile.open(archive, "r:") as tar:
            member = tar.extractfile("index.json")
            index = json.load(member) if member else {}
    except (OSError, KeyError, tarfile.TarError, ValueError):
        return None
    manifests = index.get("manifests", [])
    for m in manifests:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") in (ref, ref.rsplit(":", 1)[-1]):
            return m.get("digest")
    return manifests[0].get("digest") if len(manifests) == 1 else None


def import_images(node: Node, manifest: dict[str, dict]) -> None:
    """Import every archive of the images manifest into containerd's k8s.io namespace, skipping
    those already there with the same ref and digest."""
    present = {}
    for line in _ctr(node, "images", "ls").stdout.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 3:
            present[cols[0]] = cols[2]
    for name, entry in sorted(manifest.items()):
        ref, archive = entry["ref"], Path(entry["archive"])
        digest = archive_digest(archive, ref)
        if digest and present.get(ref) == digest:
            log(f"image {name}: {ref} already imported")
            continue
        size = archive.stat().st_size / 2**20
        t0 = time.monotonic()
        log(f"image {name}: importing {ref} from {archive} ({size:.0f} MiB)")
        r = _ctr(node, "images", "import", str(archive))
        if r.returncode != 0:
            raise NodeError(f"ctr images import {archive} failed: {r.stderr.strip()[-1000:]}")
        refs = {ln.split()[0] for ln in _ctr(node, "images", "ls").stdout.splitlines()[1:] if ln.strip()}
        if ref not in refs:
            raise NodeError(f"importing {archive} did not give image {ref} (containerd has: {sorted(refs)})")
        log(f"image {name}: imported in {time.monotonic() - t0:.1f}s")
