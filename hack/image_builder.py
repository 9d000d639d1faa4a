"""Building one image: its input hash and build recipe, the cache check against the manifest, the
build, and its OCI archive."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from image_buildah import bud, buildah, ensure_loaded, image_bytes
from image_common import BASE_OF, IMAGES, REF_PREFIX, REPO, ImageError, images_dir, log, run
from image_debian import (
    APT_CONF,
    DPKG_EXCLUDES,
    SUITE,
    VARIANT,
    build_debian,
    debian_sources,
    debian_sources_list,
)
from image_go_binaries import COREDNS_VERSION, _stage, build_pause_binary, coredns_binary
from image_hashing import context_files, go_version, hash_tree, input_hash

# (input hash, build function taking the ref to tag)
Recipe = tuple[str, Callable[[str], None]]
DEFAULT_CA_DIR = Path("/usr/local/share/ca-certificates")


def ca_dir() -> Path | None:
    """The extra CA folder for the kube-mapserver build stage (KMS_BUILD_CA_DIR), or None."""
    value = os.environ.get("KMS_BUILD_CA_DIR")
    if value is not None:
        if value.strip().lower() in ("", "none", "no", "0", "off"):
            return None
        path = Path(value).resolve()
        if not path.is_dir():
            raise ImageError(f"KMS_BUILD_CA_DIR={value} is not a folder")
        return path
    if DEFAULT_CA_DIR.is_dir() and any(DEFAULT_CA_DIR.rglob("*.crt")):
        return DEFAULT_CA_DIR
    return None


class _Builder:
    """Computes each image's input hash and builds it unless the manifest already has it."""

    def __init__(self, old: dict):
        self.old = old
        self.new: dict = {}
        self.work = images_dir() / "work"
        self.logs = images_dir() / "logs"

    def logfile(self, name: str) -> Path:
        """The build log of one image."""
        return self.logs / f"{name}.log"

    def entry(self, name: str, digest: str) -> dict:
        """The manifest entry an image with this input hash gets."""
        tag = digest[:12]
        return {
            "ref": f"{REF_PREFIX}/{name}:{tag}",
            "archive": str(images_dir() / f"{name}-{tag}.oci.tar"),
            "hash": digest,
        }

    def cached(self, name: str, digest: str) -> dict | None:
        """The old entry when its hash matches and its archive is still there."""
        old = self.old.get(name)
        if old and old.get("hash") == digest and Path(old.get("archive", "")).is_file() and old.get("bytes"):
            return old
        return None

    def base(self, name: str) -> dict:
        """The manifest entry of the image name is built FROM, loaded into the storage."""
        entry = self.new[BASE_OF[name]]
        ensure_loaded(entry)
        return entry

    def one(self, name: str) -> dict:
        """Build (or reuse) one image; returns its manifest entry."""
        logfile = self.logfile(name)
        prepare = getattr(self, "inputs_" + name.replace("-", "_"))
        digest, build = prepare(logfile)
        hit = self.cached(name, digest)
        if hit:
            log(f"{name}: cached ({hit['ref']})")
            return hit
        entry = self.entry(name, digest)
        log(f"{name}: building {entry['ref']} (log: {logfile})")
        logfile.parent.mkdir(parents=True, exist_ok=True)
        logfile.write_text(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} building {entry['ref']}\n")
        start = time.monotonic()
        build(entry["ref"])
        for _ in range(3):  # a file edited during the build: build again (mostly from cached layers)
            again, build = prepare(logfile)
            if again == digest:
                break
            log(f"{name}: its inputs changed during the build; building again")
            subprocess.run([*buildah(), "rmi", entry["ref"]], capture_output=True, check=False)
            digest, entry = again, self.entry(name, again)
            build(entry["ref"])
        else:
            raise ImageError(f"{name}: its inputs keep changing during the build")
        built = time.monotonic() - start
        archive = Path(entry["archive"])
        tmp = archive.with_name(archive.name + ".tmp")
        tmp.unlink(missing_ok=True)
        run(
            [*buildah(), "push", "--quiet", entry["ref"], f"oci-archive:{tmp}:{entry['ref']}"],
            step=f"push {name}",
            logfile=logfile,
        )
        tmp.replace(archive)
        for stale in images_dir().glob(f"{name}-*.oci.tar"):
            if stale != archive and re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{12}}\.oci\.tar", stale.name):
                stale.unlink()
        entry["bytes"] = image_bytes(entry["ref"])
        previous = self.old.get(name, {}).get("ref")
        if previous and previous != entry["ref"]:  # untag the replaced build (layers stay cached)
            subprocess.run([*buildah(), "rmi", previous], capture_output=True, check=False)
        log(
            f"{name}: built in {built:.0f} s (+{time.monotonic() - start - built:.0f} s archive), "
            f"{entry['bytes'] / 1e6:.1f} MB, archive {archive.stat().st_size / 1e6:.1f} MB"
        )
        return entry

    # -- per image: (input hash, build function)

    def inputs_debian(self, logfile: Path) -> Recipe:
        """Debian base: suite, mirror, variant, sources and slimming rules."""
        mirror, security = debian_sources()
        sources = debian_sources_list(mirror, security)
        digest = input_hash("debian", SUITE, mirror, VARIANT, sources, DPKG_EXCLUDES, APT_CONF)
        return digest, lambda ref: build_debian(ref, self.work, logfile, mirror, sources)

    def inputs_pause(self, logfile: Path) -> Recipe:
        """pause: its Go sources, its Containerfile and the Go version."""
        digest = input_hash("pause", hash_tree(IMAGES / "pause"), go_version())

        def build(ref: str) -> None:
            context = _stage(self.work / "pause", {"Containerfile": IMAGES / "pause" / "Containerfile"})
            build_pause_binary(context / "pause", logfile)
            bud(ref, context / "Containerfile", context, logfile)

        return digest, build

    def inputs_coredns(self, logfile: Path) -> Recipe:
        """coredns: the pinned version's binary (built once) and the Containerfile."""
        binary = coredns_binary(logfile)
        digest = input_hash(
            "coredns", COREDNS_VERSION, hash_tree(IMAGES / "coredns"), hash_tree(binary.parent)
        )

        def build(ref: str) -> None:
            files = {"Containerfile": IMAGES / "coredns" / "Containerfile", "coredns": binary}
            context = _stage(self.work / "coredns", files)
            bud(ref, context / "Containerfile", context, logfile)

        return digest, build

    def inputs_kube_mapserver(self, logfile: Path) -> Recipe:
        """kube-mapserver: the Dockerfile, its context (.dockerignore), the base and build args."""
        cas = ca_dir()
        base = self.new["debian"]
        args = {"DEBIAN_IMAGE": base["ref"]}
        volumes = []
        if cas:
            args["EXTRA_CA_DIR"] = str(cas)
            volumes.append(f"{cas}:{cas}:ro")
        files = [REPO / "Dockerfile", *context_files(REPO)]
        digest = input_hash(
            "kube-mapserver", hash_tree(REPO, set(files)), base["hash"], json.dumps(args, sort_keys=True)
        )

        def build(ref: str) -> None:
            self.base("kube-mapserver")
            if cas:
                log(f"kube-mapserver: build stage trusts the CAs in {cas} (KMS_BUILD_CA_DIR)")
            bud(ref, REPO / "Dockerfile", REPO, logfile, args, volumes)

        return digest, build

    def _apache_image(self, name: str, logfile: Path) -> Recipe:
        """mapserver / mapcache: images/<name>/ on top of the Debian base."""
        base = self.new["debian"]
        args = {"BASE_IMAGE": base["ref"]}
        folder = IMAGES / name
        digest = input_hash(name, hash_tree(folder), base["hash"], json.dumps(args, sort_keys=True))

        def build(ref: str) -> None:
            self.base(name)
            bud(ref, folder / "Containerfile", folder, logfile, args)

        return digest, build

    def inputs_mapserver(self, logfile: Path) -> Recipe:
        """mapserver: images/mapserver on the Debian base."""
        return self._apache_image("mapserver", logfile)

    def inputs_mapcache(self, logfile: Path) -> Recipe:
        """mapcache: images/mapcache on the Debian base."""
        return self._apache_image("mapcache", logfile)
