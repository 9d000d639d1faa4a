"""Files in a ConfigMap, plain or gzipped: a ConfigMap holds at most 1 MiB, so a large file (a
mapfile of thousands of layers, a tile cache configuration) is stored gzipped in binaryData as
`<name>.gz`. Shared by the operator (which writes them) and the facade (which reads them)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import struct
import zlib
from collections.abc import Iterable, Mapping
from typing import NamedTuple

MAX_PLAIN = 256 * 1024  # bytes: above this a file is stored gzipped (about 10x smaller)
WRITE_BATCH = 32 * 1024  # characters FileWriter gathers before it encodes and compresses them
MAPFILE = "service.map"  # the mapfile in a MapService's mapfile ConfigMap (<service>-mapfile-<hash>)


def put_file(configmap: dict, name: str, text: str, max_plain: int = MAX_PLAIN) -> None:
    """Add file `name` to the ConfigMap: in data, or gzipped in binaryData when larger than max_plain."""
    raw = text.encode()
    if len(raw) > max_plain:
        packed = base64.b64encode(gzip.compress(raw, 6, mtime=0)).decode()
        configmap.setdefault("binaryData", {})[name + ".gz"] = packed
    else:
        configmap.setdefault("data", {})[name] = text


class PackedFile(NamedTuple):
    """A file as put_file() stores it (`text` when small, else `gzip_b64`), its sha256 so far, and
    which of the watched substrings its text contains."""

    text: str | None
    gzip_b64: str | None
    sha256: hashlib._Hash
    found: frozenset[str]


# gzip.compress(data, 6, mtime=0) is this header, raw deflate at level 6, then CRC-32 and size
_GZIP_HEADER = bytes.fromhex("1f8b0800000000000003")


class FileWriter:
    """Text written line by line into what put_file() would store, byte for byte, without ever
    holding a large file whole: past max_plain it is only gzipped (and hashed) as it comes. A
    mapfile of 10,000 layers is ~18 MB of text and ~300 KB stored."""

    def __init__(self, watch: Iterable[str] = (), max_plain: int = MAX_PLAIN):
        self.watch, self.max_plain = tuple(watch), max_plain
        self.sha = hashlib.sha256()
        self.deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.crc = self.size = 0
        self.small: list[str] | None = []  # the text while it may still be stored plain
        self.gz: list[bytes] = []
        self.found: set[str] = set()
        self.pending: list[str] = []  # lines not yet encoded, hashed and compressed (one batch)
        self.pending_chars = 0

    def write(self, text: str) -> None:
        """Add text (each watched substring must lie within one write: write whole lines)."""
        self.pending.append(text)
        self.pending_chars += len(text)
        if self.pending_chars >= WRITE_BATCH:
            self._flush()

    def _flush(self) -> None:
        """Encode, hash and compress the pending lines at once (per line, that costs ~3x as much)."""
        if not self.pending:
            return
        text = "".join(self.pending)
        self.pending, self.pending_chars = [], 0
        raw = text.encode()
        self.sha.update(raw)
        self.crc = zlib.crc32(raw, self.crc)
        self.size += len(raw)
        chunk = self.deflate.compress(raw)
        if chunk:  # (mostly empty: deflate emits in blocks)
            self.gz.append(chunk)
        self.found.update(w for w in self.watch if w in text)
        if self.small is not None:
            self.small.append(text)
            if self.size > self.max_plain:
                self.small = None

    def packed(self) -> PackedFile:
        """The file as stored (the end of writing: call once)."""
        self._flush()
        if self.small is not None:
            return PackedFile("".join(self.small), None, self.sha, frozenset(self.found))
        trailer = struct.pack("<LL", self.crc, self.size & 0xFFFFFFFF)
        gz = b"".join([_GZIP_HEADER, *self.gz, self.deflate.flush(), trailer])
        self.gz = []
        return PackedFile(None, base64.b64encode(gz).decode(), self.sha, frozenset(self.found))


def pack_file(text: str, watch: Iterable[str] = (), max_plain: int = MAX_PLAIN) -> PackedFile:
    writer = FileWriter(watch, max_plain)
    writer.write(text)
    return writer.packed()


def put_packed(configmap: dict, name: str, packed: PackedFile) -> None:
    """put_file() for a file written with FileWriter."""
    if packed.text is not None:
        configmap.setdefault("data", {})[name] = packed.text
    else:
        configmap.setdefault("binaryData", {})[name + ".gz"] = packed.gzip_b64


def gzipped_lines(binary_data: Mapping | None, name: str) -> Iterable[str] | None:
    """The lines of gzipped file `name`, decompressed piece by piece (None if not gzipped there)."""
    packed = (binary_data or {}).get(name + ".gz")
    if packed is None:
        return None

    def lines() -> Iterable[str]:
        inflate, rest, pending = zlib.decompressobj(31), b"", base64.b64decode(packed)
        while pending:  # at most 64 KB of text at a time (it inflates ~60x)
            rest += inflate.decompress(pending, 1 << 16)
            pending = inflate.unconsumed_tail
            *whole, rest = rest.split(b"\n")
            for line in whole:
                yield line.decode() + "\n"
        rest += inflate.flush()
        if rest:
            yield rest.decode()

    return lines()


def read_file(data: Mapping | None, binary_data: Mapping | None, name: str) -> str | None:
    """File `name` of a ConfigMap's data / binaryData, plain or gzipped (the inverse of put_file)."""
    if binary_data and name + ".gz" in binary_data:
        return gzip.decompress(base64.b64decode(binary_data[name + ".gz"])).decode()
    return (data or {}).get(name)


def is_gzipped(configmap: Mapping, name: str) -> bool:
    return name + ".gz" in (configmap.get("binaryData") or {})


def read_mapfile(configmap: Mapping) -> str | None:
    """The mapfile text of a MapService's mapfile ConfigMap (as read from the API)."""
    return read_file(configmap.get("data"), configmap.get("binaryData"), MAPFILE)
