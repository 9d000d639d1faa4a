"""checkov (pinned, its own venv: `make checkov`) over the chart rendered with every values profile
and over the operator's golden children: every finding is fixed or listed with its reason in
charts/kube-mapserver/checkov-skips.yaml and the chart README; a new finding fails here."""

from __future__ import annotations

import re

import pytest

from tests.helpers import hack_module, require_tool

chart = hack_module("chart")
scan = hack_module("checkov_scan")


@pytest.fixture(scope="module")
def result():
    require_tool(chart.helm_path(), "helm", "helm")
    require_tool(scan.checkov_path(), "checkov", "checkov")
    return scan.run_checkov(scan.targets())


def test_no_finding_without_a_reason(result):
    new, skipped, unused = scan.classify(result, scan.load_skips())
    counts = f"passed {result.passed}, failed {len(new)}, skipped with reason {len(skipped)}"
    print(f"checkov {scan.version()}: {counts}")
    assert not new, "new checkov findings: fix them or add them, with a reason, to " + (
        f"{scan.SKIPS.relative_to(scan.REPO)} and the chart README:\n" + "\n".join(map(str, new))
    )
    assert not unused, "skips that match no finding any more (fixed? delete them and their README row): " + (
        ", ".join(f"{s.check} {s.targets}" for s in unused)
    )


def test_every_target_was_scanned(result):
    """Every profile and every golden children file was parsed and checked (not silently empty)."""
    names = set(scan.targets())
    assert {"chart-default", "chart-local", "chart-production"} <= names
    assert any(n.startswith("children-") for n in names)
    assert set(result.passed_by_target) == names
    empty = [n for n, count in result.passed_by_target.items() if count < 20]
    assert not empty, f"checkov checked almost nothing in {empty}: {result.passed_by_target}"


def test_the_scan_finds_a_bad_pod():
    """The same scan flags a privileged root pod without a NetworkPolicy (it is not vacuous)."""
    require_tool(scan.checkov_path(), "checkov", "checkov")
    bad = """apiVersion: v1
kind: Pod
metadata: {name: bad, namespace: x}
spec:
  containers:
    - name: c
      image: busybox:latest
      securityContext: {privileged: true, runAsUser: 0}
"""
    found = {f.check for f in scan.run_checkov({"bad": bad}).failed}
    assert {"CKV_K8S_16", "CKV2_K8S_6", "CKV_K8S_14"} <= found, found
    new, _, _ = scan.classify(scan.run_checkov({"chart-bad": bad}), scan.load_skips())
    assert {f.check for f in new} >= {"CKV_K8S_16", "CKV2_K8S_6"}, "the skips must not hide new findings"


def test_readme_lists_every_skip_with_its_reason():
    readme = (chart.CHART / "README.md").read_text()
    rows = {
        (m.group(1), m.group(2)) for m in re.finditer(r"^\| `(CKV2?_K8S_\d+)` \| ([^|]+?) \|", readme, re.M)
    }
    for s in scan.load_skips():
        where = "children" if all(t.startswith("children-") for t in s.targets) else "chart"
        if s.targets == ("*",):
            where = "all"
        assert (s.check, where) in rows, f"README has no row `{s.check}` | {where} | ..."
    assert len(rows) == len(scan.load_skips()), "README rows without a skip entry"
