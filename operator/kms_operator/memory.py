"""The operator's memory, as glibc manages it: few heaps, and freed memory given back to the OS.

A burst of thousands of objects (a bulk apply, a resync) allocates and frees tens of MB of bodies,
patches and TLS buffers, from dozens of API threads. glibc gives each thread that allocates a heap
("arena") of its own, up to 8 per core, and keeps freed chunks in them: without these two settings
the process keeps its peak size for good, spread over heaps it never trims."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util

M_ARENA_MAX = -8  # mallopt() parameter (malloc.h)


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018  (glibc only)
    except (OSError, AttributeError):  # not glibc
        return None
    return libc


def limit_arenas(arenas: int = 2) -> None:
    """At most `arenas` malloc heaps for all threads (before any thread starts)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.mallopt(M_ARENA_MAX, arenas)


async def return_freed_memory(period: float = 10.0) -> None:
    """Every `period` seconds, give the memory freed since back to the OS (malloc_trim)."""
    libc = _libc()
    if libc is None:
        return
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    while True:
        await asyncio.sleep(period)
        libc.malloc_trim(0)  # (no gc.collect() here: with thousands of objects in flight it costs seconds)


def trace_allocations(frames: int, group: str = "lineno", every: float = 0.05) -> None:
    """A profiling aid (KMS_TRACEMALLOC=<frames>): trace Python allocations, keep a snapshot of
    them at their highest (looked at every `every` seconds, taken when 4 MB above the last), and
    on SIGUSR1 log the top sites now and at that peak: where a burst's memory goes."""
    import logging
    import signal
    import threading
    import time
    import tracemalloc

    log = logging.getLogger("kms_operator.memory")
    tracemalloc.start(frames)
    highest: dict = {"size": 0, "snapshot": None}

    def sample() -> None:
        while True:
            time.sleep(every)
            current, _ = tracemalloc.get_traced_memory()
            if current > highest["size"] + (4 << 20):
                highest.update(size=current, snapshot=tracemalloc.take_snapshot())

    def dump(*_: object) -> None:
        current, peak = tracemalloc.get_traced_memory()
        log.warning(
            "traced %d KiB now, %d KiB at the sampled peak (%d KiB peak)",
            current >> 10,
            highest["size"] >> 10,
            peak >> 10,
        )
        for when, snap in (("now", tracemalloc.take_snapshot()), ("at peak", highest["snapshot"])):
            for stat in snap.statistics(group)[:20] if snap else []:
                log.warning("%s: %s", when, stat)

    threading.Thread(target=sample, daemon=True, name="tracemalloc").start()
    signal.signal(signal.SIGUSR1, dump)
