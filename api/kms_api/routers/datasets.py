"""Dataset routes: list/get/register/upload/delete, duplicate and HySpex reports, maintenance."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from kms_crds.kube import KubeError

from .. import catalog, patching, registry, sniff, upload, views
from ..deps import Context, Ctx, EditorUser, ViewerUser
from ..errors import Problem
from ..jobs_service import create_job_spec
from ..models import (
    DNS_LABEL,
    DatasetCreate,
    DatasetDetail,
    DatasetPage,
    DeleteResult,
    DuplicatesReport,
    ErrorBody,
    HyspexReport,
    MaintenanceResult,
    PruneRequest,
    PruneResult,
    RehashRequest,
    ResyncRequest,
)

router = APIRouter(prefix="/datasets", tags=["datasets"])
DatasetId = Annotated[str, Path(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
NOT_FOUND = {404: {"model": ErrorBody, "description": "No such dataset."}}
CONFLICT = {409: {"model": ErrorBody, "description": "A dataset (or file) of that name exists."}}
# OpenAPI links: what a client (or schemathesis' stateful run) can do next with the answer's ids.
# The operationIds are FastAPI's generated ones; a unit test checks that each link resolves.
_BY_ID = {"id": "$response.body#/id"}
DATASET_LINKS = {
    "GetDataset": {"operationId": "get_dataset_datasets__id__get", "parameters": _BY_ID},
    "DeleteDataset": {"operationId": "delete_dataset_datasets__id__delete", "parameters": _BY_ID},
}
CREATED = {201: {"description": "The registered dataset.", "links": DATASET_LINKS}}
MAINTENANCE_LINKS = {
    202: {
        "description": "The MapJobs started.",
        "links": {
            "GetFirstJob": {
                "operationId": "get_job_jobs__id__get",
                "parameters": {"id": "$response.body#/jobs/0/id"},
            }
        },
    }
}


@router.get("", response_model=DatasetPage, summary="List datasets (light items, from the watch cache)")
def list_datasets(
    _: ViewerUser,
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    q: Annotated[
        str | None, Query(max_length=200, description="Search in id, identifier, title, keywords.")
    ] = None,
    sort: catalog.SortKey = "id",
    type: Literal["raster", "vector"] | None = None,
    campaign: Annotated[str | None, Query(max_length=200)] = None,
    ready: bool | None = None,
) -> dict:
    selected = catalog.select(ctx.cr.dataset_items(), q, type, campaign, ready, sort)
    page = [v["item"] for v in selected[offset : offset + limit]]
    return {"total": len(selected), "limit": limit, "offset": offset, "items": page}


@router.get(
    "/duplicates", response_model=DuplicatesReport, summary="Datasets equal by checksum, identifier or source"
)
def duplicates(_: ViewerUser, ctx: Ctx) -> dict:
    return catalog.duplicates(ctx.cr.live(ctx.cr.datasets))


@router.get("/hyspex-missing-variants", response_model=HyspexReport, summary="HySpex scenes missing RGB or Z")
def hyspex_missing(
    _: ViewerUser,
    ctx: Ctx,
    campaign: Annotated[str | None, Query(max_length=200)] = None,
) -> dict:
    report = catalog.hyspex_missing(ctx.cr.live(ctx.cr.datasets))
    return {"campaigns": [c for c in report if campaign is None or c["campaign"] == campaign]}


ETAG = {
    "ETag": {
        "description": "The dataset's resourceVersion (send it as If-Match).",
        "schema": {"type": "string"},
    }
}


@router.get(
    "/{id}",
    response_model=DatasetDetail,
    responses={200: {"description": "The dataset.", "headers": ETAG}, **NOT_FOUND},
    summary="One dataset",
)
def get_dataset(id: DatasetId, _: ViewerUser, ctx: Ctx, response: Response) -> dict:
    obj = ctx.cr.dataset(id)
    if obj is None:
        raise Problem(404, f"dataset {id!r} not found", "id")
    response.headers["ETag"] = patching.etag(obj["metadata"].get("resourceVersion"))
    return views.dataset_detail(obj)


@router.post(
    "",
    response_model=DatasetDetail,
    status_code=201,
    responses={**CREATED, **CONFLICT},
    summary="Register a path or URL",
)
def create_dataset(req: DatasetCreate, _: EditorUser, ctx: Ctx) -> dict:
    registry.check(req, ctx.config.current(), ctx.settings)
    return views.dataset_detail(registry.register(ctx.cr, req))


PATCH_MEDIA = ("application/merge-patch+json", "application/json")
_PATCH_SCHEMA = {
    "type": "object",
    "description": "A JSON merge patch (RFC 7386) of the spec fields and labels; null removes a field. "
    "type, source, identifier and id cannot be changed.",
    "properties": {
        "title": {"type": "string", "maxLength": 500},
        "abstract": {"type": ["string", "null"], "maxLength": 4000},
        "keywords": {"type": ["array", "null"], "items": {"type": "string", "maxLength": 100}},
        "projection": {"type": ["string", "null"], "pattern": "^EPSG:[0-9]{4,6}$"},
        "style": {"type": ["object", "null"]},
        "protocols": {"type": "array", "items": {"type": "string", "enum": ["WMS", "WCS", "WFS"]}},
        "campaign": {"type": ["string", "null"], "maxLength": 200},
        "variant": {"type": ["string", "null"], "enum": ["RGB", "Z", None]},
        "labels": {"type": ["object", "null"], "additionalProperties": {"type": ["string", "null"]}},
    },
}
PATCH_BODY = {
    "requestBody": {"required": True, "content": {m: {"schema": _PATCH_SCHEMA} for m in PATCH_MEDIA}}
}
MAX_PATCH_BYTES = 1 << 20


def _apply_patch(ctx: Context, id: str, body: Any, if_match: str | None) -> dict:
    """Validate the patched spec as a create is, then write it at the resourceVersion it was computed
    from: a concurrent change makes the apiserver answer 409 (412 with If-Match; retried without)."""
    want = patching.if_match_version(if_match)
    for attempt in range(3):
        obj = ctx.cr.dataset(id) if attempt == 0 else ctx.cr.dataset_live(id)
        if obj is not None and want is not None and obj["metadata"].get("resourceVersion") != want:
            obj = ctx.cr.dataset_live(id) if attempt == 0 else obj  # the cache may be behind
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            raise Problem(404, f"dataset {id!r} not found", "id")
        meta = obj["metadata"]
        rv = meta.get("resourceVersion")
        if want is not None and rv != want:
            raise Problem(412, f"dataset {id!r} changed: it is at version {rv}, not {want}", "If-Match")
        old = obj.get("spec") or {}
        spec_patch, labels_patch = patching.split(body, dict(meta.get("labels") or {}))
        req = registry.parse_create(patching.merge(old, spec_patch), by_name=False)
        registry.check(req, ctx.config.current(), ctx.settings, check_exists=False)
        new = registry.spec_of(req)
        patching.check_immutable(old, new)
        change: dict[str, Any] = {"metadata": {"resourceVersion": rv}}
        if spec_change := patching.diff(old, new):
            change["spec"] = spec_change
        if labels_patch:
            change["metadata"]["labels"] = labels_patch
        if len(change) == 1 and "labels" not in change["metadata"]:
            return obj  # nothing to change
        try:
            return ctx.cr.patch_dataset(id, change)
        except KubeError as e:
            if e.status == 404:
                raise Problem(404, f"dataset {id!r} not found", "id") from None
            if e.status != 409:
                raise
            if want is not None:
                raise Problem(412, f"dataset {id!r} changed since version {want}", "If-Match") from None
    raise Problem(409, f"dataset {id!r} kept changing while it was patched; try again", "id")


@router.patch(
    "/{id}",
    response_model=DatasetDetail,
    responses={
        200: {"description": "The changed dataset.", "headers": ETAG},
        **NOT_FOUND,
        409: {"model": ErrorBody, "description": "The dataset kept changing; try again."},
        412: {"model": ErrorBody, "description": "If-Match names an older version: nothing changed."},
        413: {"model": ErrorBody, "description": "The patch is larger than 1 MiB."},
        415: {"model": ErrorBody, "description": "Not application/merge-patch+json or application/json."},
    },
    openapi_extra=PATCH_BODY,
    summary="Change a dataset's spec fields or labels (JSON merge patch)",
)
async def patch_dataset(
    id: DatasetId,
    request: Request,
    response: Response,
    _: EditorUser,
    ctx: Ctx,
    if_match: Annotated[
        str | None, Header(max_length=200, description="The ETag the change is based on (else: 412).")
    ] = None,
) -> dict:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in PATCH_MEDIA:
        raise Problem(415, f"send the patch as {' or '.join(PATCH_MEDIA)}", "content-type")
    raw = await request.body()
    if len(raw) > MAX_PATCH_BYTES:
        raise Problem(413, "the patch is larger than 1 MiB")
    try:
        body = json.loads(raw)
    except ValueError:
        raise Problem(422, "the body is not valid JSON") from None
    obj = await run_in_threadpool(_apply_patch, ctx, id, body, if_match)
    response.headers["ETag"] = patching.etag(obj["metadata"].get("resourceVersion"))
    return views.dataset_detail(obj)


UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "id": {"type": "string", "pattern": DNS_LABEL, "maxLength": 63},
                        "identifier": {"type": "string", "maxLength": 200},
                        "title": {"type": "string", "maxLength": 500},
                        "abstract": {"type": "string", "maxLength": 4000},
                        "type": {"type": "string", "enum": ["raster", "vector"]},
                        "campaign": {"type": "string", "maxLength": 200},
                        "variant": {"type": "string", "enum": ["RGB", "Z"]},
                        "keywords": {"type": "string", "description": "Comma-separated."},
                        "projection": {"type": "string", "pattern": "^EPSG:[0-9]{4,6}$"},
                    },
                }
            }
        },
    }
}


@router.post(
    "/upload",
    response_model=DatasetDetail,
    status_code=201,
    responses={
        **CREATED,
        **CONFLICT,
        413: {"model": ErrorBody, "description": "The file exceeds maxUploadMb."},
        415: {"model": ErrorBody, "description": "The content (or declared type) is not what the name says."},
    },
    openapi_extra=UPLOAD_BODY,
    summary="Upload a file into the data volume and register it",
)
async def upload_dataset(request: Request, _: EditorUser, ctx: Ctx) -> dict:
    cfg = ctx.config.current()
    if not registry.in_roots(ctx.settings.upload_dir, cfg.allowed_data_roots):
        raise Problem(
            422, f"the upload directory {ctx.settings.upload_dir!r} is not an allowed data root", "file"
        )
    _, target_dir = registry.upload_path(ctx.settings, "")
    got = await upload.receive(request, target_dir, cfg.max_upload_mb * 1024 * 1024)
    try:
        f = got.fields
        stem = os.path.splitext(got.filename)[0]
        ident = f.get("identifier") or registry.derive_identifier(stem)
        raw = {
            "id": f.get("id") or registry.derive_id(stem),
            "type": f.get("type") or upload.EXTENSIONS[os.path.splitext(got.filename)[1].lower()],
            "source": {"path": f"{ctx.settings.upload_dir}/{got.filename}"},
            "identifier": ident,
            "title": f.get("title") or got.filename,
            **{k: f[k] for k in ("abstract", "campaign", "variant", "projection") if f.get(k)},
        }
        if f.get("keywords"):
            raw["keywords"] = [k.strip() for k in f["keywords"].split(",") if k.strip()]
        req = registry.parse_create(raw)
        registry.check(req, cfg, ctx.settings, check_exists=False)
        if ctx.cr.datasets.get(req.id) is not None:
            raise Problem(409, f"dataset {req.id!r} already exists", "id")
        _, target = registry.upload_path(ctx.settings, got.filename)
        if target.exists():
            raise Problem(409, f"a file named {got.filename!r} was already uploaded", "file")
        ext = os.path.splitext(got.filename)[1].lower()
        await run_in_threadpool(sniff.check, got.tmp_path, ext, got.content_type)
        upload.place(got, target)
    except BaseException:
        got.discard()
        raise
    try:
        obj = await run_in_threadpool(registry.register, ctx.cr, req)
    except (KubeError, Problem):
        target.unlink(missing_ok=True)  # nothing half-created
        raise
    return views.dataset_detail(obj)


@router.delete("/{id}", response_model=DeleteResult, responses=NOT_FOUND, summary="Delete a dataset")
def delete_dataset(id: DatasetId, _: EditorUser, ctx: Ctx) -> dict:
    obj = ctx.cr.dataset(id)
    if obj is None or ctx.cr.delete_dataset(id, obj["metadata"].get("uid")) is None:
        raise Problem(404, f"dataset {id!r} not found", "id")
    return {"id": id, "deleted": True}


# ------------------------------------------------------------------ maintenance


def _dataset_names(ctx: Context, names: list[str] | None) -> list[str]:
    live = {o["metadata"]["name"] for o in ctx.cr.live(ctx.cr.datasets)}
    if names is None:
        return sorted(live)
    unknown = [n for n in names if n not in live]
    if unknown:
        raise Problem(422, f"unknown datasets: {', '.join(unknown[:10])}", "datasets")
    return list(dict.fromkeys(names))


def _jobs_over(ctx: Context, type_: str, names: list[str]) -> dict:
    if not names:
        raise Problem(422, "there are no datasets to process", "datasets")
    jobs = []
    for i in range(0, len(names), 1000):  # a MapJob takes at most 1000 datasets
        spec = create_job_spec(ctx.settings, type_, {"datasets": names[i : i + 1000]})
        jobs.append(views.job_view(ctx.cr.create_job(spec, generate_name=f"{type_}-")))
    return {"jobs": jobs}


@router.post(
    "/maintenance/rehash",
    response_model=MaintenanceResult,
    status_code=202,
    responses=MAINTENANCE_LINKS,
    summary="Rehash (MapJob)",
)
def rehash(req: RehashRequest, _: EditorUser, ctx: Ctx) -> dict:
    return _jobs_over(ctx, "rehash", _dataset_names(ctx, req.datasets))


@router.post(
    "/maintenance/resync",
    response_model=MaintenanceResult,
    status_code=202,
    responses=MAINTENANCE_LINKS,
    summary="Re-read metadata (MapJob)",
)
def resync(req: ResyncRequest, _: EditorUser, ctx: Ctx) -> dict:
    return _jobs_over(ctx, "repair-metadata", _dataset_names(ctx, req.datasets))


@router.post(
    "/maintenance/prune-missing", response_model=PruneResult, summary="Delete datasets whose file is gone"
)
def prune_missing(req: PruneRequest, _: EditorUser, ctx: Ctx) -> dict:
    gone = sorted(
        o["metadata"]["name"]
        for o in ctx.cr.live(ctx.cr.datasets)
        if views.condition(o, "Ready").get("reason") == "SourceNotFound"
    )
    if not req.dry_run:
        for name in gone:
            obj = ctx.cr.dataset(name)
            if obj is not None:
                ctx.cr.delete_dataset(name, obj["metadata"].get("uid"))
    return {"dryRun": req.dry_run, "datasets": gone}
