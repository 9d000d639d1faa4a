"""kms_crds.kubeconfig: what the one API client reads to find and authenticate to the apiserver
(the integration suites use it for real: certificate files against the local plane, the pod's
service account on the real node)."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kms_crds import kubeconfig
from kms_crds.kubeconfig import ConfigError, from_kubeconfig


def write(tmp_path: Path, user: dict, cluster: dict | None = None, namespace: str | None = None) -> Path:
    ctx = {"cluster": "c", "user": "u", **({"namespace": namespace} if namespace else {})}
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "x",
        "contexts": [{"name": "x", "context": ctx}],
        "clusters": [{"name": "c", "cluster": cluster or {"server": "https://127.0.0.1:6443/"}}],
        "users": [{"name": "u", "user": user}],
    }
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_an_inline_token_and_the_context_namespace(tmp_path: Path) -> None:
    cluster = {"server": "https://127.0.0.1:6443/", "insecure-skip-tls-verify": True}
    conn = from_kubeconfig(str(write(tmp_path, {"token": "t0k"}, cluster, "maps")))
    assert conn.server == "https://127.0.0.1:6443" and conn.namespace == "maps"
    assert conn.token() == "t0k"
    assert conn.ssl_context.verify_mode == ssl.CERT_NONE


def test_a_token_file_is_read_again_after_it_may_have_rotated(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(kubeconfig, "TOKEN_REFRESH", 0.0)
    (tmp_path / "token").write_text("first\n")
    conn = from_kubeconfig(str(write(tmp_path, {"tokenFile": "token"})))  # relative to the kubeconfig
    assert conn.token() == "first"
    (tmp_path / "token").write_text("second\n")
    assert conn.token() == "second"


def test_an_exec_credential_plugin_gives_the_token(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json, os\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "print(json.dumps({'kind': 'ExecCredential', 'status': {'token': os.environ['WHO'] + info['kind'],"
        " 'expirationTimestamp': '2099-01-01T00:00:00Z'}}))\n"
    )
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(plugin)],
            "env": [{"name": "WHO", "value": "me-"}],
        }
    }
    conn = from_kubeconfig(str(write(tmp_path, user)))
    assert conn.token() == "me-ExecCredential"


def test_client_certificate_and_ca_data_are_loaded(tmp_path: Path) -> None:
    key, crt = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=t",
            "-keyout",
            str(key),
            "-out",
            str(crt),
        ],
        check=True,
        capture_output=True,
    )
    b64 = {p: base64.b64encode(p.read_bytes()).decode() for p in (key, crt)}
    user = {"client-certificate-data": b64[crt], "client-key-data": b64[key]}
    cluster = {"server": "https://127.0.0.1:6443", "certificate-authority-data": b64[crt]}
    conn = from_kubeconfig(str(write(tmp_path, user, cluster)))
    assert conn.token() is None
    assert [c["subject"] for c in conn.ssl_context.get_ca_certs()] == [((("commonName", "t"),),)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pem", "config", "k.pem"], "no key left behind"


def test_a_missing_context_or_server_is_a_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path, {"token": "x"}, {"certificate-authority-data": ""})
    with pytest.raises(ConfigError, match="no server"):
        from_kubeconfig(str(path))
    cfg = yaml.safe_load(path.read_text())
    cfg["current-context"] = "nope"
    path.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="no context named 'nope'"):
        from_kubeconfig(str(path))
