"""Repository rules that need no cluster."""

from __future__ import annotations

import operator
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_operator_is_not_a_python_package():
    assert not (REPO / "operator" / "__init__.py").exists()
    assert Path(operator.__file__).parent == Path(sysconfig.get_paths()["stdlib"])


def test_readme_names_the_two_commands():
    text = (REPO / "README.md").read_text()
    assert "make dev" in text and "make test" in text
