"""cache-seed and cache-purge: a MapService's MapCache tile cache under the cache root.

Layout: `<cache root>/<service>/<dataset>/<version>` (disk cache directory) or
`<cache root>/<service>/<dataset>/<version>.sqlite3` (sqlite cache). The operator writes MapCache XML with
the in-pod root `/var/cache/mapcache`; the runner rewrites that prefix to `--cache-root`."""

from __future__ import annotations

import contextlib
import errno
import os
import pty
import re
import stat
import subprocess
import tempfile
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

from pydantic import AfterValidator, Field, model_validator

from kms_crds.common import KModel
from kms_crds.tilegrids import grid as tile_grid
from kms_crds.tilegrids import tile_count, validate_wgs84_extent

from .result import JobError, Logger

SOURCE_WAIT_SECONDS = 120.0

DEFAULT_CACHE_ROOT = "/var/cache/mapcache"
MAPCACHE_SEED = os.environ.get("KMS_MAPCACHE_SEED", "mapcache_seed")
SQLITE_SUFFIXES = (".sqlite3", ".sqlite3-journal", ".sqlite3-wal", ".sqlite3-shm")


def _segment(value: str) -> str:
    """One path segment: not empty, no '/', '\\' or '..', no control characters, not starting with '.'."""
    if (
        not value
        or "/" in value
        or "\\" in value
        or ".." in value
        or value.startswith(".")
        or any(ord(c) < 32 or ord(c) == 127 for c in value)
    ):
        raise ValueError(f"{value!r} is not a plain name (no '/', no '..', not empty, not starting with '.')")
    return value


Segment = Annotated[str, Field(max_length=253), AfterValidator(_segment)]


class CacheRoot:
    """The tile cache volume: an existing directory every cache path must stay inside."""

    def __init__(self, root: str | os.PathLike[str]):
        path = Path(root)
        if not path.is_dir():
            raise JobError(f"cache root {str(path)!r} does not exist or is not a directory")
        self.root = path.resolve()

    def inside(self, path: Path) -> bool:
        return path == self.root or self.root in path.parents


# ---------------------------------------------------------------------------------------------
# cache-seed


class SeedParams(KModel):
    """What to seed: the service's MapCache XML (possibly trimmed to the tilesets), tilesets (= datasets),
    one grid, zoom levels and an optional WGS84 extent."""

    service: Segment
    config_xml: str = Field(min_length=1, max_length=2_000_000)
    tilesets: list[Segment] = Field(min_length=1, max_length=1000)
    grid: Literal["GoogleMapsCompatible", "WGS84"] = "GoogleMapsCompatible"
    min_zoom: int = Field(0, ge=0)
    max_zoom: int = Field(ge=0)
    extent: list[float] | None = Field(None, min_length=4, max_length=4)
    # per tileset (its dataset's extent) where `extent` is not set
    extents: dict[str, list[float]] | None = Field(None, max_length=1000)
    threads: int = Field(2, ge=1, le=8)

    def extent_of(self, tileset: str) -> list[float] | None:
        return self.extent or (self.extents or {}).get(tileset)

    @model_validator(mode="after")
    def _ranges(self) -> SeedParams:
        top = tile_grid(self.grid).max_zoom
        if not self.min_zoom <= self.max_zoom <= top:
            raise ValueError(
                f"zoom levels must satisfy 0 <= minZoom <= maxZoom <= {top} for grid {self.grid}"
            )
        for e in [self.extent, *(self.extents or {}).values()]:
            if e is not None:
                validate_wgs84_extent(e)
        if len(set(self.tilesets)) != len(self.tilesets):
            raise ValueError("tilesets must not repeat")
        return self


_PREFIX = re.compile(re.escape(DEFAULT_CACHE_ROOT) + r"(?=[/<\"'\s]|$)")


def rewrite_cache_root(xml: str, cache_root: str) -> str:
    """`xml` with every path starting with /var/cache/mapcache moved under `cache_root`."""
    root = cache_root.rstrip("/")
    escaped = root.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _PREFIX.sub(lambda _m: escaped, xml)


