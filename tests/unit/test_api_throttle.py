"""Pure parts of the shared login throttle (Lease names, attempt lists, expiry), the hashing gate,
the CPU count it is sized from, and the users CLI reading a mounted password file."""

from __future__ import annotations

import asyncio

import pytest

from kms_api.auth import Busy, HashGate
from kms_api.settings import Settings, hash_slots, usable_cpus
from kms_api.throttle import ATTEMPTS, _without, attempts_of, expired, lease_name, micro_time, wait_for
from kms_api.users_cli import _read_password


def lease(times: str) -> dict:
    return {"metadata": {"name": "x", "annotations": {ATTEMPTS: times}}}


def test_lease_names_are_valid_opaque_and_distinct():
    names = {lease_name(k) for k in ("u:alice", "u:Alice", "ip:10.0.0.1", "u:" + "x" * 256, "u:a/b c")}
    assert len(names) == 5
    for n in names:
        assert len(n) <= 63 and n.replace("-", "").isalnum() and n == n.lower()
        assert "alice" not in n and "10.0.0.1" not in n
    assert lease_name("u:alice").startswith("kms-login-u-")
    assert lease_name("ip:10.0.0.1").startswith("kms-login-ip-")


def test_attempts_in_the_window_and_the_wait_for_a_free_slot():
    obj = lease("100.5,junk,,130.25,40,999999")
    assert attempts_of(obj, now=150, window=60) == [100.5, 130.25]  # 40 left the window, far future ignored
    assert attempts_of(None, now=150, window=60) == []
    assert wait_for([100.5, 130.25], limit=3, now=150, window=60) is None
    assert wait_for([100.5, 130.25], limit=2, now=150, window=60) == 11  # 100.5 leaves at 160.5
    assert wait_for([100.5, 130.25], limit=1, now=150, window=60) == 41
    assert wait_for([149.9], limit=1, now=150, window=0.05) == 1  # never less than a second
    assert expired(obj, now=200, window=60) and not expired(obj, now=180, window=60)
    assert _without([1.0, 2.000001, 2.000001], 2.000001) == [1.0, 2.000001]
    assert _without([1.0], 5.0) == [1.0]
    assert micro_time(0.5) == "1970-01-01T00:00:00.500000Z"


def test_hash_gate_refuses_quickly_beyond_its_slots():
    async def run() -> tuple[list[str], int]:
        gate = HashGate(slots=2, wait=0.05)
        release = asyncio.Event()
        entered: list[str] = []

        async def login(i: int) -> str:
            try:
                async with gate.slot():
                    entered.append(f"in-{i}")
                    await release.wait()
                    return "ok"
            except Busy:
                return "busy"

        tasks = [asyncio.create_task(login(i)) for i in range(5)]
        pending = set(tasks)
        while len(pending) > 2:  # the three beyond the two slots give up by themselves
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        release.set()
        results = await asyncio.gather(*tasks)
        async with gate.slot(), gate.slot():  # every slot came back
            pass
        return results, len(entered)

    results, entered = asyncio.run(run())
    assert sorted(results) == ["busy", "busy", "busy", "ok", "ok"] and entered == 2


def test_hash_gate_without_waiting():
    async def run() -> str:
        gate = HashGate(slots=1, wait=0)
        async with gate.slot():
            try:
                async with gate.slot():
                    return "entered"
            except Busy:
                return "busy"

    assert asyncio.run(run()) == "busy"


def test_usable_cpus_follows_the_cgroup_quota(tmp_path):
    cpu_max = tmp_path / "cpu.max"
    free = usable_cpus(tmp_path / "missing")
    assert free >= 1
    cpu_max.write_text("max 100000\n")
    assert usable_cpus(cpu_max) == free
    cpu_max.write_text("50000 100000\n")  # half a CPU: one slot
    assert usable_cpus(cpu_max) == 1
    cpu_max.write_text(f"{(free + 5) * 100000} 100000\n")  # a quota above the CPUs there are
    assert usable_cpus(cpu_max) == free


def test_settings_for_hashing_and_the_shared_throttle():
    s = Settings.from_env({"KMS_HASH_CONCURRENCY": "3", "KMS_HASH_WAIT": "0.2"})
    assert (s.hash_concurrency, s.hash_wait_seconds, s.login_shared_throttle) == (3, 0.2, True)
    s = Settings.from_env({"KMS_LOGIN_SHARED_THROTTLE": "false"})
    assert not s.login_shared_throttle and s.hash_concurrency == 0  # 0: hash_slots()
    assert 1 <= hash_slots() <= usable_cpus()


def test_password_file(tmp_path):
    f = tmp_path / "password"
    f.write_text("from-a-secret-volume\n")
    assert _read_password(False, str(f)) == "from-a-secret-volume"
    f.write_text("no-newline-at-all")
    assert _read_password(False, str(f)) == "no-newline-at-all"
    f.write_text("short")
    with pytest.raises(SystemExit, match="8 characters"):
        _read_password(False, str(f))
    with pytest.raises(SystemExit, match="cannot read"):
        _read_password(False, str(tmp_path / "missing"))
