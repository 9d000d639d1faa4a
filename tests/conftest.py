"""Shared fixtures: a real control plane per test session and a fresh namespace per test.

The plane is the local one from hack/cluster.py, started once per session in a temp dir, unless
KMS_TEST_KUBECONFIG points at an existing cluster (e.g. kind in GitHub Actions).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config

REPO = Path(__file__).resolve().parent.parent


def _load_cluster_module():
    spec = importlib.util.spec_from_file_location("kms_hack_cluster", REPO / "hack" / "cluster.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


cluster_mod = _load_cluster_module()


@dataclass
class Cluster:
    """A reachable kube-apiserver: its kubeconfig and an API client for it."""

    kubeconfig: Path
    api: client.ApiClient
    local: bool  # started by this session (hack/cluster.py), as opposed to an existing cluster

    @property
    def kubectl(self) -> list[str]:
        binary = cluster_mod.binaries()["kubectl"] if self.local else "kubectl"
        return [str(binary), f"--kubeconfig={self.kubeconfig}"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/unit are `unit`, under tests/integration `integration`."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO / "tests").parts
        if parts[0] in ("unit", "integration", "smoke"):
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    existing = os.environ.get("KMS_TEST_KUBECONFIG")
    if existing:
        yield Cluster(Path(existing), config.new_client_from_config(config_file=existing), local=False)
        return
    plane = cluster_mod.Plane(tmp_path_factory.mktemp("plane"))
    cluster_mod.up(plane, port=None, timeout=120)
    pids = dict(plane.load()["pids"])
    api = config.new_client_from_config(config_file=str(plane.kubeconfig))
    try:
        yield Cluster(plane.kubeconfig, api, local=True)
    finally:
        api.close()
        left = cluster_mod.down(plane)
        # teardown proves the plane leaves no process behind
        still = {name: pid for name, pid in pids.items() if cluster_mod.alive(pid)}
        assert not left and not still, f"control-plane processes survived shutdown: {still or left}"


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace, deleted after the test (without waiting for it to finish terminating)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(cluster.api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background")
