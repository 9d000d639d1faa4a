"""Thread -> event loop hand-offs (handoff.py): calls arrive in order, a batch wakes the loop once,
a failing call does not lose the rest, and a Lane gives back results and exceptions."""

from __future__ import annotations

import asyncio
import threading

import pytest

from kms_operator.handoff import Lane, LoopInbox


def test_calls_from_a_thread_run_on_the_loop_in_order_with_one_wake_up_per_batch() -> None:
    async def main() -> tuple[list[int], int, set[int]]:
        loop = asyncio.get_running_loop()
        inbox = LoopInbox("test")
        seen: list[int] = []
        threads: set[int] = set()
        wakeups = 0
        drain = inbox._drain

        def counted_drain() -> None:
            nonlocal wakeups
            wakeups += 1
            drain()

        inbox._drain = counted_drain  # type: ignore[method-assign]

        def take(i: int) -> None:
            seen.append(i)
            threads.add(threading.get_ident())
            if i == 3:
                raise ValueError("one bad call")

        def producer() -> None:  # the loop is busy meanwhile: all 100 make one batch
            for i in range(100):
                inbox.put(loop, take, i)

        t = threading.Thread(target=producer)
        t.start()
        t.join()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return seen, wakeups, threads

    seen, wakeups, threads = asyncio.run(main())
    assert seen == list(range(100))  # in order, and the failing call did not stop the batch
    assert wakeups == 1
    assert threads == {threading.get_ident()}  # (asyncio.run runs the loop in this thread)


def test_a_lane_runs_calls_on_its_one_thread_and_returns_results_and_errors() -> None:
    lane = Lane("test-lane")

    def where(x: int) -> tuple[int, str]:
        return x * 2, threading.current_thread().name

    def fails() -> None:
        raise RuntimeError("GDAL said no")

    async def main() -> list:
        results = await asyncio.gather(*(lane.run(where, i) for i in range(20)))
        with pytest.raises(RuntimeError, match="GDAL said no"):
            await lane.run(fails)
        return results

    results = asyncio.run(main())
    assert [r[0] for r in results] == [i * 2 for i in range(20)]
    assert {r[1] for r in results} == {"test-lane"}


def test_a_cancelled_wait_on_a_lane_leaves_the_lane_working() -> None:
    lane = Lane("test-cancel")
    gate = threading.Event()

    async def main() -> int:
        slow = asyncio.ensure_future(lane.run(gate.wait, 5))
        await asyncio.sleep(0.01)
        slow.cancel()
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await slow
        return await lane.run(lambda: 7)

    assert asyncio.run(main()) == 7