def _storage(doc: ET.Element, tileset: ET.Element) -> tuple[str, Path]:
    """(cache type, base directory or sqlite file) of a tileset's cache."""
    name = (tileset.findtext("cache") or "").strip()
    cache = next((c for c in doc.findall("cache") if c.get("name") == name), None)
    if cache is None:
        raise JobError(f"tileset {tileset.get('name')!r} uses cache {name!r}, which the configuration lacks")
    kind = cache.get("type", "")
    tag = {"disk": "base", "sqlite3": "dbfile"}.get(kind)
    text = (cache.findtext(tag) or "").strip() if tag else ""
    if not text:
        raise JobError(f"cache {name!r} (type {kind!r}) is not a disk (<base>) or sqlite3 (<dbfile>) cache")
    return kind, Path(os.path.normpath(text))


def _check_config(xml: str, params: SeedParams, root: CacheRoot) -> dict[str, Path]:
    """Validate the (rewritten) XML against the params; {tileset: its dataset directory}."""
    try:
        doc = ET.fromstring(xml)
    except ET.ParseError as e:
        raise JobError(f"configXml is not valid XML: {e}") from None
    if doc.tag != "mapcache":
        raise JobError(f"configXml must be a <mapcache> document, not <{doc.tag}>")
    tilesets = {t.get("name", ""): t for t in doc.findall("tileset")}
    dirs: dict[str, Path] = {}
    for name in params.tilesets:
        ts = tilesets.get(name)
        if ts is None:
            known = ", ".join(sorted(tilesets)) or "none"
            raise JobError(f"unknown tileset {name!r} (the configuration has: {known})")
        grids = [(g.text or "").strip() for g in ts.findall("grid")]
        if params.grid not in grids:
            raise JobError(
                f"tileset {name!r} is not configured for grid {params.grid} (it has: {', '.join(grids)})"
            )
        _, path = _storage(doc, ts)
        dataset_dir = root.root / params.service / name
        if dataset_dir not in path.parents:
            raise JobError(f"the cache of tileset {name!r} ({path}) is not under {dataset_dir}")
        dirs[name] = dataset_dir
    return dirs


def _lock_dir(xml: str, workdir: Path) -> str:
    """Keep the configured <lock_dir> if it exists; otherwise lock in `workdir` (a pod has no /tmp/...)."""
    m = re.search(r"<lock_dir>\s*([^<]*?)\s*</lock_dir>", xml)
    if m and Path(m.group(1)).is_dir():
        return xml
    locks = workdir / "locks"
    locks.mkdir(exist_ok=True)
    if m:
        return xml[: m.start(1)] + str(locks) + xml[m.end(1) :]
    return xml.replace("</mapcache>", f"<lock_dir>{locks}</lock_dir></mapcache>", 1)


