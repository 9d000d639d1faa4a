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
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

SCRIPT_VERSION = "1"
REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "images"
SUITE = "bookworm"
VARIANT = "minbase"
COREDNS_VERSION = "v1.15.0"
REF_PREFIX = "localhost/kms"
HEARTBEAT_SECONDS = 30.0
# build order: every image after the images it is built FROM
NAMES = ("debian", "pause", "coredns", "kube-mapserver", "mapserver", "mapcache")
BASE_OF = {"kube-mapserver": "debian", "mapserver": "debian", "mapcache": "debian"}
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_CA_DIR = Path("/usr/local/share/ca-certificates")
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


# (input hash, build function taking the ref to tag)
Recipe = tuple[str, Callable[[str], None]]


class ImageError(RuntimeError):
    """A build step failed (the message names the step and its log file)."""


# ------------------------------------------------------------------------------------ basics


def cache_dir() -> Path:
    """$KMS_CACHE_DIR, else ${XDG_CACHE_HOME:-$HOME/.cache}/kube-mapserver."""
    if os.environ.get("KMS_CACHE_DIR"):
        return Path(os.environ["KMS_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "kube-mapserver"


def images_dir() -> Path:
    """Where the archives, the manifest and the build logs live."""
    return cache_dir() / "images"


def manifest_path() -> Path:
    """$CACHE/images/manifest.json."""
    return images_dir() / "manifest.json"


def log(msg: str) -> None:
    """A timestamped progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] images: {msg}", file=sys.stderr, flush=True)


def _last_line(path: Path) -> str:
    """The last non-empty line of a log file (for heartbeats), shortened."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = [x for x in f.read().decode(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:120] if lines else ""


def _tail(path: Path, n: int = 40) -> str:
    """The last n lines of a log file."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def run(
    argv: list[str],
    *,
    step: str,
    logfile: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> None:
    """Run a long step with its output appended to logfile, a heartbeat every 30 s on stderr."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with logfile.open("ab") as out:
        out.write(f"\n$ {shlex.join(argv)}\n".encode())
        out.flush()
        start = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        while True:
            try:
                rc = proc.wait(timeout=HEARTBEAT_SECONDS)
                break
            except subprocess.TimeoutExpired:
                last = _last_line(logfile)
                log(f"  ... {step}: still running ({time.monotonic() - start:.0f} s) {last}")
    if rc != 0:
        sys.stderr.write(_tail(logfile) + "\n")
        raise ImageError(f"{step} failed (exit {rc}); full log: {logfile}")


def capture(argv: list[str], *, check: bool = True) -> str:
    """Run a short command and return its stdout."""
    res = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and res.returncode != 0:
        raise ImageError(f"{shlex.join(argv)} failed: {res.stderr.strip()[-2000:]}")
    return res.stdout


# ------------------------------------------------------------------------------------ buildah


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


# ------------------------------------------------------------------------------------ hashing


def _hash_file(h: hashlib._Hash, root: Path, path: Path) -> None:
    """Feed one file (relative name, executable bit, content or link target) into h."""
    rel = path.relative_to(root).as_posix()
    if path.is_symlink():
        h.update(f"L {rel} -> {os.readlink(path)}\n".encode())
        return
    mode = "x" if os.access(path, os.X_OK) else "-"
    h.update(f"F {rel} {mode} {path.stat().st_size}\n".encode())
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def hash_tree(root: Path, paths: Iterable[Path] | None = None) -> str:
    """sha256 over files under root (all of them, or the given ones), in name order."""
    h = hashlib.sha256()
    files = sorted(paths) if paths is not None else sorted(p for p in root.rglob("*") if not p.is_dir())
    for path in files:
        _hash_file(h, root, path)
    return h.hexdigest()


def _dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore lines -> (is_exclusion, regex) in order (last match wins)."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:].strip() if negate else line
        pattern = pattern.strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        rules.append((not negate, re.compile(regex + r"\Z")))
    return rules


def _ignored(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether a context path is left out (a pattern matches the path or one of its parents)."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for exclude, regex in rules:
        if any(regex.match(p) for p in prefixes):
            ignored = exclude
    return ignored


def context_files(context: Path) -> list[Path]:
    """The files a build context sends to buildah (honouring its .dockerignore)."""
    ignore = context / ".dockerignore"
    rules = _dockerignore_rules(ignore.read_text()) if ignore.exists() else []
    skip = {".git", ".venv", ".kms", "node_modules"}
    files = []
    for dirpath, dirnames, filenames in os.walk(context):
        base = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not (base == context and d in skip)]
        for name in filenames:
            path = base / name
            if not _ignored(path.relative_to(context).as_posix(), rules):
                files.append(path)
    return files


def input_hash(*parts: str) -> str:
    """sha256 of the script version and the given strings."""
    h = hashlib.sha256(f"kube-mapserver images v{SCRIPT_VERSION}\n".encode())
    for part in parts:
        h.update(part.encode())
        h.update(b"\n")
    return h.hexdigest()


def go_version() -> str:
    """`go version` (part of the Go images' inputs)."""
    return capture(["go", "version"], check=True).strip()


# ------------------------------------------------------------------------------------ debian


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


# ------------------------------------------------------------------------------------ go images


def build_pause_binary(out: Path, logfile: Path) -> None:
    """images/pause/main.go -> a static, stripped binary at out."""
    run(
        ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out), "."],
        step="go build pause",
        logfile=logfile,
        cwd=IMAGES / "pause",
        env={"CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOWORK": "off"},
    )


def coredns_binary(logfile: Path) -> Path:
    """CoreDNS COREDNS_VERSION from the Go module proxy, cached in $CACHE/bin/coredns-<version>/."""
    final = cache_dir() / "bin" / f"coredns-{COREDNS_VERSION}"
    binary = final / "coredns"
    if binary.exists():
        return binary
    tmp = final.with_name(final.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    log(f"building CoreDNS {COREDNS_VERSION} from the Go module proxy (a few minutes)")
    run(
        [
            "go",
            "install",
            "-trimpath",
            "-ldflags",
            "-s -w",
            f"github.com/coredns/coredns@{COREDNS_VERSION}",
        ],
        step="go install coredns",
        logfile=logfile,
        cwd=tmp,
        env={"CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOBIN": str(tmp), "GOWORK": "off"},
    )
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return binary


def _stage(context: Path, files: dict[str, Path]) -> Path:
    """A fresh build context folder holding the given files."""
    if context.exists():
        shutil.rmtree(context)
    context.mkdir(parents=True)
    for name, src in files.items():
        shutil.copy2(src, context / name)
    return context


# ------------------------------------------------------------------------------------ the build


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
