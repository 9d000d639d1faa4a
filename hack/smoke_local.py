#!/usr/bin/env python3
"""Run hack/smoke.sh against the local stack, self-contained: a fresh control plane in a temp dir,
the CRDs, sample data on a hostPath data volume, the example MapService, and the product's processes
as `make dev` runs them (operator, local job runner, local MapServer) plus the facade, all on free
loopback ports. Everything it started is stopped at the end, whatever happened.

    hack/smoke_local.py [--keep-logs DIR]      (make smoke-local; CI's smoke-local job)

Against an already running `make dev` use `make smoke` (hack/smoke.sh with KMS_URL/KMS_PASSWORD).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HACK = Path(__file__).resolve().parent
REPO = HACK.parent
sys.path.insert(0, str(HACK))
import cluster  # noqa: E402
import dev  # noqa: E402

PY = str(REPO / ".venv" / "bin" / "python")


def log(msg: str) -> None:
    print(f"[smoke-local {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wait_http(url: str, what: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except Exception as e:
            last = e
        time.sleep(0.5)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what} at {url}; last: {last!r}")


def install(kubectl: list[str], kubeconfig: Path, data_root: Path) -> None:
    dev.install(kubeconfig, data_root, "kms-smoke")  # CRDs, sample data, the map-data volume
    # the example MapService selects collection=ocean: it will serve the smoke dataset
    subprocess.run(
        [*kubectl, "apply", "-n", "default", "-f", str(REPO / "examples" / "service.yaml")],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keep-logs", type=Path, help="copy the processes' logs here")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kms-smoke-"))
    plane = cluster.Plane(work / "plane")
    data_root = work / "data"
    procs: list[tuple[str, subprocess.Popen]] = []
    rc = 1
    try:
        cluster.up(plane, port=None, timeout=120)
        kubeconfig = plane.kubeconfig
        kubectl = [str(cluster.binaries()["kubectl"]), f"--kubeconfig={kubeconfig}"]
        install(kubectl, kubeconfig, data_root)
        ports = {n: cluster.free_port() for n in ("liveness", "metrics", "mapserver", "tiles", "facade")}
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "KMS_NAMESPACE": "default",
            "KMS_DATA_ROOT": str(data_root),
            "KMS_DATA_PVC": "map-data",
            "KMS_METRICS_PORT": str(ports["metrics"]),
            "KMS_METRICS_ADDR": "127.0.0.1",
            "KMS_SERVICE_URL_TEMPLATE": f"http://127.0.0.1:{ports['mapserver']}/{{namespace}}/{{name}}/",
            "KMS_TILES_URL_TEMPLATE": f"http://127.0.0.1:{ports['tiles']}/{{namespace}}/{{name}}/",
            "KMS_OPERATOR_HEALTH_URL": f"http://127.0.0.1:{ports['liveness']}/healthz",
        }
        password = secrets.token_urlsafe(18)
        subprocess.run(
            [PY, "-m", "kms_api", "user", "add", "admin", "--role", "admin", "--password-stdin"],
            input=password + "\n",
            text=True,
            env=env,
            cwd=REPO,
            check=True,
        )
        commands = {
            "operator": [
                PY,
                "-m",
                "kms_operator",
                "--liveness",
                f"http://127.0.0.1:{ports['liveness']}/healthz",
            ],
            "local-runner": [PY, str(HACK / "local_runner.py"), "--kubeconfig", str(kubeconfig)],
            "local-mapserver": [
                PY,
                str(HACK / "local_mapserver.py"),
                "--kubeconfig",
                str(kubeconfig),
                "--port",
                str(ports["mapserver"]),
            ],
            "local-tilecache": [
                PY,
                str(HACK / "local_tilecache.py"),
                "--kubeconfig",
                str(kubeconfig),
                "--port",
                str(ports["tiles"]),
                "--state-dir",
                str(work / "tiles"),
            ],
            "facade": [PY, "-m", "kms_api", "--host", "127.0.0.1", "--port", str(ports["facade"])],
        }
        for name, argv in commands.items():
            out = open(work / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child process
            procs.append(
                (name, subprocess.Popen(argv, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT))
            )
            log(f"started {name} (pid {procs[-1][1].pid})")
        by_name = dict(procs)
        wait_http(f"http://127.0.0.1:{ports['liveness']}/healthz", "operator", by_name["operator"])
        wait_http(f"http://127.0.0.1:{ports['facade']}/health", "facade", by_name["facade"])
        smoke_env = {
            **os.environ,
            "KMS_URL": f"http://127.0.0.1:{ports['facade']}",
            "KMS_USERNAME": "admin",
            "KMS_PASSWORD": password,
            "SMOKE_REQUIRE_WMS": "1",
            "PYTHON": PY,
        }
        rc = subprocess.run([str(HACK / "smoke.sh")], env=smoke_env, check=False).returncode
        if rc != 0:
            for name, _ in procs:
                tail = (work / f"{name}.log").read_text(errors="replace").splitlines()[-25:]
                log(f"--- last lines of {name}.log ---\n" + "\n".join(tail))
        return rc
    except Exception as e:
        log(f"ERROR: {type(e).__name__}: {e}")
        return 1
    finally:
        for _, proc in procs:
            proc.terminate()
        for _, proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        left = cluster.down(plane)
        if left:
            log(f"WARNING: control-plane processes left: {left}")
        if a.keep_logs:
            a.keep_logs.mkdir(parents=True, exist_ok=True)
            for f in work.glob("*.log"):
                shutil.copy(f, a.keep_logs / f.name)
            for f in (work / "plane").glob("*.log"):
                shutil.copy(f, a.keep_logs / f"plane-{f.name}")
        shutil.rmtree(work, ignore_errors=True)
        log(f"stopped everything; smoke exit code {rc}")


if __name__ == "__main__":
    sys.exit(main())
