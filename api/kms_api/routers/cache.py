"""A dataset's tile cache: its state (from the dataset's status and the cache MapJobs), seeding
within the configured limits, and purging. Seeding and purging are MapJobs (cache-seed,
cache-purge) run by the operator against the MapService that serves the dataset with a cache."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import Field

from kms_crds.job_types import BY_NAME
from kms_crds.tilegrids import tile_count

from .. import jobs_service, views
from ..deps import Ctx, EditorUser, ViewerUser
from ..errors import Problem
from ..models import ApiModel, ErrorBody, JobView

router = APIRouter(prefix="/datasets", tags=["tile cache"])
DatasetId = Annotated[str, Path(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
ACTIVE = {None, "Queued", "Running"}
ERRORS = {
    404: {"model": ErrorBody, "description": "No such dataset."},
    409: {"model": ErrorBody, "description": "The dataset is not served by a MapService with a tile cache."},
}


class SeededView(ApiModel):
    version: str | None = None
    grid: str | None = None
    min_zoom: int | None = None
    max_zoom: int | None = None
    tiles: int | None = None
    bytes: int | None = None
    job: str | None = None
    time: str | None = None


class CacheView(ApiModel):
    dataset: str
    state: str = Field(
        description="disabled (no tile cache), on-demand (tiles rendered on first request), seeding, "
        "purging, seeded (the current version), outdated (seeded for an older version, purged)."
    )
    service: str | None = None
    version: str | None = Field(None, description="Current cache version of the dataset.")
    levels: list[int] = Field(default_factory=list, description="Zoom levels seeded for the current version.")
    size: int = Field(0, description="Bytes of seeded tiles of the current version.")
    seeded: SeededView | None = None
    xyz: str | None = None
    wmts: str | None = None
    jobs: list[str] = Field(default_factory=list, description="Cache jobs of this dataset still running.")


class SeedRequest(ApiModel):
    grid: str = Field("GoogleMapsCompatible", pattern=r"^(GoogleMapsCompatible|WGS84)$")
    min_zoom: int = Field(0, ge=0, le=24)
    max_zoom: int = Field(ge=0, le=24)
    extent: list[float] | None = Field(
        None, min_length=4, max_length=4, description="EPSG:4326 (default: the dataset's extent)."
    )
    threads: int = Field(2, ge=1, le=8)


def _dataset(ctx, id: str) -> dict:
    obj = ctx.cr.dataset(id)
    if obj is None:
        raise Problem(404, f"dataset {id!r} not found", "id")
    return obj


def _cache_of(obj: dict) -> dict:
    tc = (obj.get("status") or {}).get("tileCache")
    if not tc or not tc.get("service"):
        raise Problem(409, "the dataset is not served by a MapService with a tile cache", "id")
    return tc


def _active_jobs(ctx, id: str, service: str) -> dict[str, str]:
    """Cache jobs of this dataset still queued or running: name -> type."""
    out = {}
    for job in ctx.cr.live(ctx.cr.jobs):
        spec = job.get("spec") or {}
        info = BY_NAME.get(spec.get("type") or "")
        params = spec.get(info.field) if info and info.cache_volume else None
        if not params or params.get("service") != service:
            continue
        if params.get("datasets") and id not in params["datasets"]:
            continue
        if (job.get("status") or {}).get("phase") in ACTIVE:
            out[job["metadata"]["name"]] = spec.get("type")
    return dict(sorted(out.items()))


@router.get("/{id}/cache", response_model=CacheView, responses=ERRORS, summary="State of the dataset's tiles")
def cache_state(id: DatasetId, _: ViewerUser, ctx: Ctx) -> dict[str, Any]:
    obj = _dataset(ctx, id)
    status = obj.get("status") or {}
    tc = status.get("tileCache")
    if not tc or not tc.get("service"):
        return {"dataset": id, "state": "disabled"}
    seeded = status.get("tileCacheSeeded") or None
    current = bool(seeded and seeded.get("version") == tc.get("version"))
    jobs = _active_jobs(ctx, id, tc["service"])
    if "cache-purge" in jobs.values():
        state = "purging"
    elif jobs:
        state = "seeding"
    elif current:
        state = "seeded"
    else:
        state = "outdated" if seeded else "on-demand"
    levels = list(range(seeded["minZoom"], seeded["maxZoom"] + 1)) if current else []
    return {
        "dataset": id,
        "state": state,
        "service": tc["service"],
        "version": tc.get("version"),
        "levels": levels,
        "size": (seeded.get("bytes") or 0) if current else 0,
        "seeded": seeded,
        "xyz": tc.get("xyz"),
        "wmts": tc.get("wmts"),
        "jobs": list(jobs),
    }


@router.post(
    "/{id}/cache/seed",
    response_model=JobView,
    status_code=202,
    responses={**ERRORS, 422: {"model": ErrorBody, "description": "Beyond the seeding limits."}},
    summary="Seed the dataset's tiles (a cache-seed MapJob), within the configured limits",
)
def seed(id: DatasetId, req: SeedRequest, _: EditorUser, ctx: Ctx) -> dict[str, Any]:
    obj = _dataset(ctx, id)
    tc = _cache_of(obj)
    cfg = ctx.config.current()
    if req.min_zoom > req.max_zoom:
        raise Problem(422, "minZoom must not exceed maxZoom", "minZoom")
    if req.max_zoom > cfg.cache_seed_max_zoom:
        raise Problem(
            422,
            f"maxZoom {req.max_zoom} is deeper than the configured limit "
            f"cacheSeedMaxZoom={cfg.cache_seed_max_zoom}",
            "maxZoom",
        )
    extent = req.extent or (obj.get("status") or {}).get("wgs84Bbox")
    try:
        tiles = tile_count(req.grid, req.min_zoom, req.max_zoom, extent)
    except ValueError as e:
        raise Problem(422, str(e), "extent" if req.extent else "maxZoom") from None
    if tiles > cfg.cache_seed_max_tiles:
        raise Problem(
            422,
            f"seeding would produce {tiles} tiles, more than the configured limit "
            f"cacheSeedMaxTiles={cfg.cache_seed_max_tiles}: lower maxZoom or narrow the extent",
            "maxZoom",
            extra={"tiles": tiles, "limit": cfg.cache_seed_max_tiles},
        )
    params: dict[str, Any] = {
        "service": tc["service"],
        "datasets": [id],
        "grid": req.grid,
        "minZoom": req.min_zoom,
        "maxZoom": req.max_zoom,
        "threads": req.threads,
    }
    if req.extent:
        params["extent"] = req.extent
    spec = jobs_service.create_job_spec(ctx.settings, "cache-seed", params)
    spec.pop("data", None)  # the cache volume is the MapService's; no data volume needed
    return views.job_view(ctx.cr.create_job(spec, generate_name=f"cache-seed-{id[:40]}-"))


@router.delete(
    "/{id}/cache",
    response_model=JobView,
    status_code=202,
    responses=ERRORS,
    summary="Remove the dataset's cached tiles (a cache-purge MapJob)",
)
def purge(id: DatasetId, _: EditorUser, ctx: Ctx) -> dict[str, Any]:
    obj = _dataset(ctx, id)
    tc = _cache_of(obj)
    spec = jobs_service.create_job_spec(
        ctx.settings, "cache-purge", {"service": tc["service"], "datasets": [id]}
    )
    spec.pop("data", None)
    return views.job_view(ctx.cr.create_job(spec, generate_name=f"cache-purge-{id[:40]}-"))
