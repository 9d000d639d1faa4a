"""The suite fails when it proves less than it should: a sandbox suite run through the real
policy plugin (tests/suite_policy.py) shows that a broken folder-to-marker hook, an unexpected
skip and a missing tool each fail the run, and that a blank image fails the pixel check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REPO, require_tool
from tests.pixels import drawn

HOOK = """
from pathlib import Path
import pytest

def pytest_collection_modifyitems(items):
    for item in items:
        part = Path(str(item.fspath)).relative_to(Path(__file__).parent).parts[0]
        {body}
"""
WORKING = "item.add_marker(getattr(pytest.mark, part))"
BROKEN = "pass  # the hook lost its marker"


def _suite(tmp_path: Path, hook: str, unit_test: str = "def test_ok():\n    assert True\n") -> Path:
    markers = '["unit: u", "integration: i", "e2e: e"]'
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.pytest.ini_options]\ntestpaths = ["tests"]\nmarkers = {markers}\n'
    )
    tests = tmp_path / "tests"
    for folder in ("unit", "integration", "e2e"):
        (tests / folder).mkdir(parents=True)
        (tests / folder / f"test_{folder}.py").write_text("def test_ok():\n    assert True\n")
    (tests / "unit" / "test_unit.py").write_text(unit_test)
    (tests / "conftest.py").write_text(HOOK.format(body=hook))
    return tmp_path


def _run(root: Path) -> subprocess.CompletedProcess[str]:
    """`pytest` with no arguments (the whole suite, as `make test` runs it) in the sandbox."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.suite_policy",
            "--import-mode=importlib",
            "-p",
            "no:cacheprovider",
        ],
        cwd=root,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_whole_run_passes_and_counts_tests_per_marker(tmp_path: Path) -> None:
    r = _run(_suite(tmp_path, WORKING))
    assert r.returncode == 0, r.stdout[-2000:]
    assert "tests per marker: unit 1, integration 1, e2e 1" in r.stdout


def test_a_broken_marker_hook_fails_the_run(tmp_path: Path) -> None:
    r = _run(_suite(tmp_path, BROKEN))
    assert r.returncode == 1, r.stdout[-2000:]
    assert "MARKER SELECTS NO TEST (fails the run): unit" in r.stdout


def test_an_unexpected_skip_fails_the_run(tmp_path: Path) -> None:
    skip = "import pytest\n\ndef test_skipped():\n    pytest.skip('mapserv is not installed')\n"
    r = _run(_suite(tmp_path, WORKING, skip))
    assert r.returncode == 1, r.stdout[-2000:]
    assert "UNEXPECTED SKIP" in r.stdout and "mapserv is not installed" in r.stdout


def test_a_missing_tool_fails_and_names_the_target(tmp_path: Path) -> None:
    tool = (
        "from pathlib import Path\nfrom tests.helpers import require_tool\n\n"
        "def test_needs_helm():\n    require_tool(Path('/nonexistent/helm'), 'helm', 'helm')\n"
    )
    r = _run(_suite(tmp_path, WORKING, tool))
    assert r.returncode == 1, r.stdout[-2000:]
    assert "helm is missing (/nonexistent/helm): run `make helm`" in r.stdout
    with pytest.raises(pytest.fail.Exception, match="run `make setup`"):
        require_tool(tmp_path / "mapserv", "mapserv", "setup")


@pytest.mark.parametrize(
    "image",
    [np.zeros((8, 8, 4), np.uint8), np.full((8, 8, 4), 255, np.uint8)],
    ids=["transparent", "one-flat-colour"],
)
def test_a_blank_image_fails_the_pixel_check(image: np.ndarray) -> None:
    with pytest.raises(AssertionError, match=r"blank|flat colour"):
        drawn(image)
