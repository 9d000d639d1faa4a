"""Every container of the product runs non-root with a read-only root filesystem, and the namespace's
`restricted` Pod Security level (enforced) admitted them all."""

from __future__ import annotations

import json

from tests.helpers import wait_until


def test_the_namespace_enforces_restricted(product):
    ns = product.k.json("get", "namespace", product.namespace)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # enforcement is live: a root pod is refused at admission
    bad = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root-probe", "namespace": product.namespace},
        "spec": {
            "containers": [
                {"name": "c", "image": "localhost/kms/pause:x", "securityContext": {"runAsUser": 0}}
            ]
        },
    }
    r = product.k.run("apply", "--dry-run=server", "-f", "-", input=json.dumps(bad), check=False)
    assert r.returncode != 0 and "violates PodSecurity" in r.stderr, r.stderr


def _serving(pod: dict) -> bool:
    """A long-running pod (of a Deployment), Running and not being deleted."""
    owners = {o["kind"] for o in pod["metadata"].get("ownerReferences", [])}
    return (
        "ReplicaSet" in owners
        and pod["status"]["phase"] == "Running"
        and not pod["metadata"].get("deletionTimestamp")
    )


def test_every_container_runs_non_root_with_a_read_only_root(examples):
    p = examples
    everything = p.k.json("get", "pods", "-n", p.namespace)["items"]
    # every pod the namespace ever admitted (job pods included) is on the real node, locked down
    for pod in everything:
        name = pod["metadata"]["name"]
        assert pod["spec"]["nodeName"] == "kms-node", f"{name} is not on the real node"
        assert pod["spec"].get("securityContext", {}).get("runAsNonRoot") is True, name
        for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]:
            sc = c.get("securityContext") or {}
            assert sc.get("readOnlyRootFilesystem") is True, (name, c["name"], sc)
            assert sc.get("allowPrivilegeEscalation") is False, (name, c["name"])
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], (name, c["name"])
    serving = wait_until(
        lambda: [x for x in p.k.json("get", "pods", "-n", p.namespace)["items"] if _serving(x)],
        "serving pods",
    )
    components = {x["metadata"]["labels"].get("app.kubernetes.io/component") for x in serving}
    assert {"operator", "facade", "mapserver", "tilecache"} <= components, components
    for pod in serving:
        name = pod["metadata"]["name"]
        for c in pod["spec"]["containers"]:
            # what the process really is, asked inside the running container
            r = p.k.run(
                "exec", "-n", p.namespace, name, "-c", c["name"], "--", "sh", "-c", "id -u", check=False
            )
            if r.returncode:
                live = {x["metadata"]["name"]: x for x in p.k.json("get", "pods", "-n", p.namespace)["items"]}
                if name not in live or not _serving(live[name]):
                    continue  # replaced meanwhile (a rollout): its successor has the same spec
            uid = r.stdout.strip()
            assert uid.isdigit() and int(uid) != 0, f"{name}/{c['name']} runs as uid {uid!r} {r.stderr}"
            w = p.k.run(
                "exec", "-n", p.namespace, name, "-c", c["name"], "--", "sh", "-c", "touch /kms-write-probe",
                check=False,
            )  # fmt: skip
            assert w.returncode != 0, f"{name}/{c['name']} could write to its root filesystem"
