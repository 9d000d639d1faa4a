"""Job routes: list/get (shaped state), typed creation per job type (one route per type of the
registry `kms_crds.job_types` that has `api_route`), cancel, delete with tombstones, tombstone list,
cleanup by age and/or state."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import Field, create_model

from kms_crds.common import KModel
from kms_crds.job_types import JOB_TYPES, JobTypeInfo
from kms_crds.kube import KubeError
from kms_crds.mapjob import JobOutput, JobType

from .. import jobs_service, views
from ..deps import Ctx, EditorUser, ViewerUser
from ..errors import Problem
from ..models import (
    DNS_LABEL,
    CleanupRequest,
    CleanupResult,
    ErrorBody,
    JobPage,
    JobState,
    JobUnknown,
    JobView,
    TombstoneList,
)

router = APIRouter(prefix="/jobs", tags=["jobs"])
JobId = Annotated[str, Path(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
API_TYPES = [t for t in JOB_TYPES if t.api_route]  # one POST /jobs/<type> route each
UNKNOWN = {404: {"model": JobUnknown, "description": "No such job: state unknown."}}
_BY_ID = {"id": "$response.body#/id"}
JOB_LINKS = {  # OpenAPI links from a created job (FastAPI's generated operationIds; checked by a unit test)
    "GetJob": {"operationId": "get_job_jobs__id__get", "parameters": _BY_ID},
    "CancelJob": {"operationId": "cancel_job_jobs__id__cancel_post", "parameters": _BY_ID},
    "DeleteJob": {"operationId": "delete_job_jobs__id__delete", "parameters": _BY_ID},
}


def _unknown(id: str) -> JSONResponse:
    return JSONResponse({"id": id, "state": "unknown", "detail": f"job {id!r} not found", "field": "id"}, 404)


@router.get("", response_model=JobPage, summary="Jobs, newest first (status from the watch cache)")
def list_jobs(
    _: ViewerUser,
    ctx: Ctx,
    type: JobType | None = None,
    state: JobState | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> dict:
    items = [views.job_view(o) for o in jobs_service.sort_newest_first(ctx.cr.live(ctx.cr.jobs))]
    items = [
        j for j in items if (type is None or j["type"] == type) and (state is None or j["state"] == state)
    ]
    return {"total": len(items), "limit": limit, "offset": offset, "items": items[offset : offset + limit]}


@router.get("/tombstones", response_model=TombstoneList, summary="Deleted jobs (newest first)")
def tombstones(_: ViewerUser, ctx: Ctx) -> dict:
    return {"items": ctx.tombstones.list()}


@router.post("/cleanup", response_model=CleanupResult, summary="Delete finished jobs by age and/or state")
def cleanup(req: CleanupRequest, user: EditorUser, ctx: Ctx) -> dict:
    chosen = jobs_service.select_for_cleanup(ctx.cr.live(ctx.cr.jobs), req.older_than_seconds, req.states)
    if req.dry_run:
        jobs = [views.job_view(o) for o in chosen]
    else:
        jobs = jobs_service.delete_with_tombstones(ctx.cr, ctx.tombstones, chosen, user.name)
    return {"dryRun": req.dry_run, "count": len(jobs), "jobs": jobs}


@router.get("/{id}", response_model=JobView, responses=UNKNOWN, summary="One job, state shaped")
def get_job(id: JobId, _: ViewerUser, ctx: Ctx):
    obj = ctx.cr.job(id)
    return _unknown(id) if obj is None else views.job_view(obj)


@router.post(
    "/{id}/cancel",
    response_model=JobView,
    status_code=202,
    responses={**UNKNOWN, 409: {"model": ErrorBody, "description": "The job already finished."}},
    summary="Cancel a job",
)
def cancel_job(id: JobId, _: EditorUser, ctx: Ctx):
    obj = ctx.cr.job(id)
    if obj is None:
        return _unknown(id)
    if views.is_terminal(obj):
        state = views.job_view(obj)["state"]
        raise Problem(409, f"job {id!r} already finished ({state}); it cannot be cancelled", "id")
    try:
        return views.job_view(ctx.cr.patch_job(id, {"spec": {"cancel": True}}))
    except KubeError as e:
        if e.status == 404:  # deleted since the cache saw it
            ctx.cr.jobs.forget(id)
            return _unknown(id)
        raise


@router.delete(
    "/{id}", response_model=JobView, responses=UNKNOWN, summary="Delete a job (leaves a tombstone)"
)
def delete_job(id: JobId, user: EditorUser, ctx: Ctx):
    obj = ctx.cr.job(id)
    if obj is None:
        return _unknown(id)
    deleted = jobs_service.delete_with_tombstones(ctx.cr, ctx.tombstones, [obj], user.name)
    return deleted[0] if deleted else _unknown(id)


# ------------------------------------------------------------------ typed creation, one route per type


def _request_model(type_: str, params: type[KModel]) -> type[KModel]:
    name = "".join(p.capitalize() for p in type_.split("-")) + "JobRequest"
    return create_model(
        name,
        __base__=KModel,
        __doc__=f"Create a {type_} MapJob: its parameters and how to run it.",
        params=(params, Field(description=f"Parameters of {type_}.")),
        name=(
            str | None,
            Field(None, max_length=63, pattern=DNS_LABEL, description="MapJob name (default: generated)."),
        ),
        output=(JobOutput | None, Field(None, description="Register the result as a MapDataset.")),
        backoff_limit=(int, Field(2, ge=0, le=20, description="Retries before the job is Failed.")),
        active_deadline_seconds=(int | None, Field(None, ge=1, le=7 * 86400, description="Hard time limit.")),
    )


def _add_create_route(info: JobTypeInfo) -> None:
    type_ = info.name
    model = _request_model(type_, info.params)

    def create(req: model, _: EditorUser, ctx: Ctx) -> dict:  # type: ignore[valid-type]
        fields: dict = {"backoffLimit": req.backoff_limit}
        if req.output is not None:
            fields["output"] = req.output.wire()
        if req.active_deadline_seconds is not None:
            fields["activeDeadlineSeconds"] = req.active_deadline_seconds
        spec = jobs_service.create_job_spec(ctx.settings, type_, req.params.wire(), fields)
        if req.name and ctx.cr.jobs.get(req.name) is not None:
            raise Problem(409, f"job {req.name!r} already exists", "name")
        return views.job_view(ctx.cr.create_job(spec, name=req.name, generate_name=f"{type_}-"))

    create.__annotations__["req"] = model  # a class built at runtime: not a string annotation

    router.add_api_route(
        f"/{type_}",
        create,
        methods=["POST"],
        response_model=JobView,
        status_code=201,
        responses={
            201: {"description": "The MapJob created.", "links": JOB_LINKS},
            409: {"model": ErrorBody, "description": "A job of that name exists."},
        },
        summary=f"Create a {type_} job",
        name=f"create_{type_.replace('-', '_')}_job",
    )


for _info in API_TYPES:
    _add_create_route(_info)
