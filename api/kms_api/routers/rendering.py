"""Routes of the old product that need the map itself: a dataset's extent as GeoJSON, and a
thumbnail rendered by the MapService that serves it (its status URL: the Service in a cluster,
the loopback dev server with the local control plane), cached per dataset version."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Annotated

import httpx
from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, Response

from ..deps import Ctx, ViewerUser
from ..errors import Problem
from ..models import ErrorBody
from ..preview import getmap_params

router = APIRouter(prefix="/datasets", tags=["datasets"])
DatasetId = Annotated[str, Path(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
ERRORS = {
    404: {"model": ErrorBody, "description": "No such dataset."},
    409: {"model": ErrorBody, "description": "Not inspected or not served yet."},
    502: {"model": ErrorBody, "description": "The serving MapService did not return an image."},
}
_CACHE: OrderedDict[tuple, bytes] = OrderedDict()
_CACHE_LOCK = threading.Lock()
CACHE_ENTRIES = 256


def _dataset(ctx, id: str) -> dict:
    obj = ctx.cr.dataset(id)
    if obj is None:
        raise Problem(404, f"dataset {id!r} not found", "id")
    return obj


def _bbox(obj: dict) -> list[float]:
    bbox = (obj.get("status") or {}).get("wgs84Bbox")
    if not bbox or len(bbox) != 4:
        raise Problem(
            409, "the dataset has no extent yet (not inspected, or its source is not readable)", "id"
        )
    return [float(v) for v in bbox]


@router.get(
    "/{id}/extent.geojson",
    responses={200: {"content": {"application/geo+json": {}}}, **ERRORS},
    summary="The dataset's extent as a GeoJSON polygon (EPSG:4326)",
)
def extent(id: DatasetId, _: ViewerUser, ctx: Ctx) -> JSONResponse:
    obj = _dataset(ctx, id)
    minx, miny, maxx, maxy = _bbox(obj)
    status = obj.get("status") or {}
    feature = {
        "type": "Feature",
        "bbox": [minx, miny, maxx, maxy],
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]],
        },
        "properties": {
            "id": id,
            "identifier": obj["spec"].get("identifier"),
            "title": obj["spec"].get("title"),
            "nativeExtent": status.get("extent"),
        },
    }
    return JSONResponse(feature, media_type="application/geo+json")


@router.get(
    "/{id}/thumbnail.png",
    responses={200: {"content": {"image/png": {}}}, **ERRORS},
    response_class=Response,
    summary="A PNG of the whole dataset, rendered by the MapService that serves it (cached)",
)
def thumbnail(
    id: DatasetId,
    _: ViewerUser,
    ctx: Ctx,
    width: Annotated[
        int, Query(ge=16, le=1024, description="Width in pixels; height follows the extent.")
    ] = 256,
) -> Response:
    obj = _dataset(ctx, id)
    minx, miny, maxx, maxy = _bbox(obj)
    status = obj.get("status") or {}
    url, layer = status.get("url"), status.get("layerName")
    tiles = status.get("tileCache") or {}
    if tiles.get("wms") and ctx.config.current().wms_via_tile_cache:  # through the tile cache's WMS
        url, layer = tiles["wms"], id
    if not url or not layer:
        raise Problem(409, "no MapService serves this dataset yet", "id")
    key = (
        id,
        obj["metadata"].get("uid"),
        obj["metadata"].get("generation"),
        status.get("checksum"),
        url,
        width,
    )
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return Response(_CACHE[key], media_type="image/png", headers={"X-Cache": "hit"})
    aspect = (maxy - miny) / (maxx - minx) if maxx > minx else 1.0
    height = max(16, min(1024, round(width * aspect)))
    params = getmap_params(layer, [minx, miny, maxx, maxy], width, height)
    try:
        r = httpx.get(url.split("?", 1)[0], params=params, timeout=ctx.settings.request_timeout)
    except httpx.HTTPError as e:
        raise Problem(502, f"the serving MapService is not reachable: {type(e).__name__}") from None
    if r.status_code != 200 or not r.content.startswith(b"\x89PNG"):
        raise Problem(502, f"the serving MapService answered {r.status_code}: {r.text[:300]}")
    with _CACHE_LOCK:
        _CACHE[key] = r.content
        while len(_CACHE) > CACHE_ENTRIES:
            _CACHE.popitem(last=False)
    return Response(r.content, media_type="image/png", headers={"X-Cache": "miss"})
