#!/usr/bin/env python3
"""Build every image kube-mapserver needs, here, without a registry (`make images`).

    hack/images.py build [--only NAME ...]   build (or reuse) the images, write the manifest
    hack/images.py sizes                     table of image sizes from the manifest

Images: ``debian`` (debootstrap minbase of the machine's Debian mirror), ``pause`` (images/pause),
``coredns`` (from the Go module proxy), ``kube-mapserver`` (the repo's Dockerfile), ``mapserver``
(images/mapserver: MapServer 8.0 behind Apache + mod_fcgid) and ``mapcache`` (images/mapcache:
Apache + mod_mapcache 1.14). buildah runs with private storage under the cache folder
(``$KMS_CACHE_DIR`` or ``${XDG_CACHE_HOME:-~/.cache}/kube-mapserver``); every image is pushed to
an OCI archive ``$CACHE/images/<name>-<tag>.oci.tar`` (import it with ``ctr images import``) and
listed in ``$CACHE/images/manifest.json``:
``{"<name>": {"ref": "localhost/kms/<name>:<tag>", "archive": ..., "hash": ..., "bytes": ...}}``.
The tag is the first 12 hex digits of the image's input hash (its build files, its base image's
hash, its build arguments and SCRIPT_VERSION): unchanged inputs keep their ref and are not rebuilt.

Environment: ``KMS_BUILD_CA_DIR`` a folder of extra CA certificates (``*.crt``) that the
kube-mapserver build stage trusts (for pip behind a TLS-intercepting proxy); default
/usr/local/share/ca-certificates when it holds ``*.crt`` files, ``none`` turns it off. The
certificates never reach the runtime stage. ``KMS_BUILDAH_DRIVER`` (overlay, else vfs).

Importable: ``build(names=None) -> dict`` returns the manifest.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the builds' code lives in the modules below (image_*.py); what callers use is re-exported here
# (__all__), so `images.<name>` keeps working
from image_buildah import bud, buildah, ensure_loaded, image_bytes, image_exists, storage_args
from image_builder import DEFAULT_CA_DIR, Recipe, _Builder, ca_dir
from image_common import (
    BASE_OF,
    HEARTBEAT_SECONDS,
    IMAGES,
    NAMES,
    REF_PREFIX,
    REPO,
    SCRIPT_VERSION,
    ImageError,
    cache_dir,
    capture,
    images_dir,
    log,
    manifest_path,
    run,
)
from image_debian import (
    APT_CONF,
    DPKG_EXCLUDES,
    PATH_ENV,
    SUITE,
    VARIANT,
    build_debian,
    debian_sources,
    debian_sources_list,
)
from image_go_binaries import COREDNS_VERSION, build_pause_binary, coredns_binary
from image_hashing import context_files, go_version, hash_tree, input_hash

__all__ = [
    "APT_CONF",
    "BASE_OF",
    "COREDNS_VERSION",
    "DEFAULT_CA_DIR",
    "DPKG_EXCLUDES",
    "HEARTBEAT_SECONDS",
    "IMAGES",
    "NAMES",
    "PATH_ENV",
    "REF_PREFIX",
    "REPO",
    "SCRIPT_VERSION",
    "SUITE",
    "VARIANT",
    "ImageError",
    "Recipe",
    "bud",
    "build",
    "build_debian",
    "build_pause_binary",
    "buildah",
    "ca_dir",
    "cache_dir",
    "capture",
    "context_files",
    "coredns_binary",
    "debian_sources",
    "debian_sources_list",
    "ensure_loaded",
    "go_version",
    "hash_tree",
    "image_bytes",
    "image_exists",
    "images_dir",
    "input_hash",
    "load_manifest",
    "log",
    "main",
    "manifest_path",
    "run",
    "sizes",
    "storage_args",
]


def load_manifest() -> dict:
    """The current manifest ({} when there is none)."""
    try:
        return json.loads(manifest_path().read_text())
    except (OSError, ValueError):
        return {}


def _write_manifest(manifest: dict) -> None:
    """Write the manifest atomically."""
    path = manifest_path()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """One build at a time per cache folder."""
    images_dir().mkdir(parents=True, exist_ok=True)
    with (images_dir() / ".lock").open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("another build holds the lock; waiting")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _with_bases(names: Iterable[str]) -> list[str]:
    """The requested names plus the images they are built FROM, in build order."""
    wanted = set(names)
    unknown = wanted - set(NAMES)
    if unknown:
        raise ImageError(f"unknown image(s): {', '.join(sorted(unknown))}; known: {', '.join(NAMES)}")
    wanted |= {BASE_OF[n] for n in wanted if n in BASE_OF}
    return [n for n in NAMES if n in wanted]


def build(names: Iterable[str] | None = None) -> dict:
    """Build (or reuse) the named images (default: all) and the images they need; returns the manifest."""
    order = _with_bases(names or NAMES)
    start = time.monotonic()
    with _lock():
        old = load_manifest()
        builder = _Builder(old)
        for name in order:
            builder.new[name] = builder.one(name)
            _write_manifest({**old, **builder.new})
        shutil.rmtree(builder.work, ignore_errors=True)
        manifest = {**old, **builder.new}
        _write_manifest(manifest)
    log(f"done in {time.monotonic() - start:.0f} s: {manifest_path()}")
    return manifest


def sizes(manifest: dict) -> str:
    """A table of the images' refs, uncompressed sizes and archive sizes."""
    rows = [("NAME", "REF", "UNCOMPRESSED", "ARCHIVE")]
    for name in sorted(manifest, key=lambda n: NAMES.index(n) if n in NAMES else len(NAMES)):
        entry = manifest[name]
        archive = Path(entry["archive"])
        size = f"{archive.stat().st_size / 1e6:.1f} MB" if archive.exists() else "missing"
        rows.append((name, entry["ref"], f"{entry['bytes'] / 1e6:.1f} MB", size))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or reuse) the images and write the manifest")
    b.add_argument("--only", nargs="+", action="extend", metavar="NAME", choices=NAMES, help="these images")
    sub.add_parser("sizes", help="table of image sizes (from the manifest)")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "build":
            build(args.only)
            print(manifest_path())
        else:
            manifest = load_manifest()
            if not manifest:
                print(f"no manifest at {manifest_path()}; run: hack/images.py build", file=sys.stderr)
                return 1
            print(sizes(manifest))
    except ImageError as exc:
        log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
