"""`make dev` stops cleanly: SIGINT, SIGTERM or SIGHUP sent to its process group (what Ctrl-C, a
process manager or a closed terminal sends), once it is up or while the node is starting, stops
the product, the node and the plane, prints no traceback and leaves the machine as it was
(hack/node.py's snapshot(): links, rules, mounts, cgroups, sysctls, system paths, processes).

Self-contained: `make dev` with its plane and state in a temp dir. A real node that already runs
on this machine (cni0 exists) makes it skip, like test_node_lifecycle.py: one node per machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from tests.helpers import hack_module, wait_until

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
UP = "kube-mapserver dev is up"
NODE_STARTING = "started containerd"


class Dev:
    """`make dev` in its own process group, its output collected line by line."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            ["make", "--no-print-directory", "dev", f"CLUSTER_DIR={tmp}/plane", f"DEV_ARGS=--state={tmp}"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def our_processes(self) -> list[str]:
        """Processes whose command line names this run's temp dir (plane, node, pods' shims)."""
        found = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if str(self.tmp) in cmdline and int(proc.name) != self.proc.pid:
                    found.append(f"{proc.name}: {cmdline[:200]}")
        return found


@pytest.mark.parametrize(
    ("sig", "when"),
    [
        (signal.SIGINT, UP),
        (signal.SIGTERM, UP),
        (signal.SIGHUP, UP),
        (signal.SIGTERM, NODE_STARTING),
    ],
    ids=["SIGINT-up", "SIGTERM-up", "SIGHUP-up", "SIGTERM-starting"],
)
def test_make_dev_stops_cleanly(sig: signal.Signals, when: str, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the real node needs root")
    if Path("/sys/class/net/cni0").exists():
        pytest.skip("a real node already runs on this machine (cni0 exists): one node per machine")
    node_mod, cluster_mod = hack_module("node"), hack_module("cluster")
    before = node_mod.snapshot()
    dev = Dev(tmp_path)
    try:
        wait_until(lambda: when in dev.output or dev.proc.poll() is not None, f"make dev: {when!r}", 900)
        assert dev.proc.poll() is None, f"make dev exited before {when!r}:\n{dev.output[-4000:]}"
        os.killpg(dev.proc.pid, sig)
        dev.proc.wait(timeout=300)
        dev.reader.join(timeout=30)
    finally:
        if dev.proc.poll() is None:
            os.killpg(dev.proc.pid, signal.SIGKILL)
            dev.proc.wait()
        # whatever the outcome, the rest of the suite needs the bridge free
        node_mod.down(node_mod.Node(tmp_path / "node"))
        cluster_mod.down(cluster_mod.Plane(tmp_path / "plane"))
    out = dev.output
    print(out[-3000:])
    assert "Traceback" not in out, out[-4000:]
    assert f"{signal.Signals(sig).name}: stopping" in out, out[-4000:]
    assert "machine as before" in out, out[-4000:]
    assert dev.our_processes() == []
    assert node_mod.diff(before, node_mod.snapshot()) == [], "the machine differs from before `make dev`"
