#!/usr/bin/env python3
"""`make dev`: bring the local control plane up, then run the product's processes in the
foreground (each added here as the product grows); Ctrl-C stops everything, plane included."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cluster

REPO = Path(__file__).resolve().parent.parent


def product_processes(kubeconfig: Path) -> list[tuple[str, list[str]]]:
    """(name, argv) of the product's own processes; empty until they exist."""
    return []


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dir", type=Path, default=cluster.DEFAULT_DIR)
    a = p.parse_args()
    plane = cluster.Plane(a.dir.resolve())
    try:
        cluster.up(plane, port=None, timeout=120)
    except cluster.ClusterError as e:
        cluster.log(f"ERROR: {e}")
        return 1
    procs: list[tuple[str, subprocess.Popen]] = []
    env_kube = {"KUBECONFIG": str(plane.kubeconfig)}
    try:
        for name, argv in product_processes(plane.kubeconfig):
            procs.append((name, subprocess.Popen(argv, env={**__import__("os").environ, **env_kube})))
            cluster.log(f"started {name}")
        print(
            f"\nkube-mapserver dev is up.\n"
            f"  export KUBECONFIG={plane.kubeconfig}\n"
            f"  kubectl: {cluster.binaries()['kubectl']} get nodes\n"
            f"Ctrl-C stops everything.\n",
            flush=True,
        )
        while True:
            for name, proc in procs:
                if proc.poll() is not None:
                    cluster.log(f"{name} exited with {proc.returncode}; stopping")
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        cluster.log("Ctrl-C: stopping")
        return 0
    finally:
        for _, proc in procs:
            proc.send_signal(signal.SIGTERM)
        for _, proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        cluster.down(plane)


if __name__ == "__main__":
    sys.exit(main())
