"""The plane's certificates (openssl CLI: CA, serving and client certificates, the real node's
certificates) and kubeconfigs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from cluster_common import BRIDGE_IP, NODE_NAME_REAL


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _signed_cert(pki: Path, name: str, subj: str, ext: str) -> None:
    """A new key and a certificate for it signed by the plane's CA (ext: openssl extensions)."""
    (pki / f"{name}.ext").write_text(ext)
    _openssl(
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        subj,
        cwd=pki,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "3650",
        "-out",
        f"{name}.crt",
        "-extfile",
        f"{name}.ext",
        cwd=pki,
    )


def _client_cert(pki: Path, name: str, cn: str, org: str | None = None) -> None:
    subj = f"/CN={cn}" + (f"/O={org}" if org else "")
    _signed_cert(
        pki, name, subj, "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    )


def _server_cert(pki: Path, name: str, cn: str, sans: str) -> None:
    """A serving certificate signed by the plane's CA (sans: openssl subjectAltName value)."""
    _signed_cert(
        pki,
        name,
        f"/CN={cn}",
        f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n",
    )


APISERVER_SANS = (
    f"IP:127.0.0.1,IP:10.96.0.1,IP:{BRIDGE_IP},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
    "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
)


def make_pki(pki: Path) -> None:
    """CA, apiserver serving cert, one client cert per component, service-account key pair."""
    if (pki / "done").exists():
        return
    pki.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "3650",
        "-subj",
        "/CN=kube-mapserver-local-ca",
        cwd=pki,
    )
    _server_cert(pki, "apiserver", "kube-apiserver", APISERVER_SANS)
    _client_cert(pki, "admin", "kubernetes-admin", "system:masters")
    _client_cert(pki, "controller-manager", "system:kube-controller-manager")
    _client_cert(pki, "scheduler", "system:kube-scheduler")
    _client_cert(pki, "kwok", "kwok-controller", "system:masters")
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    (pki / "done").write_text("ok\n")


def make_node_pki(pki: Path) -> None:
    """The certificates a real node needs, signed by the plane's CA (idempotent): the kubelet's
    client (system:node:kms-node in system:nodes) and serving (10.88.0.1, kms-node) certs, the
    kube-proxy client (system:kube-proxy) and the apiserver's kubelet client
    (kube-apiserver-kubelet-client, bound to ClusterRole system:kubelet-api-admin by up()).
    A plane made before the bridge address was a SAN gets a new apiserver serving cert."""
    ext = pki / "apiserver.ext"
    if BRIDGE_IP not in (ext.read_text() if ext.exists() else ""):
        _server_cert(pki, "apiserver", "kube-apiserver", APISERVER_SANS)
    wanted = {
        "kubelet": lambda: _client_cert(pki, "kubelet", f"system:node:{NODE_NAME_REAL}", "system:nodes"),
        "kubelet-serving": lambda: _server_cert(
            pki, "kubelet-serving", NODE_NAME_REAL, f"IP:{BRIDGE_IP},DNS:{NODE_NAME_REAL}"
        ),
        "kube-proxy": lambda: _client_cert(pki, "kube-proxy", "system:kube-proxy"),
        "apiserver-kubelet-client": lambda: _client_cert(
            pki, "apiserver-kubelet-client", "kube-apiserver-kubelet-client"
        ),
    }
    for name, make in wanted.items():
        if not (pki / f"{name}.crt").exists():
            make()


def write_kubeconfig(path: Path, server: str, pki: Path, user: str) -> None:
    """A kubeconfig with absolute paths to the CA and the user's client certificate."""
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "kms-local",
                        "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
                    }
                ],
                "users": [
                    {
                        "name": user,
                        "user": {
                            "client-certificate": str(pki / f"{user}.crt"),
                            "client-key": str(pki / f"{user}.key"),
                        },
                    }
                ],
                "contexts": [{"name": "kms-local", "context": {"cluster": "kms-local", "user": user}}],
                "current-context": "kms-local",
            },
            indent=2,
        )
    )
