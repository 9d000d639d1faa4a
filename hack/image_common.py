"""What the image builds share: the image names and their build order, the cache folders, the
error type, progress logging and running commands (long steps with a log file and heartbeats)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

SCRIPT_VERSION = "1"
REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "images"
REF_PREFIX = "localhost/kms"
HEARTBEAT_SECONDS = 30.0
# build order: every image after the images it is built FROM
NAMES = ("debian", "pause", "coredns", "kube-mapserver", "mapserver", "mapcache")
BASE_OF = {"kube-mapserver": "debian", "mapserver": "debian", "mapcache": "debian"}


class ImageError(RuntimeError):
    """A build step failed (the message names the step and its log file)."""


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
