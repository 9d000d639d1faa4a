"""Shipping files other than the chart: the GitHub workflows (actionlint, built from the Go module
proxy by `make helm`), the Dockerfile and its pinned Python packages, the kind helper."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import yaml

from tests.helpers import hack_module, require_tool

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"


chart = hack_module("chart")


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


# ------------------------------------------------------------------------------------ workflows


def test_workflows_pass_actionlint():
    require_tool(chart.actionlint_path(), "actionlint", "helm")
    r = subprocess.run(
        [str(chart.actionlint_path()), "-no-color"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, f"actionlint:\n{r.stdout}{r.stderr}"


def test_ci_runs_unit_and_integration_with_cached_binaries():
    ci = workflow("ci.yml")
    jobs = ci["jobs"]
    assert {"unit", "integration", "lint", "manifests", "image"} <= set(jobs)
    runs = "\n".join(s.get("run", "") for s in jobs["integration"]["steps"])
    assert "make test-integration" in runs and "make binaries helm" in runs
    caches = [s for s in jobs["integration"]["steps"] if str(s.get("uses", "")).startswith("actions/cache@")]
    assert caches and "hack/versions.env" in caches[0]["with"]["key"]
    assert "make test-unit" in "\n".join(s.get("run", "") for s in jobs["unit"]["steps"])


def test_kind_workflow_dumps_logs_on_failure():
    steps = workflow("smoke-kind.yml")["jobs"]["kind"]["steps"]
    runs = [s.get("run", "") for s in steps]
    assert "make kind-up" in runs and "make kind-smoke" in runs
    assert any(s.get("if") == "failure()" and "hack/kind.sh logs" in s.get("run", "") for s in steps)


def test_kind_helper_installs_the_local_profile_with_its_image():
    text = (REPO / "hack" / "kind.sh").read_text()
    assert "values-local.yaml" in text
    local = yaml.safe_load((chart.CHART / "values-local.yaml").read_text())
    m = re.search(r"KMS_IMAGE:-([^}]+)\}", text)
    assert m and m.group(1).endswith(":" + local["image"]["tag"])
    assert local["image"]["pullPolicy"] == "Never", "kind loads the image: never pull it"


# ------------------------------------------------------------------------------------ image


def dockerfile_stages() -> list[list[str]]:
    """Instructions (continuation lines joined) per stage."""
    lines, cur = [], ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        if raw.lstrip().startswith("#") and not cur:
            continue
        cur += raw.rstrip("\\").rstrip() + " " if raw.endswith("\\") else raw
        if not raw.endswith("\\"):
            if cur.strip():
                lines.append(cur.strip())
            cur = ""
    stages: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_pinned_base_non_root_no_build_tools():
    text = (REPO / "Dockerfile").read_text()
    base = re.search(r"^ARG DEBIAN_IMAGE=(\S+)$", text, re.M)
    assert base and re.fullmatch(r"debian:12\.\d+-slim(@sha256:[0-9a-f]{64})?", base.group(1)), base
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: build tools stay in the build stage"
    final = stages[-1]
    users = [line for line in final if line.upper().startswith("USER ")]
    assert users and users[-1] == "USER 10001:10001", "numeric non-root user (runAsNonRoot can check it)"
    installs = " ".join(line for line in final if "apt-get install" in line)
    for tool in ("build-essential", "gcc", "python3-dev", "python3-pip", "python3-venv", "git", "make"):
        assert not re.search(rf"(^|\s){re.escape(tool)}(\s|$)", installs), f"{tool} in the final stage"
    assert "python3-gdal" in installs, "GDAL for the operator's inspection and the job runner"
    assert "mapscript" not in installs, "MapServer runs from the upstream image, not this one"
    assert any("pip uninstall" in line for line in final), "pip is removed from the runtime venv"


def test_image_constraints_pin_every_runtime_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (REPO / "hack" / "image-constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"unpinned: {line}"
            pins[re.sub(r"[-_.]+", "-", name.lower())] = version
    for dep in project["dependencies"]:
        name, _, version = dep.partition("==")
        key = re.sub(r"[-_.]+", "-", name.lower())
        assert pins.get(key) == version, f"{dep}: hack/image-constraints.txt has {pins.get(key)}"
    scripts = project["scripts"]
    assert {"kube-mapserver-operator", "kube-mapserver-job"} <= set(scripts)


def test_dockerignore_is_an_allow_list():
    lines = [
        x.strip() for x in (REPO / ".dockerignore").read_text().splitlines() if x.strip() and x[0] != "#"
    ]
    assert lines[0] == "*", "everything excluded first, then what the build needs"
    allowed = {x[1:].rstrip("/") for x in lines if x.startswith("!")}
    assert {"pyproject.toml", "README.md", "hack/image-constraints.txt"} <= allowed
    assert not {".venv", ".git", ".kms", "tests"} & allowed
