"""What the operator keeps in memory per resource is dropped when the resource is released."""

from __future__ import annotations

import asyncio

from kms_operator.runtime import Operator
from kms_operator.settings import Settings


def test_forget_service_drops_its_render_cache_lock_and_timers() -> None:
    op = Operator(kube=None, settings=Settings())  # type: ignore[arg-type]  # no API call is made
    services, locks = op.services, op.state.locks
    for ns, name in (("a", "svc"), ("a", "other")):
        services.rendered[(ns, name)] = ("key", [], [], [], b"mapfile", [])
        services.pending_since[(ns, name)] = 1.0
        services.service_cost[(ns, name)] = 0.1
        locks[(ns, name)] = asyncio.Lock()
    locks[("MapJob", "a", "svc")] = asyncio.Lock()

    services.forget("a", "svc")

    for table in (services.rendered, services.pending_since, services.service_cost):
        assert list(table) == [("a", "other")]
    assert set(locks) == {
        ("a", "other"),
        ("MapJob", "a", "svc"),
    }  # a MapJob of the same name is not touched
