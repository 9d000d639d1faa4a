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


def test_every_container_runs_non_root_with_a_read_only_root(examples):
    p = examples
    pods = wait_until(
        lambda: [
            x
            for x in p.k.json("get", "pods", "-n", p.namespace)["items"]
            if x["status"]["phase"] == "Running"
        ],
        "running pods",
    )
    components = {x["metadata"]["labels"].get("app.kubernetes.io/component") for x in pods}
    assert {"operator", "facade", "mapserver", "tilecache"} <= components, components
    for pod in pods:
        name = pod["metadata"]["name"]
        assert pod["spec"]["nodeName"] == "kms-node", f"{name} is not on the real node"
        for c in pod["spec"]["containers"]:
            sc = c.get("securityContext") or {}
            assert sc.get("readOnlyRootFilesystem") is True, (name, c["name"], sc)
            assert sc.get("allowPrivilegeEscalation") is False, (name, c["name"])
            # what the process really is, asked inside the running container
            uid = p.k.run(
                "exec", "-n", p.namespace, name, "-c", c["name"], "--", "sh", "-c", "id -u"
            ).stdout.strip()
            assert uid.isdigit() and int(uid) != 0, f"{name}/{c['name']} runs as uid {uid!r}"
            w = p.k.run(
                "exec", "-n", p.namespace, name, "-c", c["name"], "--", "sh", "-c", "touch /kms-write-probe",
                check=False,
            )  # fmt: skip
            assert w.returncode != 0, f"{name}/{c['name']} could write to its root filesystem"
