"""The facade's own figures (the facade alone against a local plane: no operator, no real node). These
were timed assertions in the integration suite; here they are figures with targets:

- `GET /datasets` with 1,000 datasets in the namespace: the first page, a deep page sorted by title
  and a keyword search (p50/p95/p99 of 300 requests each), all answered from the watch cache: the
  facade's count of full LISTs (`kms_api_cache_lists`) must not move meanwhile;
- login timing, no user oracle: an unknown user against a known user with a wrong password (the
  facade verifies a dummy argon2 hash for unknown users), medians of interleaved logins, ratio;
- `GET /datasets` p95 during a flood of 200 bad logins (50 at once, unknown users, never
  throttled) against the same without the flood: password checks are bounded (KMS_HASH_CONCURRENCY),
  logins beyond them are answered 503 at once, so lists stay fast;
- `GET /health` while the apiserver hangs (a port that accepts connections and never answers):
  each check is bounded by the facade's health timeout and they run concurrently, so an answer
  takes about one timeout (two or more: the checks ran one after the other).

`make bench` runs this as its `api` phase, on the plane of its other phases
(`BENCH_ARGS="--skip api"` leaves it out); alone, it starts a plane of its own:

    .venv/bin/python -m bench.api_bench [--datasets 1000] [--requests 300] [--logins 15]
                                        [--flood 200] [--health-runs 10] [--json bench/results/api.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import yaml

from bench import preview_bench
from bench.common import PY, REPO, Plane, cluster_mod, dump, log, percentile, sample_data, summary, wait

LIST_TARGET_MS = 30  # p50 of a page from the cache (the same target as the facade row of bench.run)
LOGIN_RATIO = (0.5, 2.0)  # unknown user / wrong password, medians
FLOOD_P95_MS = (
    50  # GET /datasets p95 during a login flood (about 4 ms without, 2 cores shared with the plane)
)


class Facade:
    """`python -m kms_api` serving one namespace of a plane; users made with its CLI."""

    def __init__(self, kubeconfig: Path, namespace: str, data_root: Path, logfile: Path, **env: str):
        self.logfile = logfile
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "KMS_NAMESPACE": namespace,
            "KMS_DATA_ROOT": str(data_root),
            **env,
        }
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.passwords: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_user(self, name: str, role: str) -> None:
        password = os.urandom(12).hex()
        subprocess.run(
            [PY, "-m", "kms_api", "user", "add", name, "--role", role, "--password-stdin"],
            input=password + "\n",
            text=True,
            env=self.env,
            check=True,
            capture_output=True,
            cwd=REPO,
            timeout=60,
        )
        self.passwords[name] = password

    def start(self, ready: bool = True) -> None:
        """ready: wait for /health 200 with the caches listed; else for any answer of /health."""
        self.port = cluster_mod.free_port()
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(
                [PY, "-m", "kms_api", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )

        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the facade exited ({self.proc.returncode}); see {self.logfile}")
            try:
                r = httpx.get(self.url + "/health", timeout=5)
            except httpx.HTTPError:
                return False
            if not ready:
                return r.status_code in (200, 503)
            comps = {c["name"]: c["status"] for c in r.json().get("components", [])}
            return r.status_code == 200 and comps.get("cache") == "ok"

        wait(up, "facade /health", 120)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def token(self, user: str) -> str:
        r = httpx.post(
            self.url + "/token", data={"username": user, "password": self.passwords[user]}, timeout=30
        )
        r.raise_for_status()
        return r.json()["access_token"]

    def cache_lists(self, resource: str = "mapdatasets") -> int:
        text = httpx.get(self.url + "/metrics", timeout=10).text
        m = re.search(rf'^kms_api_cache_lists\{{resource="{resource}"\}} ([0-9.]+)$', text, re.M)
        if not m:
            raise RuntimeError(f"kms_api_cache_lists{{resource={resource}}} missing from /metrics")
        return int(float(m.group(1)))


def _dataset(i: int) -> dict:
    return {
        "apiVersion": "maps.kube-mapserver.io/v1alpha1",
        "kind": "MapDataset",
        "metadata": {"name": f"perf-{i:04d}", "labels": {"collection": "perf"}},
        "spec": {
            "type": "raster",
            "source": {"path": f"perf/tile-{i:04d}.tif"},
            "identifier": f"no.test:perf-{i:04d}",
            "title": f"Performance tile {i}",
            "keywords": ["perf", f"row-{i // 50}"],
        },
    }


def list_latency(plane: Plane, fac: Facade, ns: str, n: int, requests: int) -> dict:
    """GET /datasets pages at n datasets, timed on this host (ms); no LIST by the facade meanwhile."""
    t0 = time.perf_counter()
    plane.create_all(ns, "mapdatasets", [_dataset(i) for i in range(n)], concurrency=16)
    created = time.perf_counter() - t0
    headers = {"Authorization": f"Bearer {fac.token('viewer')}"}
    row = f"row-{min(7, (n - 1) // 50)}"  # a keyword of 50 datasets
    queries = {
        "limit=50": {"limit": 50},
        f"limit=50&offset={max(0, n - 100)}&sort=-title": {
            "limit": 50,
            "offset": max(0, n - 100),
            "sort": "-title",
        },
        f"limit=50&q={row}": {"limit": 50, "q": row},
    }
    with httpx.Client(base_url=fac.url, headers=headers, timeout=30) as c:

        def cached() -> bool:
            r = c.get("/datasets", params={"limit": 1})
            return r.status_code == 200 and r.json().get("total") == n

        wait(cached, f"facade cache holding {n} datasets", 300)
        lists_before = fac.cache_lists()
        for _ in range(20):  # warm-up
            c.get("/datasets", params={"limit": 50})
        runs: dict[str, dict] = {}
        for label, params in queries.items():
            times = []
            for _ in range(requests):
                t = time.perf_counter()
                r = c.get("/datasets", params=params)
                times.append((time.perf_counter() - t) * 1000)
                page = r.json() if r.status_code == 200 else {}
                want = min(params["limit"], max(0, page.get("total", 0) - params.get("offset", 0)))
                if r.status_code != 200 or not want or len(page["items"]) != want:
                    raise RuntimeError(f"GET /datasets?{label}: HTTP {r.status_code}: {r.text[:300]}")
            runs[label] = {**summary(times), "p99": percentile(times, 99)}
            log(f"  GET /datasets?{label}: p50 {runs[label]['p50']:.1f} ms, p95 {runs[label]['p95']:.1f} ms")
        lists_after = fac.cache_lists()
    return {
        "datasets": n,
        "create_s": created,
        "create_threads": 16,
        "requests_each": requests,
        "ms": runs,
        "cache_lists_during": lists_after - lists_before,
    }


def login_timing(fac: Facade, logins: int) -> dict:
    """401 logins, timed on this host (ms): unknown users against a known user with a wrong
    password, interleaved so that load on the machine hits both alike."""

    def timed(c: httpx.Client, username: str) -> float:
        t0 = time.perf_counter()
        r = c.post("/token", data={"username": username, "password": "not-the-password"})
        elapsed = (time.perf_counter() - t0) * 1000
        if r.status_code != 401:
            raise RuntimeError(f"login of {username!r}: HTTP {r.status_code} (want 401): {r.text[:300]}")
        return elapsed

    unknown, wrong = [], []
    with httpx.Client(base_url=fac.url, timeout=30) as c:
        for _ in range(3):  # warm-up: the first argon2 runs, connections
            timed(c, "editor")
            timed(c, "nobody")
        for i in range(logins):
            unknown.append(timed(c, f"nobody-{i}"))
            wrong.append(timed(c, "editor"))
    u, w = summary(unknown), summary(wrong)
    return {"unknown_user_ms": u, "wrong_password_ms": w, "ratio_p50": u["p50"] / w["p50"]}


def _flood(url: str, logins: int, at_once: int, started, out) -> None:
    """In a process of its own (the flood's clients must not slow the measuring one down): bad
    logins, `at_once` in flight, each answer's status and latency (ms) put on `out`."""
    import asyncio

    async def main() -> list[tuple[int, float]]:
        gate = asyncio.Semaphore(at_once)
        limits = httpx.Limits(max_connections=at_once, max_keepalive_connections=at_once)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:

            async def one(i: int) -> tuple[int, float]:
                async with gate:
                    t = time.perf_counter()
                    data = {"username": f"flood-{i}-{os.urandom(4).hex()}", "password": "x"}
                    r = await c.post("/token", data=data)
                    return r.status_code, (time.perf_counter() - t) * 1000

            started.set()
            return await asyncio.gather(*(one(i) for i in range(logins)))

    out.put(asyncio.run(main()))


def login_flood(fac: Facade, logins: int = 200, at_once: int = 50, samples: int = 200) -> dict:
    """GET /datasets?limit=50 latency (ms) without, then during, `logins` bad logins sent
    `at_once` at a time by another process; the answers to the logins by status and latency."""
    import multiprocessing

    headers = {"Authorization": f"Bearer {fac.token('viewer')}"}

    def timed_lists(c: httpx.Client, until) -> list[float]:
        times = []
        while not until(len(times)):
            t = time.perf_counter()
            r = c.get("/datasets", params={"limit": 50})
            times.append((time.perf_counter() - t) * 1000)
            if r.status_code != 200:
                raise RuntimeError(f"GET /datasets during the flood: HTTP {r.status_code}: {r.text[:300]}")
        return times

    spawn = multiprocessing.get_context("spawn")
    results, started = spawn.Queue(), spawn.Event()
    with httpx.Client(base_url=fac.url, headers=headers, timeout=30) as c:
        quiet = timed_lists(c, lambda n: n >= samples)
        flood = spawn.Process(target=_flood, args=(fac.url, logins, at_once, started, results), daemon=True)
        flood.start()
        if not started.wait(120):
            raise RuntimeError("the login flood's process did not start")
        t0 = time.perf_counter()
        during = timed_lists(c, lambda n: not flood.is_alive() or not results.empty())
        answers = results.get(timeout=300)
        flood_s = time.perf_counter() - t0
        flood.join(30)
    codes = Counter(code for code, _ in answers)
    if set(codes) - {401, 429, 503}:
        raise RuntimeError(f"login flood: unexpected answers {dict(codes)}")
    q, d = summary(quiet), summary(during)
    return {
        "logins": logins,
        "at_once": at_once,
        "answers": {str(k): v for k, v in sorted(codes.items())},
        "login_ms": summary([ms for _, ms in answers]),
        "refused_ms": summary([ms for code, ms in answers if code == 503] or [0.0]),
        "flood_s": flood_s,
        "lists_quiet_ms": q,
        "lists_during_ms": d,
        "lists_during": len(during),
        "p95_ratio": d["p95"] / q["p95"],
    }


def health_when_the_apiserver_hangs(plane: Plane, workdir: Path, data_root: Path, ns: str, runs: int) -> dict:
    """/health of a facade whose apiserver and operator URL are a port that accepts connections
    and never answers (held open for the whole measurement: no port picked and released)."""
    from kms_api.settings import Settings

    check_timeout = Settings().health_timeout
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(socket.SOMAXCONN)
        port = hole.getsockname()[1]
        cfg = yaml.safe_load(plane.kubeconfig.read_text())
        for c in cfg["clusters"]:
            c["cluster"]["server"] = f"https://127.0.0.1:{port}"
        kubeconfig = workdir / "kubeconfig-hung"
        kubeconfig.write_text(yaml.safe_dump(cfg))
        fac = Facade(
            kubeconfig,
            ns,
            data_root,
            workdir / "facade-hung.log",
            KMS_OPERATOR_HEALTH_URL=f"http://127.0.0.1:{port}/healthz",
        )
        times = []
        try:
            fac.start(ready=False)
            with httpx.Client(timeout=30) as c:
                for _ in range(runs):
                    t = time.perf_counter()
                    r = c.get(fac.url + "/health")
                    times.append(time.perf_counter() - t)
                    comps = {x["name"]: x["status"] for x in r.json().get("components", [])}
                    if (
                        r.status_code != 503
                        or comps.get("kubernetes") != "down"
                        or comps.get("operator") != "down"
                    ):
                        raise RuntimeError(
                            f"/health with a hung apiserver: HTTP {r.status_code}: {r.text[:300]}"
                        )
        finally:
            fac.stop()
    return {
        "runs": runs,
        "s": summary(times),
        "max_s": max(times),
        "checks": 2,
        "check_timeout_s": check_timeout,
    }


def run(
    plane: Plane,
    workdir: Path,
    data_root: Path,
    n: int = 1000,
    requests: int = 300,
    logins: int = 15,
    health_runs: int = 10,
    flood: int = 200,
) -> dict | None:
    try:
        import kms_api  # noqa: F401
    except ImportError:
        log("facade (kms_api) not present: skipping the api benchmark")
        return None
    ns = plane.namespace("api-bench")
    fac = Facade(
        plane.kubeconfig,
        ns,
        data_root,
        workdir / "facade-api.log",
        KMS_LOGIN_MAX_FAILURES="1000000",  # every timed login fails on purpose: never throttled
        KMS_LOGIN_IP_MAX_FAILURES="1000000",
    )
    fac.add_user("viewer", "viewer")
    fac.add_user("editor", "editor")
    try:
        fac.start()
        log(f"facade: GET /datasets at {n} datasets ({requests} requests per query)")
        out = {"list": list_latency(plane, fac, ns, n, requests)}
        log(f"facade: login timing, unknown user vs wrong password ({logins} each, interleaved)")
        out["login"] = login_timing(fac, logins)
        log(f"  ratio of the medians {out['login']['ratio_p50']:.2f}")
        log(f"facade: GET /datasets during a flood of {flood} bad logins")
        out["flood"] = login_flood(fac, flood)
        f = out["flood"]
        log(
            f"  p95 {f['lists_quiet_ms']['p95']:.1f} ms quiet, {f['lists_during_ms']['p95']:.1f} ms during; "
            f"logins {f['answers']}"
        )
        log("facade: POST /datasets/preview of the example raster (40 each)")
        out["preview"] = preview_bench.preview_latency(fac.url, fac.token("editor"), 40)
    finally:
        fac.stop()
    log(f"facade: /health with a hung apiserver ({health_runs} requests)")
    out["health_hung"] = health_when_the_apiserver_hangs(plane, workdir, data_root, ns, health_runs)
    return out


def verdict_rows(r: dict) -> list[tuple[str, str, str, bool | None]]:
    """Rows for bench.run's table."""
    rows: list[tuple[str, str, str, bool | None]] = []
    lst = r["list"]
    for label, q in lst["ms"].items():
        rows.append(
            (
                f"facade GET /datasets?{label} at {lst['datasets']} datasets p50 / p95",
                f"{q['p50']:.1f} / {q['p95']:.1f} ms",
                f"p50 <= {LIST_TARGET_MS} ms",
                q["p50"] <= LIST_TARGET_MS,
            )
        )
    rows.append(
        (
            "  full LISTs by the facade during those requests",
            str(lst["cache_lists_during"]),
            "0",
            lst["cache_lists_during"] == 0,
        )
    )
    g = r["login"]
    lo, hi = LOGIN_RATIO
    rows.append(
        (
            "login 401 p50: unknown user / wrong password",
            f"{g['unknown_user_ms']['p50']:.1f} / {g['wrong_password_ms']['p50']:.1f} ms = "
            f"{g['ratio_p50']:.2f}",
            f"{lo} .. {hi}",
            lo <= g["ratio_p50"] <= hi,
        )
    )
    f = r.get("flood")
    if f:
        rows.append(
            (
                f"GET /datasets p95 during {f['logins']} bad logins / without (ratio)",
                f"{f['lists_during_ms']['p95']:.1f} / {f['lists_quiet_ms']['p95']:.1f} ms"
                f" = {f['p95_ratio']:.1f}",
                f"during <= {FLOOD_P95_MS} ms",
                f["lists_during_ms"]["p95"] <= FLOOD_P95_MS,
            )
        )
        answers = ", ".join(f"{k}: {v}" for k, v in f["answers"].items())
        rows.append(
            (
                "  the flood's logins: answers, 503 p95",
                f"{answers}; {f['refused_ms']['p95']:.0f} ms",
                "only 401/429/503",
                True,
            )
        )
    if "preview" in r:
        rows += preview_bench.verdict_rows(r["preview"])
    h = r["health_hung"]
    bound = h["checks"] * h["check_timeout_s"]  # what checks one after the other would take at least
    rows.append(
        (
            "/health with a hung apiserver p50 / max",
            f"{h['s']['p50']:.2f} / {h['max_s']:.2f} s",
            f"< {bound:.1f} s (concurrent)",
            h["max_s"] < bound,
        )
    )
    return rows


def print_rows(rows) -> None:
    w = max(len(r[0]) for r in rows)
    for name, got, target, ok in rows:
        verdict = "-" if ok is None else ("PASS" if ok else "FAIL")
        print(f"{name:<{w}}  {got:<34} {target:<18} {verdict}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", type=int, default=1000)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--logins", type=int, default=15)
    p.add_argument("--health-runs", type=int, default=10)
    p.add_argument("--flood", type=int, default=200, help="bad logins in the flood")
    p.add_argument("--json", type=Path, help="write the figures here too")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kms-api-bench-"))
    data_root = work / "data"
    sample_data.write_samples(data_root)
    log(f"workdir {work}")
    plane = Plane(work)
    try:
        result = run(plane, work, data_root, a.datasets, a.requests, a.logins, a.health_runs, a.flood)
    finally:
        plane.down()
    if result is None:
        return 1
    result["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(json.dumps(result, indent=2))
    print_rows(verdict_rows(result))
    if a.json:
        dump(a.json, result)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
