"""The suite fails when it proves less than it claims (a pytest plugin, loaded by tests/conftest.py):

- a skipped test fails the run unless tests/skip-allowlist.txt names it, with a reason;
- the summary prints the tests run per marker (unit, e2e, integration, ...);
- a run of the whole suite (no -m, -k or node ids) fails when a marker selects no test, e.g.
  when the folder-to-marker hook breaks.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from pathlib import Path

import pytest

ALLOWLIST = Path(__file__).resolve().parent / "skip-allowlist.txt"
FOLDER_MARKERS = ("unit", "integration", "e2e")


def load_allowlist(path: Path = ALLOWLIST) -> dict[str, str]:
    """`node-id glob | reason` per line; '#' comments. An entry without a reason is an error."""
    entries: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern, sep, reason = (part.strip() for part in line.partition("|"))
        if not sep or not reason:
            raise pytest.UsageError(f"{path}:{n}: an allowed skip needs a reason: 'node-id glob | reason'")
        entries[pattern] = reason
    return entries


def allowed(nodeid: str, entries: dict[str, str]) -> str | None:
    return next((reason for pattern, reason in entries.items() if fnmatch.fnmatch(nodeid, pattern)), None)


class SuitePolicy:
    def __init__(self, config: pytest.Config):
        self.config = config
        self.entries = load_allowlist()
        self.by_marker: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self.allowed: list[tuple[str, str]] = []
        self.empty_markers: list[str] = []

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            for m in FOLDER_MARKERS:
                if item.get_closest_marker(m):
                    self.by_marker[m] += 1
        opts = self.config.option
        tests = Path(self.config.rootpath) / "tests"
        whole = (
            not opts.markexpr
            and not opts.keyword
            and {Path(a).resolve() for a in self.config.args} == {tests}
        )
        if whole and session.items:
            self.empty_markers = [m for m in FOLDER_MARKERS if not self.by_marker[m]]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            reason = allowed(report.nodeid, self.entries)
            if reason:
                self.allowed.append((report.nodeid, reason))
            else:
                self.unexpected.append(f"{report.nodeid}: {report.longrepr[-1] if report.longrepr else ''}")

    def pytest_terminal_summary(self, terminalreporter) -> None:
        tr = terminalreporter
        tr.section("suite policy")
        tr.line("tests per marker: " + ", ".join(f"{m} {self.by_marker[m]}" for m in FOLDER_MARKERS))
        for nodeid, reason in self.allowed:
            tr.line(f"allowed skip: {nodeid} ({reason})")
        for line in self.unexpected:
            tr.line(
                f"UNEXPECTED SKIP (fails the run; fix it or allow it in {ALLOWLIST.name}): {line}", red=True
            )
        for m in self.empty_markers:
            tr.line(f"MARKER SELECTS NO TEST (fails the run): {m}", red=True)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if (self.unexpected or self.empty_markers) and exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SuitePolicy(config), "kms-suite-policy")
