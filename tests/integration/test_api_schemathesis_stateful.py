"""schemathesis in stateful mode over the facade: scenarios follow the OpenAPI links (POST /datasets →
GET/DELETE /datasets/{id}, POST /jobs/{type} → GET/cancel/DELETE /jobs/{id}, maintenance → the job)
with the ids real answers returned. No server error; afterwards the facade's cache and the apiserver
agree on every object the scenarios created or deleted."""

from __future__ import annotations

import os
import re
import subprocess
import time
import warnings
from collections import Counter

import httpx
from kubernetes import client

from tests.conftest import REPO
from tests.helpers import wait_until
from tests.integration.test_api_schemathesis import _exists, _leftovers, fuzz_facade

MAX_SCENARIOS = int(os.environ.get("KMS_ST_STATEFUL_EXAMPLES", "30"))
# the stateful phase repeats until its time budget is spent (scenarios are ~0.1 s each)
MAX_SECONDS = int(os.environ.get("KMS_ST_STATEFUL_SECONDS", "25"))


def _names(cluster, ns: str, plural: str) -> set[str]:
    objs = client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(
        "maps.kube-mapserver.io", "v1alpha1", ns, plural
    )["items"]
    return {o["metadata"]["name"] for o in objs if not o["metadata"].get("deletionTimestamp")}


def _calls(fac) -> Counter:
    """The facade's own request counters: calls by (method, route, status)."""
    metrics = httpx.get(f"{fac.url}/metrics", timeout=10).text
    calls: Counter = Counter()
    for m in re.finditer(
        r'kms_api_requests_total\{method="(\w+)",route="([^"]+)",status="(\d+)"\} (\S+)', metrics
    ):
        calls[(m[1], m[2], int(m[3]))] += int(float(m[4]))
    return calls


def test_stateful_schemathesis_over_the_links_finds_no_server_error(
    cluster, facade_factory, operator_process, tmp_path, capsys
):
    fac = fuzz_facade(facade_factory, tmp_path, KMS_WATCH_TIMEOUT="5")
    token = fac.token("admin")
    cmd = [
        str(REPO / ".venv" / "bin" / "st"),
        "run",
        f"{fac.url}/openapi.json",
        "--phases",
        "stateful",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        str(MAX_SCENARIOS),
        "--max-time",
        str(MAX_SECONDS),
        "--seed",
        os.environ.get("KMS_ST_SEED", "20240601"),
        "--request-timeout",
        "30",
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--no-color",
    ]
    before = _calls(fac)
    (tmp_path / "schemathesis.toml").write_text('headers = { Authorization = "Bearer ${KMS_ST_TOKEN}" }\n')
    t0 = time.monotonic()
    try:
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=MAX_SECONDS + 120,
            cwd=tmp_path,
            env={**os.environ, "KMS_ST_TOKEN": token},
        )
        elapsed = time.monotonic() - t0
        out = done.stdout + done.stderr
        # the facade's own request counters: every call schemathesis made, by route and status
        calls = _calls(fac) - before  # what schemathesis did, not the fixture's readiness probes
        # what the scenarios created or deleted: the facade's cache agrees with the apiserver
        with fac.client("viewer") as viewer:

            def agree() -> bool:
                ds = {i["id"] for i in viewer.get("/datasets", params={"limit": 1000}).json()["items"]}
                jobs = {i["id"] for i in viewer.get("/jobs", params={"limit": 1000}).json()["items"]}
                return ds == _names(cluster, fac.namespace, "mapdatasets") and jobs == _names(
                    cluster, fac.namespace, "mapjobs"
                )

            wait_until(agree, "the facade's cache and the apiserver agree", 30)
            datasets = viewer.get("/datasets", params={"limit": 1}).json()["total"]
            jobs = viewer.get("/jobs", params={"limit": 1}).json()["total"]
    finally:
        fac.stop()
        core = client.CoreV1Api(cluster.api)
        core.delete_namespace(fac.namespace, propagation_policy="Background")
        try:
            wait_until(lambda: not _exists(core, fac.namespace), f"namespace {fac.namespace} gone", 120)
        except AssertionError as e:  # not the facade's doing: say what is stuck
            warnings.warn(f"{e}\nleft:\n{_leftovers(cluster, fac.namespace)}", stacklevel=1)
    assert done.returncode == 0, out[-12000:] + "\n--- facade log ---\n" + fac.log_tail(60)
    links = re.search(r"API Links:.*", out)
    scenarios = re.search(r"Scenarios:.*", out)
    server_errors = sum(n for (_, _, status), n in calls.items() if status >= 500)
    by_id = sum(n for (_, route, _), n in calls.items() if "{id}" in route)
    total = sum(calls.values())
    with capsys.disabled():
        print(
            f"\n[security] schemathesis stateful: {scenarios[0] if scenarios else 'scenarios ?'}; "
            f"{links[0] if links else 'links ?'}; calls={total} ({by_id} on /{{id}} routes), "
            f"live at the end: {datasets} datasets, {jobs} jobs, server errors={server_errors}, "
            f"cache/apiserver mismatches=0, {elapsed:.0f}s"
        )
    assert server_errors == 0, sorted(k for k in calls if k[2] >= 500)
    assert by_id > 0, "no scenario followed a link to an {id} route"
