"""MapJob specs from API requests, job selection for cleanup, deletion with tombstones."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from kms_crds.job_types import job_type
from kms_crds.mapjob import MapJobSpec

from . import views
from .crclient import CRClient
from .errors import Problem, field_of
from .settings import Settings
from .tombstones import Tombstones, now_rfc3339, parse_time


def create_job_spec(
    settings: Settings, type_: str, params: dict[str, Any], fields: dict[str, Any] | None = None
) -> dict:
    """A validated MapJob spec (wire form): the type's parameter block (wire form) and other spec
    `fields`, with the facade's data volume and job image."""
    raw: dict[str, Any] = {"type": type_, job_type(type_).field: params, **(fields or {})}
    if settings.data_pvc and "data" not in raw:
        raw["data"] = {"persistentVolumeClaim": settings.data_pvc}
    if settings.job_image and "image" not in raw:
        raw["image"] = settings.job_image
    try:
        spec = MapJobSpec.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = field_of(err["loc"])
        raise Problem(422, f"{field}: {err['msg']}" if field else err["msg"], field) from None
    return spec.wire()


def sort_newest_first(objs: list[dict]) -> list[dict]:
    return sorted(
        objs,
        key=lambda o: (o["metadata"].get("creationTimestamp") or "", o["metadata"]["name"]),
        reverse=True,
    )


def finished_at(obj: dict) -> datetime | None:
    status = obj.get("status") or {}
    return parse_time(status.get("completionTime")) or parse_time(obj["metadata"].get("creationTimestamp"))


def select_for_cleanup(
    objs: list[dict], older_than: int | None, states: list[str] | None, now: datetime | None = None
) -> list[dict]:
    """Finished jobs in `states` (default: any terminal state) finished at least `older_than` s ago."""
    now = now or datetime.now(UTC)
    out = []
    for o in objs:
        if not views.is_terminal(o):
            continue
        state = views.job_state((o.get("status") or {}).get("phase"))
        if states is not None and state not in states:
            continue
        if older_than is not None:
            t = finished_at(o)
            if t is None or (now - t).total_seconds() < older_than:
                continue
        out.append(o)
    return sort_newest_first(out)


def delete_with_tombstones(cr: CRClient, tombstones: Tombstones, objs: list[dict], who: str) -> list[dict]:
    """Delete the MapJobs (each at the uid that was read) and record one tombstone per deletion."""
    deleted, entries = [], []
    for o in objs:
        name = o["metadata"]["name"]
        if cr.delete_job(name, o["metadata"].get("uid")) is None:
            continue  # already gone
        view = views.job_view(o)
        deleted.append(view)
        entries.append(
            {
                "id": name,
                "type": view["type"],
                "finalState": view["state"],
                "deletedBy": who,
                "deletedAt": now_rfc3339(),
            }
        )
    tombstones.add(entries)
    return deleted
