"""`python -m kms_operator [--namespace NS ...] [--all-namespaces]`: run the operator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

# Kopf imports the `kubernetes` client whenever it is installed (to offer logins through it); the
# operator talks to the API with kms_crds.kube and logs Kopf in itself, and that import alone costs
# 18 MB of resident memory. (In the product image it is not installed; in a dev venv it is.)
sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]

from .memory import limit_arenas  # noqa: E402

limit_arenas()  # before any thread starts (memory.py)

import kopf  # noqa: E402
from prometheus_client import start_http_server  # noqa: E402

from . import handlers  # noqa: E402, F401  (registers the Kopf handlers)
from .settings import Settings  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(prog="kms-operator", description="kube-mapserver operator")
    p.add_argument("--namespace", "-n", action="append", default=[], help="watch only these namespaces")
    p.add_argument("--all-namespaces", "-A", action="store_true", help="watch the whole cluster (default)")
    p.add_argument(
        "--liveness",
        default=os.environ.get("KMS_LIVENESS", "http://0.0.0.0:8080/healthz"),
        help="Kopf liveness endpoint",
    )
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args()
    logging.basicConfig(
        level=logging.DEBUG if a.verbose else logging.INFO,
        format='{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}',
    )
    if os.environ.get("KMS_TRACEMALLOC"):  # profiling aid (memory.py): SIGUSR1 logs allocation sites
        from .memory import trace_allocations

        trace_allocations(
            int(os.environ["KMS_TRACEMALLOC"]), os.environ.get("KMS_TRACEMALLOC_GROUP", "lineno")
        )
    settings = Settings()
    lease = None
    if settings.lease_seconds:
        from .kube import Kube
        from .leadership import Lease

        lease = Lease(Kube.from_environment().http, settings.lease_seconds)
        lease.wait_for()  # a second operator started by mistake stands by here
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=os.environ.get("KMS_METRICS_ADDR", "0.0.0.0"))
    try:
        asyncio.run(run(a, lease))
    finally:
        if lease:
            lease.release()


async def run(a: argparse.Namespace, lease) -> None:
    stop = asyncio.Event()
    keeper = asyncio.create_task(lease.keep(stop)) if lease else None
    try:
        await kopf.operator(
            clusterwide=not a.namespace,
            namespaces=a.namespace,
            liveness_endpoint=a.liveness or None,
            standalone=True,
            memo=kopf.Memo(namespaces=list(a.namespace)),
        )
    finally:
        stop.set()
        if keeper:
            await keeper


if __name__ == "__main__":
    main()
