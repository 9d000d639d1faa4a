"""What an uploaded file really is, before it is placed on the data volume: the declared content type
and the bytes must match the file name's extension (415 otherwise), GeoJSON must be a JSON object of
bounded nesting, and a TIFF must not be a decompression bomb (422). Pure functions over a file."""

from __future__ import annotations

import json
import re
import struct
from itertools import accumulate
from pathlib import Path

from .errors import Problem

GENERIC_TYPES = {"", "application/octet-stream", "binary/octet-stream"}
JSON_TYPES = {
    "application/geo+json",
    "application/vnd.geo+json",
    "application/json",
    "text/json",
    "text/plain",
}
TIFF_TYPES = {"image/tiff", "image/geotiff", "application/geotiff", "image/x-geotiff", "image/tiff-fx"}
FORMATS: dict[str, tuple[str, set[str]]] = {  # extension → (format name, declared types besides generic)
    ".tif": ("GeoTIFF", TIFF_TYPES),
    ".tiff": ("GeoTIFF", TIFF_TYPES),
    ".nc": ("NetCDF", {"application/x-netcdf", "application/netcdf", "application/x-netcdf4"}),
    ".gpkg": (
        "GeoPackage",
        {"application/geopackage+sqlite3", "application/x-sqlite3", "application/vnd.sqlite3"},
    ),
    ".geojson": ("GeoJSON", JSON_TYPES),
    ".json": ("GeoJSON", JSON_TYPES),
    ".fgb": ("FlatGeobuf", {"application/flatgeobuf", "application/x-flatgeobuf"}),
}
MAGIC = {
    "GeoTIFF": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),  # classic and BigTIFF
    "NetCDF": (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n"),  # classic, 64-bit, CDF5, NetCDF-4
    "GeoPackage": (b"SQLite format 3\x00",),
    "FlatGeobuf": (b"fgb\x03fgb",),
}
GEOJSON_TYPES = {
    "FeatureCollection",
    "Feature",
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
    "GeometryCollection",
}
MAX_JSON_DEPTH = 32  # a FeatureCollection of MultiPolygons needs 7; GDAL's JSON parser stops at 32 too
FULL_PARSE_BYTES = 16 * 1024 * 1024  # smaller GeoJSON is parsed completely; larger is scanned
MAX_TIFF_RATIO = 1000  # uncompressed size / file size ...
MAX_TIFF_QUIET_BYTES = 1024**3  # ... only matters above 1 GiB uncompressed
CHUNK = 1024 * 1024

_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
_NOT_BRACKETS = bytes(range(256)).translate(None, b"[]{}")  # every byte but the brackets: deleted below
_DELTA = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def media_type(declared: str | None) -> str:
    return (declared or "").split(";")[0].strip().lower()


def check(path: Path, extension: str, declared: str | None) -> None:
    """Raise Problem 415/422 (field `file`) unless the file at `path` is what `extension` promises."""
    fmt, types = FORMATS[extension]
    mtype = media_type(declared)
    if mtype not in GENERIC_TYPES and mtype not in types:
        raise Problem(
            415, f"the file is declared as {mtype!r}, which is not a {fmt} type ({extension})", "file"
        )
    with open(path, "rb") as f:
        head = f.read(64)
    if fmt == "GeoJSON":
        _check_geojson(path, head)
        return
    if not head.startswith(MAGIC[fmt]):
        raise Problem(415, f"the file's content is not {fmt} (as its name {extension} says)", "file")
    if fmt == "GeoTIFF":
        _check_tiff(path)


# ------------------------------------------------------------------ GeoJSON


def _check_geojson(path: Path, head: bytes) -> None:
    start = head[3:] if head.startswith(b"\xef\xbb\xbf") else head
    if not start.lstrip(b" \t\r\n").startswith(b"{"):
        raise Problem(415, "the file's content is not GeoJSON (a JSON object)", "file")
    size = path.stat().st_size
    depth = _max_depth(path)
    if depth < 0:
        raise Problem(415, "the file is not valid JSON: its strings or brackets do not balance", "file")
    if depth > MAX_JSON_DEPTH:
        raise Problem(
            422, f"the GeoJSON is nested {depth} levels deep; at most {MAX_JSON_DEPTH} are allowed", "file"
        )
    if size <= FULL_PARSE_BYTES:
        try:
            doc = json.loads(path.read_bytes().decode("utf-8-sig"))
        except (ValueError, UnicodeDecodeError) as e:
            raise Problem(415, f"the file is not valid JSON: {str(e)[:200]}", "file") from None
        if not isinstance(doc, dict) or doc.get("type") not in GEOJSON_TYPES:
            raise Problem(415, "the JSON is not GeoJSON: its 'type' is not a GeoJSON type", "file")


