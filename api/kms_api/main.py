"""The app factory: `create_app(settings)` wires the CR client, caches, routers and handlers."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from kms_crds.kube import Kube, KubeError

from . import __version__, errors, observability
from .auth import HashGate, LoginThrottle
from .config import ConfigStore
from .crclient import CRClient
from .deps import Context
from .models import ErrorBody
from .routers import auth, cache, config, datasets, health, jobs, preview, rendering, services, ui
from .settings import Settings, hash_slots
from .throttle import SharedThrottle
from .tombstones import Tombstones

log = logging.getLogger("kms_api")

COMMON_RESPONSES = {
    401: {"model": ErrorBody, "description": "Missing or invalid bearer token."},
    403: {"model": ErrorBody, "description": "The user's role does not allow this."},
    422: {"model": ErrorBody, "description": "Invalid input; `field` names the offending one."},
    503: {"model": ErrorBody, "description": "The Kubernetes API is unavailable."},
}


def _ensure_key(cr: CRClient) -> None:
    """Create the signing key Secret early (in the background: startup never waits on the apiserver)."""
    try:
        cr.ensure_jwt_key()
    except KubeError as e:  # created on the first login instead
        log.warning("could not read or create the signing key yet: %s", e)


def create_app(settings: Settings | None = None, kube: Kube | None = None) -> FastAPI:
    """A facade for one namespace. Caches start with the app (lifespan) and stop with it."""
    settings = settings or Settings.from_env()
    kube = kube or Kube.from_environment(timeout=settings.request_timeout)
    cr = CRClient(kube, settings)
    shared = None
    if settings.login_shared_throttle:
        shared = SharedThrottle(
            kube,
            settings.namespace,
            settings.login_max_failures,
            settings.login_ip_max_failures,
            settings.login_window_seconds,
            timeout=min(2.0, settings.request_timeout),
            watch_timeout=settings.watch_timeout,
        )
    ctx = Context(
        settings=settings,
        cr=cr,
        config=ConfigStore(cr),
        tombstones=Tombstones(cr, settings.tombstone_max_entries, settings.tombstone_max_age_seconds),
        throttle=LoginThrottle(
            settings.login_max_failures, settings.login_ip_max_failures, settings.login_window_seconds
        ),
        gate=HashGate(settings.hash_concurrency or hash_slots(), settings.hash_wait_seconds),
        shared=shared,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cr.start()
        if shared:
            shared.start()
        log.info("facade for namespace %s starting; watching its resources", settings.namespace)
        threading.Thread(target=_ensure_key, args=(cr,), name="jwt-key", daemon=True).start()
        yield
        if shared:
            shared.stop()
        cr.stop()

    app = FastAPI(
        title="kube-mapserver",
        version=__version__,
        description="Declarative map serving: datasets, jobs and settings as Kubernetes custom resources.",
        lifespan=lifespan,
        responses=COMMON_RESPONSES,
    )
    app.state.ctx = ctx
    errors.install(app)
    observability.install(app)
    for r in (
        auth.router,
        config.router,
        health.router,
        preview.router,
        datasets.router,
        rendering.router,
        services.router,
        cache.router,
        jobs.router,
        ui.router,
    ):
        app.include_router(r)
    return app
