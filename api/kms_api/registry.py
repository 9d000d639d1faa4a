"""Registering datasets: checks against the effective config and the data volume, then one CR create."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import ValidationError

from .config import AppConfig
from .crclient import CRClient
from .errors import Problem, field_of
from .models import DatasetCreate
from .settings import Settings

RESERVED_IDS = {"duplicates", "hyspex-missing-variants", "upload", "maintenance", "preview"}


def derive_id(identifier: str) -> str:
    """A DNS label from an identifier: no.met:sst-2024 → no-met-sst-2024."""
    name = re.sub(r"[^a-z0-9-]+", "-", identifier.lower()).strip("-")
    return name[:63].rstrip("-") or "dataset"


def derive_identifier(stem: str) -> str:
    ident = re.sub(r"[^A-Za-z0-9._:-]+", "-", stem).lstrip("._:-")
    return ident[:200] or "dataset"


def parse_create(raw: dict, by_name: bool = True) -> DatasetCreate:
    """A create body (or a patched spec: by_name=False takes camelCase keys only, the wire form)."""
    try:
        return DatasetCreate.model_validate(raw, by_alias=True, by_name=by_name)
    except ValidationError as e:
        err = e.errors()[0]
        field = field_of(err["loc"])
        msg = f"unknown field {field!r}" if err["type"] == "extra_forbidden" else err["msg"]
        raise Problem(422, f"{field}: {msg}" if field else msg, field) from None


def in_roots(path: str, roots: list[str]) -> bool:
    norm = "/".join(p for p in path.split("/") if p not in ("", "."))
    return not roots or any(norm == r or norm.startswith(r.rstrip("/") + "/") for r in roots)


def check(req: DatasetCreate, cfg: AppConfig, settings: Settings, check_exists: bool = True) -> None:
    """What the CRD cannot know: allowed data roots, the file being there, the colormap minimum."""
    src = req.source
    if (src.path is None) == (src.url is None):
        raise Problem(422, "source needs exactly one of path or url", "source")
    if src.path is not None:
        if any(p == ".." for p in src.path.split("/")):
            raise Problem(422, "source.path must stay inside the data volume (no '..')", "source.path")
        if not in_roots(src.path, cfg.allowed_data_roots):
            roots = ", ".join(cfg.allowed_data_roots)
            raise Problem(422, f"source.path is not under an allowed data root ({roots})", "source.path")
        if check_exists and settings.data_root is not None:
            root = settings.data_root.resolve()
            real = (root / src.path).resolve()
            if (root != real and root not in real.parents) or not real.exists():
                raise Problem(
                    422, f"source.path {src.path!r} does not exist on the data volume", "source.path"
                )
    if req.style and req.style.classes is not None and req.style.classes < cfg.min_colormap_classes:
        raise Problem(
            422,
            f"style.classes must be at least {cfg.min_colormap_classes} (minColormapClasses)",
            "style.classes",
        )
    if req.id in RESERVED_IDS:
        raise Problem(422, f"id {req.id!r} is reserved", "id")


def spec_of(req: DatasetCreate) -> dict:
    """The MapDataset spec of a create body, as it is stored."""
    return req.model_dump(by_alias=True, exclude_none=True, mode="json", exclude={"id", "labels"})


def register(cr: CRClient, req: DatasetCreate) -> dict:
    """Create the MapDataset (409 when the name is taken)."""
    name = req.id or derive_id(req.identifier)
    if cr.datasets.get(name) is not None:
        raise Problem(409, f"dataset {name!r} already exists", "id")
    return cr.create_dataset(name, spec_of(req), req.labels)


def upload_path(settings: Settings, filename: str) -> tuple[str, Path]:
    """(path relative to the data volume, absolute path on the facade's view of it)."""
    if settings.data_root is None:
        raise Problem(503, "uploads are not configured (KMS_DATA_ROOT is not set)")
    rel = f"{settings.upload_dir}/{filename}".rstrip("/")
    return rel, settings.data_root / rel
