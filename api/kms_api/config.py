"""User-tunable settings: defaults < environment (KMS_*) < ConfigMap kube-mapserver-config."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from pydantic import Field, ValidationError

from kms_crds.common import KModel
from kms_crds.kube import KubeError

from .crclient import CONFIG_MAP, CRClient
from .errors import Problem, field_of

log = logging.getLogger("kms_api.config")
KEY = "config.json"
DataRoot = str


class AppConfig(KModel):
    """The effective settings."""

    max_upload_mb: int = Field(512, ge=1, le=1024 * 1024, description="Largest upload in MiB.")
    min_colormap_classes: int = Field(
        2, ge=2, le=64, description="Smallest style.classes a dataset may ask for."
    )
    point_query_public: bool = Field(False, description="Point queries (GetFeatureInfo) without a token.")
    wms_via_tile_cache: bool = Field(False, description="Serve WMS through the tile cache.")
    allowed_data_roots: list[DataRoot] = Field(
        default_factory=list,
        max_length=100,
        description="Directories of the data volume datasets may come from (empty: anywhere).",
    )
    cache_seed_max_zoom: int = Field(
        12, ge=0, le=24, description="Deepest zoom level the cache seeder seeds."
    )
    cache_seed_max_tiles: int = Field(
        100000, ge=0, le=10**9, description="Most tiles one seeding run may produce."
    )


class ConfigUpdate(KModel):
    """A partial update: only the keys given change; null removes a persisted override."""

    max_upload_mb: int | None = Field(None, ge=1, le=1024 * 1024)
    min_colormap_classes: int | None = Field(None, ge=2, le=64)
    point_query_public: bool | None = None
    wms_via_tile_cache: bool | None = None
    allowed_data_roots: list[DataRoot] | None = Field(None, max_length=100)
    cache_seed_max_zoom: int | None = Field(None, ge=0, le=24)
    cache_seed_max_tiles: int | None = Field(None, ge=0, le=10**9)


ENV = {
    "maxUploadMb": "KMS_MAX_UPLOAD_MB",
    "minColormapClasses": "KMS_MIN_COLORMAP_CLASSES",
    "pointQueryPublic": "KMS_POINT_QUERY_PUBLIC",
    "wmsViaTileCache": "KMS_WMS_VIA_TILE_CACHE",
    "allowedDataRoots": "KMS_ALLOWED_DATA_ROOTS",
    "cacheSeedMaxZoom": "KMS_CACHE_SEED_MAX_ZOOM",
    "cacheSeedMaxTiles": "KMS_CACHE_SEED_MAX_TILES",
}


def env_layer(env: dict[str, str] | None = None) -> dict[str, Any]:
    """Settings given in the environment; invalid values are logged and ignored."""
    e = os.environ if env is None else env
    out: dict[str, Any] = {}
    for key, var in ENV.items():
        if var not in e:
            continue
        raw = e[var]
        value: Any = [p.strip() for p in raw.split(",") if p.strip()] if key == "allowedDataRoots" else raw
        try:
            ConfigUpdate.model_validate({key: value})
        except ValidationError:
            log.warning("ignoring invalid %s=%r", var, raw)
            continue
        out[key] = value
    return out


def normalise_roots(roots: list[str]) -> list[str]:
    out = []
    for r in roots:
        r = r.strip().strip("/")
        if r.startswith("/") or any(p in ("..", "") for p in r.split("/")) or "\\" in r:
            raise Problem(422, f"allowedDataRoots: {r!r} must be a relative directory", "allowedDataRoots")
        out.append(r)
    return out


def effective(env: dict[str, Any], overrides: dict[str, Any]) -> AppConfig:
    """defaults < env < overrides, dropping override keys that no longer validate."""
    merged = {**env}
    for key, value in overrides.items():
        try:
            AppConfig.model_validate({**merged, key: value})
        except ValidationError:
            log.warning("ignoring invalid persisted setting %s=%r", key, value)
            continue
        merged[key] = value
    return AppConfig.model_validate(merged)


class ConfigStore:
    """Reads from the ConfigMap's watch cache, writes the ConfigMap (optimistic concurrency)."""

    def __init__(self, cr: CRClient, env: dict[str, Any] | None = None):
        self.cr, self.env = cr, env_layer() if env is None else env

    def overrides(self) -> tuple[dict[str, Any], str | None]:
        data, rv = self.cr.configmap_data(self.cr.config)
        try:
            parsed = json.loads(data.get(KEY) or "{}")
        except ValueError:
            log.warning("ConfigMap %s holds invalid JSON; ignoring it", CONFIG_MAP)
            parsed = {}
        return (parsed if isinstance(parsed, dict) else {}), rv

    def current(self) -> AppConfig:
        return effective(self.env, self.overrides()[0])

    def update(self, raw: dict[str, Any]) -> AppConfig:
        try:
            update = ConfigUpdate.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            field = field_of(err["loc"])
            msg = f"unknown setting {field!r}" if err["type"] == "extra_forbidden" else err["msg"]
            raise Problem(422, f"{field}: {msg}", field) from None
        changes = update.model_dump(by_alias=True, exclude_unset=True, mode="json")
        if changes.get("allowedDataRoots") is not None:
            changes["allowedDataRoots"] = normalise_roots(changes["allowedDataRoots"])
        for attempt in range(5):
            overrides, rv = self.overrides() if attempt == 0 else self._live()
            new = {**overrides, **changes}
            new = {k: v for k, v in new.items() if v is not None}
            try:
                AppConfig.model_validate({**self.env, **new})
            except ValidationError as e:
                field = field_of(e.errors()[0]["loc"])
                raise Problem(422, f"{field}: {e.errors()[0]['msg']}", field) from None
            try:
                self.cr.write_configmap(
                    self.cr.config, CONFIG_MAP, {KEY: json.dumps(new, sort_keys=True)}, rv
                )
            except KubeError as e:
                if e.status == 409:  # changed (or created) meanwhile: read it again
                    continue
                raise
            return effective(self.env, new)
        raise Problem(409, "the configuration kept changing; try again")

    def _live(self) -> tuple[dict[str, Any], str | None]:
        data, rv = self.cr.read_configmap_live(self.cr.config, CONFIG_MAP)
        try:
            parsed = json.loads(data.get(KEY) or "{}")
        except ValueError:
            parsed = {}
        return (parsed if isinstance(parsed, dict) else {}), rv

    def reset(self) -> AppConfig:
        self.cr.delete_configmap(self.cr.config, CONFIG_MAP)
        return effective(self.env, {})
