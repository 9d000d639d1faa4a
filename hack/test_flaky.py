#!/usr/bin/env python3
"""`make test-flaky`: run tests N times under CPU load and report each test's failure rate.

    hack/test_flaky.py [-n N] [--load K] [pytest args...]    (default: -n 3 --load 2 -m integration)

Each run is `hack/run-pytest.sh` with a JUnit report in .kms/flaky/run-<i>.xml, while K busy-loop
processes keep the cores loaded (as on CI's 2 loaded cores). The table lists every test that did
not pass in every run, with its failure count; exit 1 if any test failed in any run.
Standard library only.
"""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / ".kms" / "flaky"


def _busy() -> None:
    while True:
        pass


def outcomes(report: Path) -> dict[str, str]:
    """test id -> passed, failed, error or skipped, from one JUnit XML report."""
    result = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        result[name] = {"failure": "failed", "error": "error", "skipped": "skipped"}.get(
            kinds[0] if kinds else "", "passed"
        )
    return result


def report_table(runs: list[dict[str, str]]) -> tuple[list[str], int]:
    """Lines of the failure-rate table and the number of tests that failed at least once."""
    seen: Counter[str] = Counter()
    bad: Counter[str] = Counter()
    for run in runs:
        for name, outcome in run.items():
            seen[name] += 1
            if outcome in ("failed", "error"):
                bad[name] += 1
    lines = [f"{len(seen)} tests, {len(runs)} runs; tests that failed at least once: {len(bad)}"]
    for name, n in bad.most_common():
        lines.append(f"  {n}/{seen[name]} failed ({100 * n / seen[name]:.0f}%)  {name}")
    return lines, len(bad)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=3, help="runs (default 3)")
    p.add_argument("--load", type=int, default=2, help="busy-loop processes during the runs (default 2)")
    a, pytest_args = p.parse_known_args()
    pytest_args = pytest_args or ["-m", "integration"]
    OUT.mkdir(parents=True, exist_ok=True)
    ctx = multiprocessing.get_context("spawn")
    load = [ctx.Process(target=_busy, daemon=True) for _ in range(a.load)]
    for proc in load:
        proc.start()
    runs = []
    try:
        for i in range(1, a.n + 1):
            report = OUT / f"run-{i}.xml"
            report.unlink(missing_ok=True)
            t0 = time.monotonic()
            args = " ".join(pytest_args)
            print(f"[flaky] run {i}/{a.n} under {a.load} busy loops: pytest {args}", flush=True)
            rc = subprocess.call(
                [str(REPO / "hack" / "run-pytest.sh"), f"--junitxml={report}", "-q", *pytest_args], cwd=REPO
            )
            if not report.exists():
                print(f"[flaky] run {i}: no report (pytest exit {rc})", flush=True)
                return 1
            runs.append(outcomes(report))
            print(f"[flaky] run {i}: exit {rc} in {time.monotonic() - t0:.0f}s", flush=True)
    finally:
        for proc in load:
            proc.terminate()
    lines, failed = report_table(runs)
    print("\n".join(["[flaky] " + lines[0], *lines[1:]]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
