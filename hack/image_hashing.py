"""Input hashes of the images: file trees, build contexts (honouring .dockerignore), strings."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

from image_common import SCRIPT_VERSION, capture


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
