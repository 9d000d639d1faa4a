"""The Debian base image: a debootstrap minbase from the machine's apt mirror, slimmed and
imported into buildah from scratch."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

from image_buildah import buildah
from image_common import ImageError, capture, run

SUITE = "bookworm"
VARIANT = "minbase"
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Like debian:*-slim: no documentation, manual pages or translations in the images.
DPKG_EXCLUDES = """\
# kube-mapserver base image (hack/images.py): no docs, manual pages or translations
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""
APT_CONF = """\
# kube-mapserver base image (hack/images.py): small image layers
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
Binary::apt::APT::Keep-Downloaded-Packages "false";
"""


def debian_sources() -> tuple[str, str | None]:
    """(mirror, security mirror or None) from the machine's apt sources (deb822 and one-line)."""
    entries: list[tuple[str, list[str]]] = []
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line:
                        continue
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
                if "deb" not in fields.get("types", "").split():
                    continue
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                for uri in fields.get("uris", "").split():
                    entries.append((uri, fields.get("suites", "").split()))
        elif path.name == "sources.list" or path.suffix == ".list":
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb":
                    entries.append((words[1], [words[2]]))
    mirror = next((u for u, suites in entries if SUITE in suites), None)
    security = next((u for u, suites in entries if f"{SUITE}-security" in suites), None)
    if not mirror:
        raise ImageError(f"no Debian mirror for {SUITE} in /etc/apt/sources.list(.d)")
    return mirror.rstrip("/"), security.rstrip("/") if security else None


def debian_sources_list(mirror: str, security: str | None) -> str:
    """The image's /etc/apt/sources.list."""
    lines = [f"deb {mirror} {SUITE} main", f"deb {mirror} {SUITE}-updates main"]
    if security:
        lines.append(f"deb {security} {SUITE}-security main")
    return "\n".join(lines) + "\n"


def _umount_under(path: Path) -> None:
    """Unmount whatever a failed debootstrap left mounted under path (deepest first)."""
    prefix = str(path.resolve()) + "/"
    mounts = [
        line.split()[1]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if len(line.split()) > 1
    ]
    for target in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False)


def _slim_rootfs(rootfs: Path, sources_list: str) -> None:
    """Apt lists/.debs/logs/docs out, apt sources + slim dpkg/apt settings in."""
    for pattern in (
        "var/lib/apt/lists/*",
        "var/cache/apt/*.bin",
        "var/cache/apt/archives/*.deb",
        "var/log/*",
        "usr/share/man/*",
        "usr/share/info/*",
        "usr/share/locale/*",
        "usr/share/doc/*/*",
    ):
        for p in rootfs.glob(pattern):
            if p.name in ("copyright", "locale.alias", "partial", "lock"):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    (rootfs / "etc/apt/sources.list").write_text(sources_list)
    (rootfs / "etc/dpkg/dpkg.cfg.d/kms-slim").write_text(DPKG_EXCLUDES)
    (rootfs / "etc/apt/apt.conf.d/90kms-slim").write_text(APT_CONF)
    for name in ("etc/resolv.conf", "etc/hostname", "etc/machine-id"):
        p = rootfs / name
        if p.exists() or p.is_symlink():
            p.unlink()
        p.write_text("")


def build_debian(ref: str, work: Path, logfile: Path, mirror: str, sources_list: str) -> None:
    """debootstrap --variant=minbase, slimmed, imported with buildah from scratch + mount + tar."""
    rootfs = work / "debian-rootfs"
    if rootfs.exists():
        _umount_under(rootfs)
        shutil.rmtree(rootfs)
    work.mkdir(parents=True, exist_ok=True)
    try:
        run(
            ["debootstrap", f"--variant={VARIANT}", SUITE, str(rootfs), mirror],
            step="debootstrap",
            logfile=logfile,
        )
        _slim_rootfs(rootfs, sources_list)
        cid = capture([*buildah(), "from", "--pull=never", "scratch"]).strip()
        try:
            mnt = capture([*buildah(), "mount", cid]).strip()
            pipe = (
                f"tar -C {shlex.quote(str(rootfs))} --numeric-owner --xattrs -cf - --exclude=./dev/* ."
                f" | tar -C {shlex.quote(mnt)} --numeric-owner --xattrs -xpf -"
            )
            run(["bash", "-o", "pipefail", "-c", pipe], step="import rootfs", logfile=logfile)
            capture([*buildah(), "umount", cid])
            capture(
                [
                    *buildah(),
                    "config",
                    "--cmd",
                    '["/bin/bash"]',
                    "--env",
                    f"PATH={PATH_ENV}",
                    "--label",
                    f"org.opencontainers.image.description=Debian {SUITE} {VARIANT} ({mirror})",
                    cid,
                ]
            )
            capture([*buildah(), "commit", "--quiet", "--format", "oci", cid, ref])
        finally:
            subprocess.run([*buildah(), "rm", cid], capture_output=True, check=False)
    finally:
        if rootfs.exists():
            _umount_under(rootfs)
            shutil.rmtree(rootfs, ignore_errors=True)
