"""POST /datasets/preview: a dataset spec (the create body) rendered by MapServer, or the mapfile
the operator would write for it. Nothing is created: the apiserver checks the spec in a dry run."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from kms_crds.mapdataset import MapDatasetSpec
from kms_operator.mapfile import layer_name

from .. import preview, registry
from ..auth import Busy
from ..deps import Ctx, EditorUser
from ..errors import Problem
from ..models import DatasetCreate, ErrorBody

router = APIRouter(prefix="/datasets", tags=["datasets"])
NUMBER = r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?"
BBOX = rf"^{NUMBER},{NUMBER},{NUMBER},{NUMBER}$"


def _bbox(text: str | None) -> list[float] | None:
    return None if text is None else [float(v) for v in text.split(",")]


@router.post(
    "/preview",
    response_class=Response,
    responses={
        200: {
            "description": "The layer drawn by MapServer (PNG), or its mapfile (format=mapfile).",
            "content": {"image/png": {}, "text/plain": {"schema": {"type": "string"}}},
        },
        422: {"model": ErrorBody, "description": "Invalid spec, or MapServer cannot load or draw it."},
        503: {"model": ErrorBody, "description": "Too many previews at once, or previews not configured."},
    },
    summary="Preview a dataset spec: PNG rendered by MapServer (or the mapfile); creates nothing",
)
async def preview_dataset(
    req: DatasetCreate,
    _: EditorUser,
    ctx: Ctx,
    format: Literal["png", "mapfile"] = "png",
    bbox: Annotated[
        str | None,
        Query(
            pattern=BBOX, max_length=200, description="minx,miny,maxx,maxy in EPSG:4326 (default: extent)."
        ),
    ] = None,
    width: Annotated[
        int | None, Query(ge=1, le=8192, description="Pixels (default 512 on the longer side).")
    ] = None,
    height: Annotated[int | None, Query(ge=1, le=8192)] = None,
) -> Response:
    settings, cfg = ctx.settings, ctx.config.current()
    if settings.data_root is None:
        raise Problem(503, "previews are not configured (KMS_DATA_ROOT is not set)")
    registry.check(req, cfg, settings)
    spec = registry.spec_of(req)
    await run_in_threadpool(ctx.cr.validate_dataset, spec, req.labels)  # schema and CEL rules
    name = req.id or registry.derive_id(req.identifier)
    try:
        async with ctx.preview_gate.slot():
            ds = await run_in_threadpool(
                preview.inspect,
                name,
                MapDatasetSpec.model_validate(spec),
                settings.data_root,
                cfg.allowed_data_roots,
                list(settings.allowed_url_hosts),
            )
            if format == "mapfile":
                return PlainTextResponse(preview.mapfile(ds))
            area, w, h = preview.frame(ds, _bbox(bbox), width, height, settings.preview_max_size)
            limits = preview.Limits(
                settings.preview_timeout_seconds, settings.preview_cpu_seconds, settings.preview_memory_mb
            )
            layer = layer_name(req.identifier)
            map_text = preview.mapfile(ds, str(settings.data_root))
            png = await run_in_threadpool(preview.render, map_text, layer, area, w, h, limits)
    except Busy:
        raise Problem(503, "too many previews at once; try again", headers={"Retry-After": "1"}) from None
    return Response(png, media_type="image/png", headers={"X-Preview-Bbox": ",".join(map(repr, area))})
