"""buildah with private storage under the cache folder: the storage driver, image queries,
loading an image back from its archive, and `buildah bud`."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

from image_common import cache_dir, capture, log, run


def _driver() -> str:
    """The storage driver: $KMS_BUILDAH_DRIVER, else overlay when it works here, else vfs."""
    forced = os.environ.get("KMS_BUILDAH_DRIVER")
    if forced:
        return forced
    marker = cache_dir() / "buildah" / "driver"
    if marker.exists():
        return marker.read_text().strip()
    driver = "overlay"
    probe = [*_buildah_for("overlay"), "images", "--quiet"]
    res = subprocess.run(probe, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        log(f"overlay storage does not work here ({res.stderr.strip()[-200:]}); using vfs")
        driver = "vfs"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(driver + "\n")
    return driver


def _buildah_for(driver: str) -> list[str]:
    """buildah with the private storage of one driver."""
    root = cache_dir() / "buildah"
    suffix = "" if driver == "overlay" else f"-{driver}"
    return [
        "buildah",
        "--root",
        str(root / f"root{suffix}"),
        "--runroot",
        str(root / f"runroot{suffix}"),
        "--storage-driver",
        driver,
    ]


def buildah() -> list[str]:
    """The buildah command line prefix (private storage under the cache folder)."""
    return _buildah_for(_driver())


def storage_args() -> list[str]:
    """--root/--runroot/--storage-driver for other tools that read the same storage."""
    return buildah()[1:]


def image_exists(ref: str) -> bool:
    """Whether the private storage holds ref."""
    res = subprocess.run(
        [*buildah(), "inspect", "--type", "image", ref],
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    return res.returncode == 0


def image_bytes(ref: str) -> int:
    """The uncompressed size of an image built in the private storage (the sum of its layer tars;
    an image pulled back from an archive lists its compressed sizes instead)."""
    info = json.loads(capture([*buildah(), "inspect", "--type", "image", ref]))
    layers = json.loads(info["Manifest"])["layers"]
    return sum(int(layer["size"]) for layer in layers)


def ensure_loaded(entry: dict) -> None:
    """Put a cached image back into the private storage from its archive (when it was removed)."""
    if image_exists(entry["ref"]):
        return
    log(f"loading {entry['ref']} from {entry['archive']}")
    image_id = capture([*buildah(), "pull", "--quiet", f"oci-archive:{entry['archive']}"]).split()[-1]
    capture([*buildah(), "tag", image_id, entry["ref"]])


def bud(
    ref: str,
    containerfile: Path,
    context: Path,
    logfile: Path,
    build_args: dict[str, str] | None = None,
    volumes: Iterable[str] = (),
) -> None:
    """buildah bud with layer caching, host network (no CNI setup) and no pulls."""
    argv = [
        *buildah(),
        "bud",
        "--pull=never",
        "--network",
        "host",
        "--layers",
        "--format",
        "oci",
        "-f",
        str(containerfile),
        "-t",
        ref,
    ]
    for key, value in (build_args or {}).items():
        argv += ["--build-arg", f"{key}={value}"]
    for volume in volumes:
        argv += ["-v", volume]
    argv.append(str(context))
    run(argv, step=f"buildah bud {ref}", logfile=logfile)
