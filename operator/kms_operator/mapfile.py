"""Dataset specs -> a MapServer 8 mapfile (pure; golden-tested). Every user string is escaped.

The mapfile is written by a tiny block serializer instead of mappyfile/mapscript: both write some user
strings unescaped. Here every string that can come from a user goes through `quote()`, numbers are
formatted by Python and keywords come only from this module and mapfile_layers.py (the LAYERs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from kms_crds.mapservice import MapServiceSpec

from .mapfile_layers import (
    DATA_MOUNT,
    DEFAULT_EXTENT,
    RAMPS,
    DatasetInput,
    LayerRef,
    TextSink,
    _finite,
    _layer,
    _num,
    _srs_list,
    _Writer,
    epsg,
    layer_name,
    layer_ref,
    mapfile_hash,
    quote,
    ramp_colors,
)

__all__ = [
    "DATA_MOUNT",
    "DEFAULT_EXTENT",
    "RAMPS",
    "DatasetInput",
    "LayerRef",
    "build_config",
    "build_mapfile",
    "epsg",
    "layer_name",
    "layer_ref",
    "mapfile_hash",
    "ogcapi_root",
    "quote",
    "ramp_colors",
]


# ---------------------------------------------------------------------------------------------- map


def _map_extent(spec: MapServiceSpec, bboxes: Iterable[list[float] | None]) -> tuple[float, ...]:
    if spec.extent and len(spec.extent) == 4 and _finite(spec.extent):
        return tuple(spec.extent)
    boxes = [b for b in bboxes if b and _finite(b)]
    if not boxes:
        return DEFAULT_EXTENT
    # the union of the layers' boxes, kept within the globe (the root layer's geographic bounding
    # box in capabilities: a reprojected corner a hair beyond ±180/±90 would make it invalid)
    return (
        max(-180.0, min(b[0] for b in boxes)),
        max(-90.0, min(b[1] for b in boxes)),
        min(180.0, max(b[2] for b in boxes)),
        min(90.0, max(b[3] for b in boxes)),
    )


def ogcapi_root(service_name: str, base_url: str | None = None) -> str:
    """Where the service's OGC API - Features answers: `<base_url><service>/ogcapi` (the image's Apache
    hands any path ending in <alias>/ogcapi/... to MapServer's OGC API with that MAPS alias); without
    a base URL the root-relative /<service>/ogcapi."""
    return f"{(base_url or '').rstrip('/')}/{service_name}/ogcapi"


def build_mapfile(
    service_name: str,
    spec: MapServiceSpec,
    datasets: Sequence[DatasetInput | LayerRef],
    *,
    data_root: str = DATA_MOUNT,
    ogcapi_url: str | None = None,
    out: TextSink | None = None,
) -> str:
    """The mapfile of a service: one LAYER per dataset, sorted by layer name. Deterministic.
    Returned as text, or written line by line into `out` (then "" is returned).

    `ogcapi_url`: the OGC API root clients use (the status URL); MapServer 8.0 writes every link of
    its OGC API answers under it (its own guess is wrong below the landing page). Default: root-relative."""
    refs = [d if isinstance(d, LayerRef) else layer_ref(d) for d in datasets]
    ordered = sorted(refs, key=lambda r: (r.layer, r.name))
    title = spec.title or service_name
    srs = _srs_list(r.native_crs for r in ordered)
    w = _Writer(out)
    with w.block("MAP"):
        w.line("NAME", quote(service_name))
        w.line("STATUS ON")
        w.line("SIZE 256 256")
        w.line("MAXSIZE", str(int(spec.mapserver.max_size)))
        w.line("UNITS DD")
        w.line("EXTENT", *(_num(v) for v in _map_extent(spec, (r.wgs84_bbox for r in ordered))))
        with w.block("PROJECTION"):
            w.line(quote("init=epsg:4326"))
        w.line("IMAGETYPE", quote("png"))
        for name, driver, mime, mode, ext in (
            ("png", "AGG/PNG", "image/png", "RGBA", "png"),
            ("jpeg", "AGG/JPEG", "image/jpeg", "RGB", "jpg"),
            ("GTiff", "GDAL/GTiff", "image/tiff", "FLOAT32", "tif"),  # WCS: source values, not colours
        ):
            with w.block("OUTPUTFORMAT"):
                w.line("NAME", quote(name))
                w.line("DRIVER", quote(driver))
                w.line("MIMETYPE", quote(mime))
                w.line("IMAGEMODE", mode)
                w.line("EXTENSION", quote(ext))
                if mode == "RGBA":
                    w.line("TRANSPARENT ON")
        with w.block("SYMBOL"):
            w.line("NAME", quote("circle"))
            w.line("TYPE ELLIPSE")
            w.line("FILLED TRUE")
            w.line("POINTS 1 1 END")
        with w.block("WEB"):
            meta = [("wms_title", title)]
            if spec.abstract:
                meta.append(("wms_abstract", spec.abstract))
            meta += [("ows_enable_request", "*"), ("wms_srs", srs), ("ows_srs", srs)]
            if spec.mapserver.online_resource:
                meta += [
                    ("wms_onlineresource", spec.mapserver.online_resource),
                    ("ows_onlineresource", spec.mapserver.online_resource),
                ]
            meta += [
                ("wms_feature_info_mime_type", "application/vnd.ogc.gml"),
                # only the declared formats: no driver the operator did not choose
                ("wms_getmap_formatlist", "image/png,image/jpeg"),
                ("wcs_formats", "GTiff"),
                ("wcs_label", title),
                ("wfs_title", title),
                ("oga_title", title),
                ("oga_onlineresource", ogcapi_url or ogcapi_root(service_name)),
            ]
            if spec.abstract:
                meta.append(("oga_description", spec.abstract))
            w.metadata(meta)
        for ref in ordered:
            ds = ref.load()
            if ds is not None:
                _layer(w, ds, data_root)
    return w.text()


def build_config(service_name: str, mapfile_path: str = "/etc/mapserver/service.map") -> str:
    """The MapServer 8 CONFIG file: environment and the one map the server may load."""
    w = _Writer()
    with w.block("CONFIG"):
        with w.block("ENV"):
            w.line("MS_MAP_NO_PATH", quote("1"))
            w.line("MS_ERRORFILE", quote("stderr"))
        with w.block("MAPS"):
            w.line(quote(service_name), quote(mapfile_path))
    return w.text()
