"""The LAYER blocks of a mapfile, one per dataset (raster classes from colour ramps, vector
styles, OGC metadata), and the text primitives every mapfile string goes through (`quote()`).
Pure; golden-tested through mapfile.py."""

from __future__ import annotations

import functools
import hashlib
import io
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from kms_crds.mapdataset import MapDatasetSpec, MapDatasetStatus, Style

DATA_MOUNT = "/data"

BASE_SRS = ("EPSG:4326", "EPSG:3857", "EPSG:3035", "EPSG:25832", "EPSG:25833", "EPSG:32633")
DEFAULT_EXTENT = (-180.0, -90.0, 180.0, 90.0)
DEFAULT_FILL = (51, 136, 255)  # #3388ff
DEFAULT_OUTLINE = (64, 64, 64)
DEFAULT_CLASSES = 8

# Anchor colours of the ramps, evenly spaced; colours in between are interpolated linearly.
RAMPS: dict[str, tuple[str, ...]] = {
    "viridis": ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"),
    "magma": ("#000004", "#3b0f70", "#8c2981", "#de4968", "#fe9f6d", "#fcfdbf"),
    "terrain": ("#333399", "#0099ff", "#00cc66", "#ffff99", "#805c54", "#ffffff"),
    "greys": ("#ffffff", "#000000"),
    "blues": ("#f7fbff", "#c6dbef", "#6baed6", "#2171b5", "#08306b"),
    "rdylbu": ("#a50026", "#f46d43", "#fee090", "#e0f3f8", "#74add1", "#313695"),
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EPSG = re.compile(r"^EPSG:([0-9]{4,6})$", re.IGNORECASE)
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class DatasetInput:
    """What the mapfile needs to know about one Ready dataset."""

    name: str  # metadata.name of the MapDataset
    spec: MapDatasetSpec
    status: MapDatasetStatus  # inspection results: extent, wgs84_bbox, geometry_type, band_count, value_range


@dataclass(frozen=True)
class LayerRef:
    """A dataset known by what orders and frames the map; `load()` gives its DatasetInput when its
    LAYER is written, so a 10,000-layer build holds one parsed dataset at a time, not 10,000."""

    name: str
    layer: str  # layer_name(spec.identifier)
    native_crs: str | None
    wgs84_bbox: list[float] | None
    load: Callable[[], DatasetInput | None]  # None: left out after all (no longer valid)


def layer_ref(ds: DatasetInput) -> LayerRef:
    return LayerRef(
        ds.name, layer_name(ds.spec.identifier), _native_crs(ds), ds.status.wgs84_bbox, lambda: ds
    )


# ---------------------------------------------------------------------------------------------- primitives


def layer_name(identifier: str) -> str:
    """The OGC layer name of a dataset identifier: [A-Za-z0-9_.-], starting with a letter or underscore."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", identifier)
    return name if re.match(r"[A-Za-z_]", name) else "l_" + name


def quote(value: str) -> str:
    """A MapServer string literal: control characters become spaces, backslash and double quote escaped."""
    if value.isprintable() and "\\" not in value and '"' not in value:  # (most: nothing to change)
        return f'"{value}"'
    text = _CONTROL.sub(" ", value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def mapfile_hash(text: str) -> str:
    """Short content hash of a mapfile (first 10 hex digits of its sha256)."""
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _num(x: float) -> str:
    """A finite number as MapServer reads it (integral values without a fraction)."""
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"not a finite number: {x!r}")
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


def _finite(values: Iterable[float] | None) -> bool:
    return values is not None and all(math.isfinite(float(v)) for v in values)


def _rgb(hex_color: str | None, default: tuple[int, int, int]) -> tuple[int, int, int]:
    if not hex_color or not _HEX.match(hex_color):
        return default
    return tuple(int(hex_color[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def _color(rgb: tuple[int, int, int]) -> str:
    return " ".join(str(int(c)) for c in rgb)


@functools.lru_cache(maxsize=256)
def ramp_colors(ramp: str, n: int) -> tuple[tuple[int, int, int], ...]:
    """`n` colours sampled evenly from a ramp, from its first to its last anchor."""
    anchors = [_rgb(c, (0, 0, 0)) for c in RAMPS.get(ramp, RAMPS["viridis"])]
    out = []
    for i in range(n):
        t = i / (n - 1) if n > 1 else 0.0
        pos = t * (len(anchors) - 1)
        k = min(int(pos), len(anchors) - 2)
        f = pos - k
        a, b = anchors[k], anchors[k + 1]
        out.append(tuple(round(a[j] + (b[j] - a[j]) * f) for j in range(3)))
    return tuple(out)  # type: ignore[return-value]


class TextSink(Protocol):
    def write(self, text: str, /) -> object: ...


class _Writer:
    """Lines of a mapfile with indentation; `block()` opens KEYWORD ... END. Written into one buffer
    (10,000 layers are ~400,000 lines: as separate strings they would cost ~3x the text), or line
    by line into `out` (a FileWriter: gzipped as it comes, never held whole)."""

    def __init__(self, out: TextSink | None = None) -> None:
        self.buffer: TextSink = out if out is not None else io.StringIO()
        self.write = self.buffer.write  # whole lines only (a FileWriter looks for words per write)
        self.depth, self.indent = 0, ""

    def line(self, *parts: str) -> None:
        self.write(self.indent + " ".join(parts) + "\n")

    def block(self, *head: str) -> _Block:
        self.line(*head)
        self.depth += 1
        self.indent = "  " * self.depth
        return _Block(self)

    def metadata(self, items: Iterable[tuple[str, str]]) -> None:
        with self.block("METADATA"):
            for key, value in items:
                self.line(quote(key), quote(value))

    def text(self) -> str:
        """The text written (empty when it went to `out`)."""
        return self.buffer.getvalue() if isinstance(self.buffer, io.StringIO) else ""


class _Block:
    """`with w.block(...)`: writes END when the block's body is written (a class, not a
    @contextmanager: a 10,000-layer mapfile opens ~190,000 blocks)."""

    __slots__ = ("w",)

    def __init__(self, w: _Writer) -> None:
        self.w = w

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        w = self.w
        w.depth -= 1
        w.indent = "  " * w.depth
        w.line("END")


# ---------------------------------------------------------------------------------------------- datasets


def epsg(code: str | None) -> str | None:
    """EPSG:NNNN (normalised) when `code` is one, else None."""
    m = _EPSG.match(code or "")
    return f"EPSG:{m.group(1)}" if m else None


def _native_crs(ds: DatasetInput) -> str | None:
    return epsg(ds.spec.projection) or epsg(ds.status.extent.crs if ds.status.extent else None)


def _srs_list(extra: Iterable[str | None]) -> str:
    more = sorted({c for c in extra if c and c not in BASE_SRS}, key=lambda c: int(c.split(":")[1]))
    return " ".join([*BASE_SRS, *more])


def _source(spec: MapDatasetSpec, data_root: str) -> str:
    if spec.source.path:
        return f"{data_root.rstrip('/')}/{spec.source.path}"
    if spec.source.url:
        return "/vsicurl/" + spec.source.url
    raise ValueError(f"dataset {spec.identifier!r} has neither source.path nor source.url")


def _value_range(style: Style, status: MapDatasetStatus) -> tuple[float, float]:
    for r in (style.range, status.value_range):
        if r is not None and _finite((r.min, r.max, r.max - r.min)):
            lo, hi = float(r.min), float(r.max)
            return (lo, hi) if hi > lo else (lo, lo + 1.0)
    return 0.0, 255.0


def _round(x: float) -> float:
    return float(f"{x:.12g}")


def _raster(w: _Writer, ds: DatasetInput, style: Style, data_root: str) -> None:
    w.line("TYPE RASTER")
    w.line("DATA", quote(_source(ds.spec, data_root)))
    bands = style.bands or []
    if bands:
        w.line("PROCESSING", quote("BANDS=" + ",".join(str(int(b)) for b in bands)))
    if style.nodata is not None:
        v = float(style.nodata)
        w.line("PROCESSING", quote("NODATA=" + (_num(v) if math.isfinite(v) else repr(v))))
    # A ramp applies when asked for, or by default to single-band data drawn without explicit bands.
    if style.color_ramp or (not bands and ds.status.band_count == 1):
        lo, hi = _value_range(style, ds.status)
        n = max(1, min(int(style.classes or DEFAULT_CLASSES), 256))
        # Classify 256 buckets of the range instead of evaluating every class expression per pixel:
        # ~25x faster for non-8-bit data (measured: 127 ms -> 5 ms for a 256x256 GetMap).
        w.line("PROCESSING", quote(f"SCALE={_num(lo)},{_num(hi)}"))
        w.line("PROCESSING", quote("SCALE_BUCKETS=256"))
        w.write(_ramp_classes(lo, hi, n, str(style.color_ramp or "viridis"), w.depth))
    elif style.range is not None or (len(bands) == 1 and ds.status.value_range is not None):
        lo, hi = _value_range(style, ds.status)
        w.line("PROCESSING", quote(f"SCALE={_num(lo)},{_num(hi)}"))


@functools.lru_cache(maxsize=256)
def _ramp_classes(lo: float, hi: float, n: int, ramp: str, depth: int) -> str:
    """The CLASS blocks of a colour ramp: the same text for every dataset drawn alike (a catalogue
    of thousands has a handful of styles), so made once per style."""
    w = _Writer()
    w.depth, w.indent = depth, "  " * depth
    edges = [_round(lo + (hi - lo) * i / n) for i in range(n)] + [hi]
    for i, color in enumerate(ramp_colors(ramp, n)):
        a, b = edges[i], edges[i + 1]
        op = "<=" if i == n - 1 else "<"
        with w.block("CLASS"):
            w.line("NAME", quote(f"{a:g} - {b:g}"))
            w.line(f"EXPRESSION ([pixel] >= {_num(a)} AND [pixel] {op} {_num(b)})")
            with w.block("STYLE"):
                w.line("COLOR", _color(color))
    return w.text()


FID_ITEM = "kms_fid"  # the OGR FID as an attribute: the WFS feature id of vectors without source.featureId


def _feature_id(ds: DatasetInput) -> str | None:
    """The attribute that gives WFS features their id: source.featureId, else the OGR FID (when the
    source layer is known: named in the spec or found by the inspection)."""
    if ds.spec.source.feature_id:
        return ds.spec.source.feature_id
    return FID_ITEM if ds.spec.source.layer or ds.status.source_layer else None


def _vector(w: _Writer, ds: DatasetInput, style: Style, data_root: str) -> None:
    geometry = (ds.status.geometry_type or "").upper()
    kind = "POINT" if "POINT" in geometry else "LINE" if "LINE" in geometry else "POLYGON"
    w.line("TYPE", kind)
    w.line("CONNECTIONTYPE OGR")
    w.line("CONNECTION", quote(_source(ds.spec, data_root)))
    source_layer = ds.spec.source.layer or ds.status.source_layer
    if _feature_id(ds) == FID_ITEM and source_layer:
        # WFS features need an id: the OGR FID as an attribute (OGR SQL), left out of the answers
        sql_name = source_layer.replace('"', '""')
        w.line("DATA", quote(f'SELECT FID AS {FID_ITEM}, * FROM "{sql_name}"'))
    elif ds.spec.source.layer:
        w.line("DATA", quote(ds.spec.source.layer))
    outline = _rgb(style.outline_color, DEFAULT_OUTLINE)

    def draw(fill: tuple[int, int, int]) -> None:
        with w.block("STYLE"):
            if kind == "POINT":
                w.line("SYMBOL", quote("circle"))
                w.line("SIZE 8")
            w.line("COLOR", _color(fill))
            if kind == "LINE":
                w.line("WIDTH 2")
            else:
                w.line("OUTLINECOLOR", _color(outline))
                w.line("WIDTH 1")

    if style.class_item and style.vector_classes:
        w.line("CLASSITEM", quote(style.class_item))
        for vc in style.vector_classes:
            with w.block("CLASS"):
                w.line("NAME", quote(vc.name))
                w.line("EXPRESSION", quote(vc.value))
                draw(_rgb(vc.color, DEFAULT_FILL))
    else:
        with w.block("CLASS"):
            w.line("NAME", quote(ds.spec.title))
            draw(_rgb(style.color, DEFAULT_FILL))


def _layer(w: _Writer, ds: DatasetInput, data_root: str) -> None:
    spec, status = ds.spec, ds.status
    style = spec.style or Style()
    protocols = {str(p) for p in spec.protocols}
    native = _native_crs(ds)
    raster = str(spec.type) == "raster"
    with w.block("LAYER"):
        w.line("NAME", quote(layer_name(spec.identifier)))
        w.line("STATUS ON")
        meta = [("wms_title", spec.title), ("ows_title", spec.title)]
        if spec.abstract:
            meta.append(("wms_abstract", spec.abstract))
        if spec.keywords:
            meta.append(("wms_keywordlist", ",".join(spec.keywords)))
        meta.append(("ows_srs", _srs_list([native])))
        for proto, ns in (("WMS", "wms"), ("WCS", "wcs"), ("WFS", "wfs"), ("OGCAPI", "oga")):
            meta.append((f"{ns}_enable_request", "*" if proto in protocols else "!*"))
        if "WCS" in protocols:
            meta += [("wcs_label", spec.title), ("wcs_rangeset_name", "bands")]
        # queryable: GetFeatureInfo returns raster values (value_0..) and vector attributes
        meta += [("gml_include_items", "all"), ("wms_include_items", "all")]
        if not raster:
            meta.append(("wfs_title", spec.title))
            if "OGCAPI" in protocols:  # (without a description MapServer writes a warning in its place)
                meta.append(("oga_description", spec.abstract or spec.title))
                if spec.keywords:
                    meta.append(("oga_keywords", ",".join(spec.keywords)))
            feature_id = _feature_id(ds)
            if feature_id:
                meta.append(("gml_featureid", feature_id))
            if feature_id == FID_ITEM:
                meta += [("gml_exclude_items", FID_ITEM), ("wms_exclude_items", FID_ITEM)]
        extent = status.extent
        if extent and _finite(extent.bbox) and len(extent.bbox) == 4 and epsg(extent.crs) == native:
            # metadata, not a LAYER EXTENT: capabilities need no file access, and GetMap skips the
            # per-request extent projection a LAYER EXTENT costs (~0.7 ms of a 3 ms tile, measured)
            meta.append(("ows_extent", " ".join(_num(v) for v in extent.bbox)))
        meta.append(("kms_dataset", ds.name))
        w.metadata(meta)
        if native:
            with w.block("PROJECTION"):
                # "EPSG:n", not "init=epsg:n": the same CRS, parsed in half the time (a 1,000-layer
                # mapfile: 28 ms instead of 62 ms, paid by every FastCGI request)
                w.line(quote(native.upper()))
        else:
            w.line("PROJECTION AUTO END")
        scales = (("MINSCALEDENOM", style.min_scale_denom), ("MAXSCALEDENOM", style.max_scale_denom))
        for keyword, denom in scales:
            if denom is not None and _finite([denom]):
                w.line(keyword, _num(denom))
        if style.opacity < 100:
            with w.block("COMPOSITE"):
                w.line("OPACITY", str(max(0, int(style.opacity))))
        w.line("TEMPLATE", quote("ttt"))
        (_raster if raster else _vector)(w, ds, style, data_root)