def _max_depth(path: Path) -> int:
    """Deepest nesting of [] and {} outside strings; -1 when strings or brackets do not balance.

    Streams the file in linear time: escape pairs, then whole strings are cut out with regexes, the
    brackets left are summed in C (itertools.accumulate); a file of the upload limit takes seconds."""
    deepest, depth, carry = 0, 0, b""
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            buf = _ESCAPE.sub(b"", carry + chunk)  # no quote left inside a string but its delimiters
            tail = b""
            if buf.endswith(b"\\"):  # an escape cut by the chunk's end: finish it with the next one
                buf, tail = buf[:-1], b"\\"
            buf = _STRING.sub(b"", buf)
            quote = buf.find(b'"')
            if quote >= 0:  # a string runs on into the next chunk (its content does not matter)
                buf, carry = buf[:quote], b'"' + tail
            else:
                carry = tail
            brackets = buf.translate(None, _NOT_BRACKETS)
            if brackets:
                levels = list(accumulate(map(_DELTA.__getitem__, brackets), initial=depth))
                if min(levels) < 0:
                    return -1
                depth, deepest = levels[-1], max(deepest, max(levels))
                if deepest > MAX_JSON_DEPTH:
                    return deepest
    return deepest if depth == 0 and not carry else -1


# ------------------------------------------------------------------ TIFF


_TYPES = {3: ("H", 2), 4: ("I", 4), 16: ("Q", 8)}  # SHORT, LONG, LONG8


def _check_tiff(path: Path) -> None:
    """A small file that decompresses to gigabytes (e.g. sparse or all-zero tiles) would make every
    GetMap inflate all of it: refused when its pixels need > 1000x the file size and > 1 GiB."""
    size = path.stat().st_size
    try:
        width, height, samples, bits = _tiff_shape(path)
    except (struct.error, ValueError, KeyError, OSError):
        raise Problem(415, "the file's content is not a readable TIFF (bad header)", "file") from None
    raw = width * height * samples * max(1, (bits + 7) // 8)
    if raw > MAX_TIFF_QUIET_BYTES and raw > MAX_TIFF_RATIO * max(size, 1):
        raise Problem(
            422,
            f"the TIFF is {width}x{height} pixels ({raw / 1024**3:.1f} GiB uncompressed) in a file of "
            f"{size / 1024**2:.1f} MiB: more than {MAX_TIFF_RATIO}x compression looks like a "
            "decompression bomb",
            "file",
        )


def _tiff_shape(path: Path) -> tuple[int, int, int, int]:
    """Width, height, samples per pixel and bits per sample of the first image (classic or BigTIFF)."""
    with open(path, "rb") as f:
        head = f.read(16)
        e = "<" if head[:2] == b"II" else ">"
        big = struct.unpack(e + "H", head[2:4])[0] == 43
        if big:
            off = struct.unpack(e + "Q", head[8:16])[0]
            f.seek(off)
            n = struct.unpack(e + "Q", f.read(8))[0]
            entry, count_fmt = 20, "Q"
        else:
            off = struct.unpack(e + "I", head[4:8])[0]
            f.seek(off)
            n = struct.unpack(e + "H", f.read(2))[0]
            entry, count_fmt = 12, "I"
        if not 0 < n <= 4096:
            raise ValueError("implausible IFD size")
        raw = f.read(n * entry)
    tags: dict[int, int] = {}
    for i in range(n):
        rec = raw[i * entry : (i + 1) * entry]
        tag, typ = struct.unpack(e + "HH", rec[:4])
        if tag not in (256, 257, 258, 277) or typ not in _TYPES:
            continue
        count = struct.unpack(e + count_fmt, rec[4 : 4 + struct.calcsize(count_fmt)])[0]
        value_at = 4 + struct.calcsize(count_fmt)
        code, width = _TYPES[typ]
        if count * width > struct.calcsize(count_fmt):  # e.g. BitsPerSample of 3 bands: an offset
            tags[tag] = 8 if tag == 258 else 0
            continue
        tags[tag] = struct.unpack(e + code, rec[value_at : value_at + width])[0]
    return tags[256], tags[257], tags.get(277, 1), tags.get(258, 1)
