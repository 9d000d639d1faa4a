"""The facade's OpenAPI links (used by clients and schemathesis' stateful run) point at operations that
exist, with path parameters those operations take."""

from __future__ import annotations

from kms_api.main import create_app
from kms_api.settings import Settings
from kms_crds.kube import Kube


def test_every_link_resolves_to_an_operation_and_its_parameters():
    schema = create_app(Settings(namespace="x"), kube=Kube(None)).openapi()  # type: ignore[arg-type]
    ops = {
        op["operationId"]: {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        for ops in schema["paths"].values()
        for op in ops.values()
    }
    links = [
        (f"{method.upper()} {path} {code}", link)
        for path, by_method in schema["paths"].items()
        for method, op in by_method.items()
        for code, resp in op["responses"].items()
        for link in (resp.get("links") or {}).values()
    ]
    assert len(links) >= 8
    for where, link in links:
        assert link["operationId"] in ops, where
        assert set(link["parameters"]) == ops[link["operationId"]], where
        assert all(v.startswith("$response.body#/") for v in link["parameters"].values()), where
