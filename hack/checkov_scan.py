#!/usr/bin/env python3
"""checkov over what we ship: the chart rendered with every values profile and the operator's
golden children (tests/golden/children/*.yaml). Every finding must be fixed or listed, with its
reason, in charts/kube-mapserver/checkov-skips.yaml (and the chart README's table).

    python hack/checkov_scan.py dir      the pinned checkov's venv directory (hack/checkov.sh)
    python hack/checkov_scan.py scan     scan, print the counts and every finding; exit 1 on a
                                         finding no skip covers, or on a skip that matches nothing

checkov is pinned with its whole tree in hack/requirements-checkov.txt and lives in its own venv
(`make checkov`), keyed by the requirements' hash: its pins conflict with the project's .venv.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO / "hack" / "requirements-checkov.txt"
SKIPS = REPO / "charts" / "kube-mapserver" / "checkov-skips.yaml"
CHILDREN = REPO / "tests" / "golden" / "children"


def version() -> str:
    m = re.search(r"^checkov==(\S+)$", REQUIREMENTS.read_text(), re.M)
    assert m, f"{REQUIREMENTS}: no checkov== pin"
    return m.group(1)


def checkov_dir() -> Path:
    """~/.cache/kube-mapserver/checkov-<version>-<hash of the requirements> (KMS_CACHE_DIR wins)."""
    cache = os.environ.get("KMS_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "kube-mapserver"
    )
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    return Path(cache) / f"checkov-{version()}-{digest}"


def checkov_path() -> Path:
    """The checkov binary; it exists only once hack/checkov.sh finished (its stamp)."""
    d = checkov_dir()
    return d / "bin" / "checkov" if (d / ".done").exists() else d / ".done"


# ------------------------------------------------------------------------------------ targets


def targets() -> dict[str, str]:
    """{target name: multi-document YAML}: chart-<profile> for every values profile, children-<case>
    for every golden children file (a mapping kind -> object, written out as documents)."""
    import yaml

    sys.path.insert(0, str(REPO / "hack"))
    import chart  # hack/chart.py

    out = {f"chart-{name}": chart.template(values=values) for name, values in chart.PROFILES.items()}
    for path in sorted(CHILDREN.glob("*.yaml")):
        objs = [o for o in (yaml.safe_load(path.read_text()) or {}).values() if o]
        out[f"children-{path.stem}"] = yaml.safe_dump_all(objs, sort_keys=False)
    return out


@dataclass(frozen=True)
class Finding:
    check: str
    target: str
    resource: str  # checkov's id, e.g. Deployment.<namespace>.<name>
    name: str

    def __str__(self) -> str:
        return f"{self.check} {self.target} {self.resource.split('.app.kubernetes.io', 1)[0]}: {self.name}"


@dataclass
class Result:
    passed: int
    failed: list[Finding]
    passed_by_target: dict[str, int]


def run_checkov(docs: dict[str, str], binary: Path | None = None) -> Result:
    """One checkov run over every target (one file each); offline (--skip-download)."""
    binary = binary or checkov_path()
    with tempfile.TemporaryDirectory(prefix="kms-checkov-") as tmp:
        for name, text in docs.items():
            Path(tmp, f"{name}.yaml").write_text(text)
        args = ["-d", tmp, "--framework", "kubernetes", "-o", "json", "--compact"]
        r = subprocess.run(
            [str(binary), *args, "--skip-download"],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
        )
    if r.returncode not in (0, 1) or not r.stdout.strip():
        raise RuntimeError(f"checkov failed ({r.returncode}):\n{r.stderr[-3000:]}")
    report = json.loads(r.stdout)
    reports = report if isinstance(report, list) else [report]
    passed, failed, by_target = 0, [], dict.fromkeys(docs, 0)
    for rep in reports:
        assert rep["summary"]["parsing_errors"] == 0, rep["summary"]
        passed += rep["summary"]["passed"]
        for c in rep["results"]["passed_checks"]:
            by_target[Path(c["file_path"]).stem] += 1
        for c in rep["results"]["failed_checks"]:
            target = Path(c["file_path"]).stem
            failed.append(Finding(c["check_id"], target, c["resource"], c["check_name"]))
    return Result(passed, sorted(set(failed), key=str), by_target)


# ------------------------------------------------------------------------------------ skips


@dataclass(frozen=True)
class Skip:
    check: str
    what: str
    reason: str
    targets: tuple[str, ...]
    resources: tuple[str, ...]
    pending: str = ""  # work under way that will fix it: the entry may then cover nothing

    def covers(self, f: Finding) -> bool:
        return (
            f.check == self.check
            and any(fnmatch.fnmatchcase(f.target, t) for t in self.targets)
            and any(fnmatch.fnmatchcase(f.resource, r) for r in self.resources)
        )


def load_skips(path: Path = SKIPS) -> list[Skip]:
    import yaml

    out = []
    for e in yaml.safe_load(path.read_text())["skips"]:
        out.append(
            Skip(
                e["check"],
                e["what"],
                " ".join(e["reason"].split()),
                tuple(e.get("targets", ["*"])),
                tuple(e.get("resources", ["*"])),
                e.get("pending", ""),
            )
        )
    return out


def classify(result: Result, skips: list[Skip]) -> tuple[list[Finding], list[Finding], list[Skip]]:
    """(new findings no skip covers, skipped findings, skips that cover nothing and are not pending)."""
    new = [f for f in result.failed if not any(s.covers(f) for s in skips)]
    skipped = [f for f in result.failed if any(s.covers(f) for s in skips)]
    unused = [s for s in skips if not s.pending and not any(s.covers(f) for f in result.failed)]
    return new, skipped, unused


def fixed_pending(result: Result, skips: list[Skip]) -> list[Skip]:
    """Pending skips that cover nothing any more: their work landed, delete them."""
    return [s for s in skips if s.pending and not any(s.covers(f) for f in result.failed)]


def main() -> int:
    cmd = sys.argv[1] if len(sys.argv) > 1 else "scan"
    if cmd == "dir":
        print(checkov_dir())
        return 0
    result = run_checkov(targets())
    new, skipped, unused = classify(result, load_skips())
    print(
        f"checkov {version()}: passed {result.passed}, failed {len(new)}, "
        f"skipped with reason {len(skipped)} (skip entries unused: {len(unused)})"
    )
    for f in skipped:
        print(f"  skipped  {f}")
    for f in new:
        print(f"  FAILED   {f}")
    for s in unused:
        print(f"  UNUSED   skip {s.check} {s.targets} {s.resources}: remove it (fixed?)")
    for s in fixed_pending(result, load_skips()):
        print(f"  FIXED    pending skip {s.check} {s.targets} ({s.pending}): remove it")
    return 1 if new or unused else 0


if __name__ == "__main__":
    sys.exit(main())
