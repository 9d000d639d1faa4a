"""schemathesis over the facade's OpenAPI schema: no server error, no response off its schema."""

from __future__ import annotations

import os
import subprocess

from kubernetes import client

from tests.conftest import REPO
from tests.helpers import require_tool, wait_until


def _leftovers(cluster, ns: str) -> str:
    """What keeps a namespace from going away (for the failure below)."""
    custom, batch = client.CustomObjectsApi(cluster.api), client.BatchV1Api(cluster.api)
    lines = []
    for plural in ("mapjobs", "mapdatasets"):
        objs = custom.list_namespaced_custom_object("maps.kube-mapserver.io", "v1alpha1", ns, plural)["items"]
        for o in objs:
            m, phase = o["metadata"], (o.get("status") or {}).get("phase")
            lines.append(f"{plural}/{m['name']} {m.get('finalizers')} {m.get('deletionTimestamp')} {phase}")
    for j in batch.list_namespaced_job(ns).items:
        lines.append(f"job/{j.metadata.name} {j.metadata.finalizers} {j.metadata.deletion_timestamp}")
    for p in client.CoreV1Api(cluster.api).list_namespaced_pod(ns).items:
        lines.append(f"pod/{p.metadata.name} {p.metadata.finalizers} {p.metadata.deletion_timestamp}")
    return "\n".join(lines[:80]) + f"\n({len(lines)} objects)"


def _exists(core: client.CoreV1Api, name: str) -> bool:
    try:
        core.read_namespace(name)
    except client.ApiException as e:
        if e.status == 404:
            return False
        raise
    return True


def fuzz_facade(facade_factory, tmp_path, **env: str):
    """A facade to fuzz: a data root of its own (fuzzed uploads land there), no login throttling,
    and fuzzed MapJobs get a claim that does not exist, so their pods stay Pending instead of running
    GDAL on random parameters (with up to 20 retries each) and slowing the session's runner."""
    root = tmp_path / "data"
    (root / "ocean").mkdir(parents=True)
    return facade_factory(
        root=root,
        KMS_LOGIN_MAX_FAILURES="1000",
        KMS_LOGIN_IP_MAX_FAILURES="100000",
        KMS_DATA_PVC="fuzzed-jobs-never-run",
        **env,
    )


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    cluster, facade_factory, operator_process, tmp_path
):
    st = REPO / ".venv" / "bin" / "st"
    require_tool(st, "schemathesis (the `st` command, a pinned dependency)", "setup")
    fac = fuzz_facade(facade_factory, tmp_path)
    token = fac.token("admin")
    cmd = [
        str(st),
        "run",
        f"{fac.url}/openapi.json",
        "--checks",
        "not_a_server_error,response_schema_conformance",
        "--max-examples",
        os.environ.get("KMS_ST_MAX_EXAMPLES", "20"),
        "--seed",
        os.environ.get("KMS_ST_SEED", "20240601"),
        "--request-timeout",
        "30",
        "--workers",
        "1",  # hypothesis' lambda descriptions call ast.parse, which is not thread-safe on Python 3.11
        "--generation-database",
        "none",
        "--no-color",
    ]
    # the token reaches schemathesis through its config file and the environment, not argv
    (tmp_path / "schemathesis.toml").write_text('headers = { Authorization = "Bearer ${KMS_ST_TOKEN}" }\n')
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
        env={**os.environ, "KMS_ST_TOKEN": token},
    )
    out = done.stdout + done.stderr
    fac.stop()
    problems = []
    if done.returncode != 0:
        problems.append(out[-12000:] + "\n--- facade log ---\n" + fac.log_tail(60))
    # what the fuzzer created goes now, not at the end of the session: the operator drops it from its
    # work. A namespace that does not go away (a finalizer never released) is a bug: it fails the test.
    core = client.CoreV1Api(cluster.api)
    core.delete_namespace(fac.namespace, propagation_policy="Background")
    try:
        wait_until(lambda: not _exists(core, fac.namespace), f"namespace {fac.namespace} gone", timeout=180)
    except AssertionError as e:
        problems.append(f"{e}\nwhat keeps it:\n{_leftovers(cluster, fac.namespace)}")
    assert not problems, "\n\n".join(problems)
