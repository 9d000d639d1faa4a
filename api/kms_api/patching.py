"""PATCH /datasets/{id}: JSON merge patches (RFC 7386) of a dataset's spec and labels, checked as a
create is, and ETags from resourceVersions (pure functions; the route sends the result to the
apiserver at the resourceVersion it was computed from)."""

from __future__ import annotations

from typing import Any

from .errors import Problem

# What a PATCH cannot change. The name is the resource's identity; `identifier` is the public OGC
# layer name clients know; `type` and `source` are the data itself (its inspection, checksum, tile
# cache and duplicate reports follow from them): other data is another dataset, registered anew.
IMMUTABLE = ("type", "source", "identifier")
MAX_LABELS = 64


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


def diff(old: Any, new: Any) -> Any:
    """The merge patch that turns `old` into `new` (objects key by key, everything else whole)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    out: dict[str, Any] = {k: None for k in old if k not in new}
    for key, value in new.items():
        if key not in old:
            out[key] = value
        elif old[key] != value:
            out[key] = diff(old[key], value)
    return out


def etag(resource_version: str | None) -> str:
    return f'"{resource_version or ""}"'


def if_match_version(header: str | None) -> str | None:
    """The resourceVersion an If-Match names (quoted or not, weak or not); None for none or `*`."""
    if header is None:
        return None
    value = header.strip()
    if value == "*":
        return None
    if "," in value:
        raise Problem(412, "If-Match must name one version (the dataset's ETag)", "If-Match")
    value = value.removeprefix("W/").strip().strip('"')
    if not value:
        raise Problem(412, "If-Match names no version", "If-Match")
    return value


def split(patch: Any, labels_now: dict[str, str]) -> tuple[dict, dict | None]:
    """(spec patch, labels patch or None) of a PATCH body (`"labels": null` removes them all);
    immutable fields are checked on the result."""
    if not isinstance(patch, dict):
        raise Problem(422, "the body must be a JSON object (a merge patch of the dataset)", None)
    body = dict(patch)
    if "id" in body:
        raise Problem(422, "id cannot be changed (it is the resource's name)", "id")
    if "labels" not in body:
        return body, None
    labels = body.pop("labels")
    if labels is None:
        return body, {k: None for k in labels_now} or None
    if labels is not None:
        if not isinstance(labels, dict) or len(labels) > MAX_LABELS:
            raise Problem(422, "labels must be an object of at most 64 labels", "labels")
        for k, v in labels.items():
            if v is not None and not isinstance(v, str):
                raise Problem(422, f"label {k!r} must be a string or null", f"labels.{k}")
    return body, labels


def check_immutable(old_spec: dict, new_spec: dict) -> None:
    for field in IMMUTABLE:
        if old_spec.get(field) != new_spec.get(field):
            raise Problem(
                422,
                f"{field} cannot be changed: register the new data as another dataset",
                field,
            )
