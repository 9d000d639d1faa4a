"""What the operator keeps in memory per resource is dropped when the resource is released."""

from __future__ import annotations

import asyncio

from kms_operator.reconcile import Operator
from kms_operator.settings import Settings


def test_forget_service_drops_its_render_cache_lock_and_timers() -> None:
    op = Operator(kube=None, settings=Settings())  # type: ignore[arg-type]  # no API call is made
    for ns, name in (("a", "svc"), ("a", "other")):
        op.rendered[(ns, name)] = ("key", [], [], [], b"mapfile", [])
        op.pending_since[(ns, name)] = 1.0
        op.service_cost[(ns, name)] = 0.1
        op.locks[(ns, name)] = asyncio.Lock()
    op.locks[("MapJob", "a", "svc")] = asyncio.Lock()

    op.forget_service("a", "svc")

    for table in (op.rendered, op.pending_since, op.service_cost):
        assert list(table) == [("a", "other")]
    assert set(op.locks) == {
        ("a", "other"),
        ("MapJob", "a", "svc"),
    }  # a MapJob of the same name is not touched
