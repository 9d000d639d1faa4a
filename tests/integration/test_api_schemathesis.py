"""schemathesis over the facade's OpenAPI schema: no server error, no response off its schema."""

from __future__ import annotations

import os
import subprocess

from tests.conftest import REPO


def test_schemathesis_finds_no_server_error_and_no_schema_violation(facade_factory, tmp_path):
    root = tmp_path / "data"  # a data root of its own: fuzzed uploads land there
    (root / "ocean").mkdir(parents=True)
    # fuzzed MapJobs get a claim that does not exist: their pods stay Pending instead of running GDAL
    # on random parameters (with up to 20 retries each) and slowing the session's runner and operator
    fac = facade_factory(
        root=root,
        KMS_LOGIN_MAX_FAILURES="1000",
        KMS_LOGIN_IP_MAX_FAILURES="100000",
        KMS_DATA_PVC="fuzzed-jobs-never-run",
    )
    token = fac.token("admin")
    cmd = [
        str(REPO / ".venv" / "bin" / "st"),
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
    assert done.returncode == 0, out[-12000:] + "\n--- facade log ---\n" + fac.log_tail(60)
    assert "server error" not in out.lower() or "0 server error" in out.lower()
