"""The /ui/ page as the facade serves it (the bundle hack/ui.sh builds), and the page's pure
JavaScript (style editor, OGC helpers) under `node --test`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kms_api.main import create_app
from kms_api.routers import ui
from kms_api.settings import Settings
from kms_crds.kube import Kube

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client() -> TestClient:
    if not (ui.UI_DIR / "index.html").is_file():
        subprocess.run([str(REPO / "hack" / "ui.sh")], check=True, timeout=600)
    return TestClient(create_app(Settings(namespace="x"), kube=Kube(None)))  # type: ignore[arg-type]


def test_the_page_and_its_bundle_are_served_with_a_strict_csp(client):
    r = client.get("/ui", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/ui/"
    page = client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp and page.headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="app.js">' in page.text
    assert "<script>" not in page.text and " style=" not in page.text, "inline code the CSP would block"
    js = client.get("/ui/app.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "GetFeatureInfo" in js.text or "getFeatureInfoUrl" in js.text
    assert client.get("/ui/app.css").headers["content-type"].startswith("text/css")


def test_nothing_from_a_cdn_and_no_other_files(client):
    for name in ("index.html", "app.js", "app.css"):
        text = client.get(f"/ui/{name}").text
        for cdn in ("unpkg.com", "cdn.jsdelivr", "cdnjs", "googleapis.com"):
            assert cdn not in text, f"{name} loads from {cdn}"
    for bad in (".source-hash", "..%2Fmain.py", "main.py", "x.map"):
        assert client.get(f"/ui/{bad}").status_code == 404, bad


def test_the_page_is_not_in_the_api_schema(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/ui")]


def test_the_lockfile_pins_openlayers_and_esbuild_exactly():
    pkg = json.loads((REPO / "ui" / "package.json").read_text())
    for deps in (pkg["dependencies"], pkg["devDependencies"]):
        assert all(v[0].isdigit() for v in deps.values()), deps  # exact versions, no ranges
    lock = json.loads((REPO / "ui" / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/ol"]["version"] == pkg["dependencies"]["ol"]


def test_the_page_javascript_under_node_test():
    r = subprocess.run(
        ["node", "--test", str(REPO / "ui" / "test")], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "# fail 0" in r.stdout


def test_browser_host_rules_map_service_names_to_cluster_ips(monkeypatch):
    from tests.helpers import hack_module

    install = hack_module("install")
    services = {
        "items": [
            {"metadata": {"name": "ocean-tiles"}, "spec": {"clusterIP": "10.96.0.12"}},
            {"metadata": {"name": "ocean"}, "spec": {"clusterIP": "10.96.0.11"}},
            {"metadata": {"name": "headless"}, "spec": {"clusterIP": "None"}},
        ]
    }
    monkeypatch.setattr(install.Kubectl, "json", lambda self, *args: services)
    assert install.browser_host_rules(Path("/nonexistent"), "kms") == (
        "MAP ocean.kms.svc.cluster.local 10.96.0.11, MAP ocean-tiles.kms.svc.cluster.local 10.96.0.12"
    )
