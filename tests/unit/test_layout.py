"""Repository rules that need no cluster."""

from __future__ import annotations

import operator
import re
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_operator_is_not_a_python_package():
    assert not (REPO / "operator" / "__init__.py").exists()
    assert Path(operator.__file__).parent == Path(sysconfig.get_paths()["stdlib"])


def test_readme_names_the_two_commands():
    text = (REPO / "README.md").read_text()
    assert "make dev" in text and "make test" in text


def test_every_operator_setting_is_in_the_readme_table():
    """Each KMS_* variable the operator reads has a row in the README's settings table."""
    code = "".join(p.read_text() for p in (REPO / "operator" / "kms_operator").glob("*.py"))
    used = set(re.findall(r'"(KMS_[A-Z_]+)"', code))
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("### Operator settings") :]
    table = table[: table.index("\n\n", table.index("| variable"))]
    documented = set(re.findall(r"^\| `(KMS_[A-Z_]+)`(?:, `(KMS_[A-Z_]+)`)?", table, re.M))
    documented = {name for row in documented for name in row if name}
    assert used - documented == set()
