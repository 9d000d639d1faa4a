"""The operator's work queues (queues.py): bursts coalesce, a request during a run reruns once,
failures are retried a bounded number of times."""

from __future__ import annotations

import asyncio

from kms_operator.queues import BatchQueue, Debouncer, TokenBucket, WorkQueue


def run(coro):
    return asyncio.run(coro)


def test_a_burst_of_requests_for_one_key_is_one_run() -> None:
    async def main() -> list:
        runs: list = []

        async def work(key):
            runs.append(key)

        q = Debouncer("test", 0.0, work, backoff=0.0)
        for _ in range(50):
            q.request(("ns", "a"))
        q.request(("ns", "b"))
        await q.idle()
        assert not q.tasks
        return runs

    assert sorted(run(main())) == [("ns", "a"), ("ns", "b")]


def test_a_request_during_a_run_runs_the_key_once_more() -> None:
    async def main() -> int:
        runs = 0
        started, release = asyncio.Event(), asyncio.Event()

        async def work(key):
            nonlocal runs
            runs += 1
            if runs == 1:
                started.set()
                await release.wait()

        q = Debouncer("test", 0.0, work, backoff=0.0)
        q.request(("ns", "a"))
        await started.wait()
        for _ in range(5):  # while the first run is busy: all of these make one more run
            q.request(("ns", "a"))
        release.set()
        await q.idle()
        return runs

    assert run(main()) == 2


def test_failures_are_retried_until_success_or_the_retry_limit() -> None:
    async def main(fail_times: int, retries: int) -> int:
        calls = 0

        async def work(key):
            nonlocal calls
            calls += 1
            if calls <= fail_times:
                raise RuntimeError("API down")

        q = Debouncer("test", 0.0, work, retries=retries, backoff=0.0)
        q.request(("ns", "a"))
        await q.idle()
        assert not q.tasks
        return calls

    assert run(main(fail_times=2, retries=5)) == 3  # two failures, then it worked
    assert run(main(fail_times=100, retries=4)) == 4  # given up after the fourth failure


def test_a_batch_queue_runs_one_batch_per_namespace_and_retries_only_the_failed() -> None:
    async def main() -> list:
        batches: list = []

        async def work(ns, names):
            batches.append((ns, sorted(names)))
            return {"b": RuntimeError("conflict")} if len(batches) == 1 and ns == "x" else {}

        q = BatchQueue("test", 0.0, work, backoff=0.0)
        for name in ("a", "b", "c"):
            q.request(("x", name))
        q.request(("y", "a"))
        await q.idle()
        assert not q.tasks and not q.failures
        return batches

    batches = run(main())
    assert sorted(batches) == [("x", ["a", "b", "c"]), ("x", ["b"]), ("y", ["a"])]
    assert batches.index(("x", ["a", "b", "c"])) < batches.index(("x", ["b"]))


def test_a_batch_that_raises_is_retried_whole_and_given_up_after_the_limit() -> None:
    async def main() -> list:
        batches: list = []

        async def work(ns, names):
            batches.append(sorted(names))
            raise RuntimeError("API down")

        q = BatchQueue("test", 0.0, work, retries=3, backoff=0.0)
        q.request(("x", "a"))
        q.request(("x", "b"))
        await q.idle()
        assert not q.tasks and not q.failures
        return batches

    assert run(main()) == [["a", "b"]] * 3


def test_a_work_queue_runs_each_key_once_per_burst_and_never_twice_at_once() -> None:
    async def main() -> tuple[list, int]:
        runs: list = []
        running: set = set()
        overlap = 0
        gate = asyncio.Event()

        async def work(key):
            nonlocal overlap
            overlap += key in running
            running.add(key)
            runs.append(key)
            if key == ("ns", "a") and runs.count(key) == 1:
                await gate.wait()
            running.discard(key)

        q = WorkQueue("test", work, workers=4, backoff=0.0)
        q.start()
        for _ in range(20):  # waiting: coalesced into one run
            q.request(("ns", "a"))
        q.request(("ns", "b"))
        while ("ns", "a") not in q.running:
            await asyncio.sleep(0)
        for _ in range(5):  # while a runs: one more run afterwards
            q.request(("ns", "a"))
        gate.set()
        await q.idle()
        q.stop()
        return runs, overlap

    runs, overlap = run(main())
    assert sorted(runs) == [("ns", "a"), ("ns", "a"), ("ns", "b")]
    assert overlap == 0


def test_a_work_queue_retries_a_failing_key_up_to_the_limit() -> None:
    async def main() -> int:
        calls = 0

        async def work(key):
            nonlocal calls
            calls += 1
            raise RuntimeError("apiserver says no")

        q = WorkQueue("test", work, workers=2, retries=3, backoff=0.0)
        q.start()
        q.request(("ns", "a"))
        await q.idle()
        q.stop()
        return calls

    assert run(main()) == 3


def test_a_token_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate=0.0, burst=3)
    assert [bucket.take() for _ in range(5)] == [True, True, True, False, False]


def test_queues_run_nothing_before_they_are_ready() -> None:
    async def main() -> list:
        runs: list = []
        ready = asyncio.Event()

        async def work(*key):
            runs.append(key)
            return {}

        debouncer = Debouncer("test", 0.0, work, ready=ready)
        batches = BatchQueue("test", 0.0, work, ready=ready)
        debouncer.request(("ns", "a"))
        batches.request(("ns", "b"))
        for _ in range(20):
            await asyncio.sleep(0)
        assert runs == [], "ran before the first LIST was in"
        ready.set()
        await debouncer.idle()
        await batches.idle()
        return runs

    assert sorted(map(str, run(main()))) == ["('ns', {'b'})", "(('ns', 'a'),)"]


def test_a_request_now_cuts_the_pace_of_the_last_run_short() -> None:
    """A service waiting out its pace (seconds, after an expensive look) runs at once when what
    it waited for has happened (the last dataset of a bulk apply inspected)."""

    async def main() -> tuple[int, float]:
        runs: list[float] = []
        loop = asyncio.get_running_loop()
        first = asyncio.Event()

        async def work(key):
            runs.append(loop.time())
            if len(runs) == 1:
                await first.wait()
            return 10.0  # "CPU seconds": with pace 2 the next run would wait 20 s

        q = Debouncer("test", 0.0, work, pace=2.0)
        q.request(("ns", "svc"))
        while not runs:
            await asyncio.sleep(0.01)
        q.request(("ns", "svc"))  # asked again during the run: the next run waits out the pace
        first.set()
        await asyncio.sleep(0.05)
        assert len(runs) == 1
        t0 = loop.time()
        q.request(("ns", "svc"), now=True)
        while len(runs) < 2:
            await asyncio.sleep(0.01)
        await q.idle()
        return len(runs), runs[1] - t0

    n, waited = run(main())
    assert n == 2 and waited < 5.0
