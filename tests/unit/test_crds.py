"""The CRD YAML in crds/ is generated from the pydantic models and must not drift."""

from __future__ import annotations

from kms_crds import generate


def test_checked_in_crds_match_the_models():
    assert generate.main(["--check"]) == 0, "run `make crds` and commit the result"


def test_every_spec_field_is_documented():
    def walk(node, path):
        for name, sub in (node.get("properties") or {}).items():
            assert sub.get("description"), f"{path}.{name} has no description (kubectl explain shows nothing)"
            walk(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    for model in generate.RESOURCES:
        schema = generate.crd_for(model)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        walk(schema["properties"]["spec"], f"{model.crd.kind}.spec")
        walk(schema["properties"]["status"], f"{model.crd.kind}.status")
