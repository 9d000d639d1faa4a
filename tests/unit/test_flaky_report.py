"""hack/test_flaky.py's report: outcomes from JUnit XML and the failure-rate table."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import hack_module

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
<testcase classname="tests.integration.test_a" name="test_ok" />
<testcase classname="tests.integration.test_a" name="test_flaky">{flaky}</testcase>
<testcase classname="tests.integration.test_b" name="test_setup_error"><error message="x" /></testcase>
<testcase classname="tests.integration.test_b" name="test_skipped"><skipped message="y" /></testcase>
</testsuite></testsuites>
"""


def test_outcomes_and_failure_rates(tmp_path: Path) -> None:
    flaky = hack_module("test_flaky")
    runs = []
    for i, body in enumerate(['<failure message="boom" />', "", ""]):
        report = tmp_path / f"run-{i}.xml"
        report.write_text(JUNIT.format(flaky=body))
        runs.append(flaky.outcomes(report))
    assert runs[0] == {
        "tests.integration.test_a::test_ok": "passed",
        "tests.integration.test_a::test_flaky": "failed",
        "tests.integration.test_b::test_setup_error": "error",
        "tests.integration.test_b::test_skipped": "skipped",
    }
    lines, failed = flaky.report_table(runs)
    assert failed == 2
    assert lines[0] == "4 tests, 3 runs; tests that failed at least once: 2"
    assert "  3/3 failed (100%)  tests.integration.test_b::test_setup_error" in lines
    assert "  1/3 failed (33%)  tests.integration.test_a::test_flaky" in lines
