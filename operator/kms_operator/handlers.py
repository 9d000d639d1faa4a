"""Kopf wiring only: every handler hands over to the level-based reconcilers of the Operator
(runtime.py), which the startup handler keeps in Kopf's memo (`memo.op`). MapDatasets are not
Kopf's: the startup handler starts their own controller (dataset_watch.py)."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import kopf

from kms_crds import GROUP, VERSION
from kms_crds.kubeconfig import load as load_connection

from .kinds import CHILD_RESOURCES
from .kube import ApiError, Kube
from .labels import FINALIZER, MANAGED_BY
from .memory import return_freed_memory
from .metrics import WATCH_REQUESTS
from .runtime import Operator
from .settings import Settings

log = logging.getLogger("kms_operator")
MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}


def with_operator(fn: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """A handler `fn(op, **kwargs)`: given the Operator made at startup (Kopf's memo), once the
    dataset and service snapshots are listed; an ApiError becomes a Kopf retry when transient,
    else a permanent failure. (Kopf takes the handler's id from `fn`.)"""

    @functools.wraps(fn)
    async def handler(memo: kopf.Memo, **kwargs: Any) -> None:
        op: Operator = memo.op
        await op.state.synced.wait()
        try:
            await fn(op, **kwargs)
        except ApiError as e:
            if e.transient:
                raise kopf.TemporaryError(str(e), delay=5) from e
            raise kopf.PermanentError(str(e)) from e

    return handler


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    s = Settings()
    # A watch that silently dies leaves an operator deaf: bound every watch and request.
    settings.watching.server_timeout = s.watch_server_timeout
    settings.watching.client_timeout = s.watch_server_timeout + 30
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = s.request_timeout
    # with a bounded pool, waiting for a free connection counts against this timeout
    settings.networking.connect_timeout = 30
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our own Events say what happened; Kopf's only on trouble
    settings.execution.max_workers = 8
    # blocking API calls run in threads: one for each dataset worker's status patch and its Event
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(2 * s.dataset_workers + 8, thread_name_prefix="api"))
    memo.op = Operator(Kube.from_environment(timeout=s.request_timeout), s, memo.get("namespaces", []))
    memo.op.start()
    # what exists now (modules, classes, settings) lives as long as the process: keep it out of
    # the collector's full passes, which otherwise walk it again and again during a burst
    gc.freeze()
    memo.op.background.append(asyncio.get_running_loop().create_task(return_freed_memory()))
    log.info("kube-mapserver operator configured: data root %s", s.data_root)


@kopf.on.cleanup()
async def close_clients(memo: kopf.Memo, **_: Any) -> None:
    """Close the event loop's API session (kms_crds.kube_async)."""
    op = memo.get("op")
    if op is not None:
        await op.kube.aio.close()


@kopf.on.login()
async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
    """Kopf's session from the same configuration as our own client (kms_crds.kubeconfig: the
    service account in a pod, else the kubeconfig), on a connection pool with a bound: Kopf's
    default pool is unlimited, and every asyncio TLS connection keeps ~256 KiB of buffers. On a
    401 Kopf logs in again, which reads a rotated token."""
    conn = load_connection()
    token = conn.token()
    watches = aiohttp.TraceConfig()
    watches.on_request_start.append(_count_watch)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=Settings().connection_limit, ssl=conn.ssl_context),
        headers={"Authorization": f"Bearer {token}"} if token else {},
        trace_configs=[watches],
    )
    return kopf.AiohttpSession(server=conn.server, default_namespace=conn.namespace, aiohttp_session=session)


async def _count_watch(
    session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestStartParams
) -> None:
    """Count each watch request Kopf opens (the first one and every reconnect), by resource."""
    if params.url.query.get("watch") == "true":
        WATCH_REQUESTS.labels(resource=params.url.path.rstrip("/").rsplit("/", 1)[-1]).inc()


# ------------------------------------------------------------------ MapService


@kopf.on.resume(GROUP, VERSION, "mapservices")
@kopf.on.create(GROUP, VERSION, "mapservices")
@kopf.on.update(GROUP, VERSION, "mapservices")
@with_operator
async def service_changed(op: Operator, namespace: str, name: str, **_: Any) -> None:
    await op.services.reconcile(namespace, name)


@kopf.on.delete(GROUP, VERSION, "mapservices")
@with_operator
async def service_deleted(op: Operator, body: kopf.Body, **_: Any) -> None:
    await op.services.release(body)


# ------------------------------------------------------------------ MapJob


@kopf.on.resume(GROUP, VERSION, "mapjobs")
@kopf.on.create(GROUP, VERSION, "mapjobs")
@kopf.on.update(GROUP, VERSION, "mapjobs")
@with_operator
async def mapjob_changed(op: Operator, namespace: str, name: str, **_: Any) -> None:
    await op.mapjobs.reconcile(namespace, name)


@kopf.on.delete(GROUP, VERSION, "mapjobs")
@with_operator
async def mapjob_deleted(op: Operator, body: kopf.Body, **_: Any) -> None:
    await op.mapjobs.release(body)


@kopf.timer(GROUP, VERSION, "mapjobs", interval=5, when=lambda status, **_: status.get("phase") == "Running")
@with_operator
async def mapjob_running(op: Operator, namespace: str, name: str, **_: Any) -> None:
    """While a job runs, its progress (runner log lines) is mirrored into status every few seconds."""
    op.mapjobs.queue.request((namespace, name))


@kopf.on.event("batch", "v1", "jobs", labels={**MANAGED, "app.kubernetes.io/component": "job"})
@with_operator
async def job_event(op: Operator, namespace: str, labels: kopf.Labels, **_: Any) -> None:
    """Job progress (pods started, completed, failed) is mirrored into the MapJob's status."""
    owner = labels.get("app.kubernetes.io/instance")
    if owner:
        op.mapjobs.queue.request((namespace, owner))


# ------------------------------------------------------------------ children: drift repair, readiness
# (the watched kinds: kinds.CHILD_RESOURCES)


@with_operator
async def child_event(op: Operator, namespace: str, labels: kopf.Labels, **_: Any) -> None:
    owner = labels.get("app.kubernetes.io/instance")
    if owner and any(s["name"] == owner for s in op.state.services_in(namespace)):
        op.services.queue.request((namespace, owner))


for _resource in CHILD_RESOURCES:
    kopf.on.event(*_resource, labels=MANAGED, id=f"child-{_resource[-1]}")(child_event)
