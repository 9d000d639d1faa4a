"""GET /config (public), POST /config and POST /config/reset (admin)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from ..config import AppConfig, ConfigUpdate
from ..deps import AdminUser, Ctx

router = APIRouter(prefix="/config", tags=["config"])


@router.get("", response_model=AppConfig, summary="Effective settings")
def get_config(ctx: Ctx) -> AppConfig:
    return ctx.config.current()


@router.post("", response_model=AppConfig, summary="Change settings (partial, persisted)")
async def update_config(update: ConfigUpdate, _: AdminUser, ctx: Ctx) -> AppConfig:
    raw = update.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return await run_in_threadpool(ctx.config.update, raw)


@router.post("/reset", response_model=AppConfig, summary="Back to defaults < environment")
def reset_config(_: AdminUser, ctx: Ctx) -> AppConfig:
    return ctx.config.reset()