def _tree_bytes(path: Path) -> int:
    """Bytes of the regular files under `path` (symlinks not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, f))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total


def _pty_lines(stream: BinaryIO) -> Iterator[str]:
    """Non-empty lines read from a pty master until the child closed it (EIO)."""
    buf = b""
    while True:
        try:
            chunk = stream.read(65536)
        except OSError as e:
            if e.errno != errno.EIO:
                raise
            chunk = b""
        if not chunk:
            break
        buf += chunk
        *lines, buf = re.split(rb"[\r\n]+", buf)
        yield from (t for raw in lines if (t := raw.decode("utf-8", "replace").strip()))
    if t := buf.decode("utf-8", "replace").strip():
        yield t


PROGRESS = re.compile(r"seeded (\d+) tiles \((\d+) skipped\), now at z(\d+)")
SUMMARY = re.compile(r"seeded (\d+) metatiles \((\d+) total tiles, (\d+) non-empty tiles\)")


def _seed_one(
    config: Path,
    tileset: str,
    params: SeedParams,
    extent: tuple[float, ...] | None,
    failed_log: Path,
    log: Logger,
    expected: int,
    done_before: int,
    total: int,
) -> tuple[int, int]:
    """Run mapcache_seed for one tileset: (tiles seeded, non-empty tiles); JobError or RuntimeError."""
    cmd = [
        MAPCACHE_SEED,
        "-c",
        str(config),
        "-t",
        tileset,
        "-g",
        params.grid,
        "-z",
        f"{params.min_zoom},{params.max_zoom}",
        "-n",
        str(params.threads),
        "-b",
        "-L",
        str(failed_log),
    ]
    if extent is not None:
        cmd += ["-e", ",".join(repr(float(v)) for v in extent)]
    log.info("seeding", tileset=tileset, command=" ".join(cmd), expectedTiles=expected)
    # stdout on a pty: mapcache_seed's printf output is then line-buffered, so progress arrives live
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE)
    except FileNotFoundError:
        os.close(master)
        raise RuntimeError(f"{MAPCACHE_SEED} not found (Debian package mapcache-tools)") from None
    finally:
        os.close(slave)
    errors: deque[str] = deque(maxlen=20)

    def drain_stderr() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            if line := raw.decode("utf-8", "replace").strip():
                errors.append(line)

    reader = threading.Thread(target=drain_stderr, daemon=True)
    reader.start()
    head: list[str] = []
    tail: deque[str] = deque(maxlen=5)
    seeded = nonempty = 0
    with os.fdopen(master, "rb", buffering=0) as stdout:
        for line in _pty_lines(stdout):
            if len(head) < 5:
                head.append(line)
            tail.append(line)
            if m := PROGRESS.search(line):
                done = int(m.group(1)) + int(m.group(2))
                log.info(
                    "seeding",
                    tileset=tileset,
                    tiles=int(m.group(1)),
                    skipped=int(m.group(2)),
                    zoom=int(m.group(3)),
                    progress=round(min((done_before + done) / max(total, 1), 1.0), 3),
                )
            elif m := SUMMARY.search(line):
                seeded, nonempty = int(m.group(2)), int(m.group(3))
    code = proc.wait()
    reader.join(timeout=5)
    if "options:" in head:  # mapcache_seed printed its usage: it refused the arguments or the configuration
        reason = " ".join(head[1 : head.index("options:")]) or "bad arguments"
        raise JobError(f"mapcache_seed refused tileset {tileset!r}: {reason}")
    if code != 0:
        detail = "; ".join(list(errors)[-5:]) or "; ".join(tail) or "no output"
        raise RuntimeError(f"mapcache_seed failed for tileset {tileset!r} (exit {code}): {detail}")
    for line in list(errors)[-5:]:
        log.warning("mapcache_seed: " + line, tileset=tileset)
    return seeded, nonempty


def wait_for_sources(xml: str, log: Logger, timeout: float | None = None) -> None:
    """Wait (bounded: KMS_SEED_SOURCE_WAIT seconds, default 120) until every WMS source of the
    configuration answers GetCapabilities: a seed created with a new service may start before its
    MapServer pods are ready. After the wait, seeding goes on and fails with mapcache_seed's reason."""
    if timeout is None:
        timeout = float(os.environ.get("KMS_SEED_SOURCE_WAIT", SOURCE_WAIT_SECONDS))
    urls = sorted({el.text.strip() for el in ET.fromstring(xml).iter("url") if el.text})
    deadline = time.monotonic() + timeout
    for url in urls:
        probe = url + ("&" if "?" in url else "?") + "SERVICE=WMS&REQUEST=GetCapabilities"
        waited, last = False, ""
        while True:
            try:
                with urllib.request.urlopen(probe, timeout=10) as r:
                    if r.status == 200:
                        break
                    last = f"HTTP {r.status}"
            except (OSError, ValueError) as e:
                last = str(e)
            if time.monotonic() > deadline:
                log.warning("the tile source does not answer; seeding anyway", url=url, error=last)
                break
            if not waited:
                log.info("waiting for the tile source", url=url)
                waited = True
            time.sleep(2)


