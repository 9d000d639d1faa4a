"""cache-seed / cache-purge MapJobs: the user's parameters -> the runner's (the MapCache
configuration of the datasets to seed, the versions to keep), and their results -> dataset status."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from kms_crds.mapdataset import MapDatasetSpec
from kms_crds.mapjob import MapJobSpec
from kms_crds.mapservice import MapServiceSpec, TileCache

from .mapfile import layer_name
from .snapshots import is_ready, selector_of
from .tilecache import Tileset, build_mapcache_xml, dataset_version


class CacheJobError(Exception):
    """The cache job cannot run (no such service, no cache, no shared cache volume, ...)."""


@dataclass(frozen=True)
class CacheJob:
    params: dict  # the runner's --params-json
    claim: str  # PVC of the cache, mounted at /var/cache/mapcache
    versions: dict[str, str | None]  # dataset -> cache version the job works on


def served_snapshots(op, ns: str, service: dict) -> dict[str, dict]:
    """Ready datasets the service selects (what its cache holds), by name."""
    sel = selector_of(service)
    return {
        d["name"]: d
        for d in op.datasets_in(ns)
        if not d["deleting"] and sel.matches(d["labels"]) and is_ready(d)
    }


def tileset_of(d: dict) -> Tileset:
    spec = MapDatasetSpec.model_validate(d["spec"])
    bbox = d["status"].get("wgs84Bbox")
    return Tileset(
        name=d["name"],
        layer=layer_name(spec.identifier),
        version=dataset_version(d["spec"], d["status"]),
        title=spec.title or d["name"],
        wgs84_bbox=tuple(bbox) if bbox else None,
    )


def _service_cache(op, ns: str, name: str) -> tuple[dict, TileCache]:
    svc = next((s for s in op.services_in(ns) if s["name"] == name and not s["deleting"]), None)
    if svc is None:
        raise CacheJobError(f"MapService {name!r} not found in namespace {ns}")
    try:
        tc = MapServiceSpec.model_validate(svc["spec"]).tile_cache
    except ValidationError as e:
        raise CacheJobError(f"MapService {name!r} has an invalid spec: {e}") from e
    if tc is None or not tc.enabled:
        raise CacheJobError(f"MapService {name!r} has no tile cache (spec.tileCache)")
    if not tc.storage.persistent_volume_claim:
        raise CacheJobError(
            f"the tile cache of MapService {name!r} has no persistentVolumeClaim: "
            "seeding and purging need the cache on a shared volume"
        )
    return svc, tc


def _clamp(bbox) -> list[float]:
    """A dataset's WGS84 box as the seeder takes it: inside -180..180 / -90..90, never empty (a
    single point gets a tiny box around it)."""
    eps = 1e-6
    minx, miny = max(bbox[0], -180.0), max(bbox[1], -90.0)
    maxx, maxy = min(max(bbox[2], minx + eps), 180.0), min(max(bbox[3], miny + eps), 90.0)
    return [min(minx, maxx - eps), min(miny, maxy - eps), maxx, maxy]


def resolve_cache_job(op, ns: str, spec: MapJobSpec, source_url: str) -> CacheJob:
    p = spec.params
    svc, tc = _service_cache(op, ns, p.service)
    served = served_snapshots(op, ns, svc)
    if spec.type == "cache-purge":
        names = p.datasets or sorted(served)
        versions = {
            n: (
                dataset_version(served[n]["spec"], served[n]["status"])
                if p.keep_current and n in served
                else None
            )
            for n in names
        }
        return CacheJob(
            {"service": p.service, "datasets": versions}, tc.storage.persistent_volume_claim, versions
        )
    if p.grid not in [str(g) for g in tc.grids]:
        raise CacheJobError(f"grid {p.grid} is not offered by the tile cache of {p.service!r} ({tc.grids})")
    names = p.datasets or sorted(served)
    missing = [n for n in names if n not in served]
    if missing:
        raise CacheJobError(f"not served (ready) by MapService {p.service!r}: {', '.join(missing[:10])}")
    if not names:
        raise CacheJobError(f"MapService {p.service!r} serves no dataset to seed")
    tilesets = [tileset_of(served[n]) for n in names]
    params = {
        "service": p.service,
        "configXml": build_mapcache_xml(p.service, tc, tilesets, source_url),
        "tilesets": names,
        "grid": p.grid,
        "minZoom": p.min_zoom,
        "maxZoom": p.max_zoom,
        "extent": p.extent,
        "threads": p.threads,
    }
    if p.extent is None:  # each dataset over its own extent
        params["extents"] = {t.name: _clamp(t.wgs84_bbox) for t in tilesets if t.wgs84_bbox}
    return CacheJob(params, tc.storage.persistent_volume_claim, {t.name: t.version for t in tilesets})