def seed(params: SeedParams, root: CacheRoot, log: Logger) -> dict[str, Any]:
    """Seed every tileset in turn (each with `threads` concurrent tile requests)."""
    xml = rewrite_cache_root(params.config_xml, str(root.root))
    dirs = _check_config(xml, params, root)
    wait_for_sources(xml, log)
    g = tile_grid(params.grid)
    extents = {n: params.extent_of(n) for n in params.tilesets}
    expected = {n: tile_count(params.grid, params.min_zoom, params.max_zoom, e) for n, e in extents.items()}
    total = sum(expected.values())
    tiles = nonempty = failed = 0
    per: dict[str, dict[str, int]] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kms-seed-") as tmp:
        work = Path(tmp)
        config = work / "mapcache.xml"
        config.write_text(_lock_dir(xml, work))
        for i, name in enumerate(params.tilesets):
            failed_log = work / f"failed-{i}.txt"
            extent = g.from_wgs84(extents[name]) if extents[name] is not None else None
            done_before = sum(expected[n] for n in params.tilesets[:i])
            seeded, ne = _seed_one(
                config, name, params, extent, failed_log, log, expected[name], done_before, total
            )
            tiles, nonempty = tiles + seeded, nonempty + ne
            per[name] = {"tiles": seeded, "bytes": _tree_bytes(dirs[name]) if dirs[name].exists() else 0}
            if failed_log.exists():
                failed += sum(1 for line in failed_log.read_text().splitlines() if line.strip())
            log.info("seeded", tileset=name, tiles=seeded, progress=round((i + 1) / len(params.tilesets), 3))
    seconds = time.monotonic() - started
    if failed:
        log.warning("some tiles failed to seed (they are rendered on demand)", failedTiles=failed)
    return {
        "tiles": tiles,
        "nonEmptyTiles": nonempty,
        "expectedTiles": total,
        "failedTiles": failed,
        "seconds": round(seconds, 3),
        "tilesPerSecond": round(tiles / seconds, 1) if seconds > 0 else 0.0,
        "bytes": sum(_tree_bytes(d) for d in dirs.values() if d.exists()),
        # per dataset (what lands in each MapDataset's status); big runs keep only the totals
        **({"perTileset": per} if len(per) <= 40 else {}),
        "levels": list(range(params.min_zoom, params.max_zoom + 1)),
        "grid": params.grid,
        "tilesets": params.tilesets,
    }


# ---------------------------------------------------------------------------------------------
# cache-purge


class PurgeParams(KModel):
    """{dataset: version to keep, or null to delete the dataset's whole cache}."""

    service: Segment
    datasets: dict[Segment, Segment | None] = Field(min_length=1, max_length=1000)


def _remove(path: Path) -> tuple[int, int]:
    """Delete a file, symlink or directory tree without following symlinks; (entries removed, bytes)."""
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        path.unlink()
        return 1, st.st_size if stat.S_ISREG(st.st_mode) else 0
    files = size = 0
    with os.scandir(path) as it:
        for entry in it:
            n, b = _remove(Path(entry.path))
            files, size = files + n, size + b
    path.rmdir()
    return files, size


def purge(params: PurgeParams, root: CacheRoot, log: Logger) -> dict[str, Any]:
    """For each dataset, delete everything under `<root>/<service>/<dataset>/` except the kept version
    (`<v>/` or `<v>.sqlite3` and its journal files); with null, the dataset directory itself too."""
    service_dir = root.root / params.service
    if service_dir.is_symlink():
        raise JobError(f"{service_dir} is a symlink; refusing to purge through it")
    plans: list[tuple[str, Path, str | None]] = []
    for name, keep in params.datasets.items():
        d = service_dir / name
        if d.is_symlink():
            raise JobError(f"{d} is a symlink; refusing to purge through it")
        plans.append((name, d, keep))
    removed = freed = present = 0
    for name, d, keep in plans:
        if not d.exists():
            log.info("nothing cached", dataset=name)
            continue
        present += 1
        if keep is None:
            n, b = _remove(d)
        else:
            kept = {keep} | {keep + s for s in SQLITE_SUFFIXES}
            n = b = 0
            for entry in sorted(d.iterdir()):
                if entry.name not in kept:
                    en, eb = _remove(entry)
                    n, b = n + en, b + eb
        removed, freed = removed + n, freed + b
        log.info("purged", dataset=name, kept=keep, removedFiles=n, bytes=b)
    return {"removedFiles": removed, "bytes": freed, "datasets": present}
