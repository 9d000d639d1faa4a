"""Hostile input through YAML (the apiserver + operator path): a corpus of mapfile-breaking strings
never produces an unsafe mapfile, and sources outside the allow-lists never reach one."""

from __future__ import annotations

import json

import mapscript
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from kms_operator.builders import mapfile_from_configmap
from tests.helpers import create_cr, get_cr, wait_condition, wait_until

# strings a mapfile must never interpret: quotes, keywords, INCLUDE, comments, escapes, unicode
CORPUS = [
    'plain "quoted" END',
    'x" END LAYER NAME "evil" TYPE RASTER DATA "/etc/passwd" END "',
    'INCLUDE "/etc/passwd"',
    "single ' quote \\\\ backslash \\",
    "# not a comment",
    "trailing backslash \\",
    "END END END",
    "unicode ÆØÅ ✓ 漢字 🚀 \u202e rtl",
    '[pixel] > 0 AND "a" = "a"',
    "$(rm -rf /) `id` ${HOME}",
    "%3Cscript%3E <script>alert(1)</script>",
    '"',
    "\\",
]
# rejected by the CRD schema before the operator sees them
REJECTED_TITLES = ["line\nbreak", "tab\tch", "nul\x00", "carriage\rreturn", "bell\x07"]


def body(name: str, **spec) -> dict:
    base = {
        "type": "raster",
        "source": {"path": "ocean/sst-sample.tif"},
        "identifier": f"inj:{name}",
        "title": name,
    }
    base.update(spec)
    return {
        "apiVersion": "maps.kube-mapserver.io/v1alpha1",
        "kind": "MapDataset",
        "metadata": {"name": name, "labels": {"inj": "yes"}},
        "spec": base,
    }


def test_injection_corpus_never_yields_an_unsafe_mapfile(cluster, namespace, operator_process, capsys):
    ns = namespace
    for i, text in enumerate(CORPUS):
        create_cr(cluster.api, ns, body(f"c{i:02d}", title=text, abstract=text, keywords=[text[:100]]))
    create_cr(
        cluster.api,
        ns,
        {
            "apiVersion": "maps.kube-mapserver.io/v1alpha1",
            "kind": "MapService",
            "metadata": {"name": "svc"},
            "spec": {"datasetSelector": {"matchLabels": {"inj": "yes"}}, "title": CORPUS[1]},
        },
    )

    def served():
        st = get_cr(cluster.api, ns, "MapService", "svc").get("status") or {}
        return st if st.get("datasetCount") == len(CORPUS) else {"not yet": st}

    try:
        wait_until(lambda: "not yet" not in served(), "every corpus dataset served", 90)
    except AssertionError as e:
        raise AssertionError(f"{e}; status now: {served()}") from None
    cm_name = get_cr(cluster.api, ns, "MapService", "svc")["status"]["configMap"]
    cm = client.CoreV1Api(cluster.api).read_namespaced_config_map(cm_name, ns)
    m = mapscript.fromstring(mapfile_from_configmap(cm.data, cm.binary_data))
    assert m.numlayers == len(CORPUS), "a string created or removed a layer"
    titles = {
        m.getLayer(i).metadata.get("kms_dataset"): m.getLayer(i).metadata.get("wms_title")
        for i in range(m.numlayers)
    }
    for i, text in enumerate(CORPUS):
        assert titles[f"c{i:02d}"] == text, f"title {text!r} was altered or interpreted"
    for i in range(m.numlayers):
        assert m.getLayer(i).data.endswith("ocean/sst-sample.tif")

    rejected = 0
    for j, text in enumerate(REJECTED_TITLES):
        with pytest.raises(ApiException) as e:
            create_cr(cluster.api, ns, body(f"r{j:02d}", title=text))
        assert e.value.status == 422 and "spec.title" in json.loads(e.value.body)["message"]
        rejected += 1
    with capsys.disabled():
        print(
            f"\n[security] injection corpus: {len(CORPUS)} strings served verbatim in 1 loadable mapfile, "
            f"{rejected} control-character inputs rejected by the schema, 0 unsafe mapfiles"
        )


@pytest.mark.parametrize(
    "source",
    [
        {"url": "file:///etc/passwd"},
        {"url": "ftp://example.org/a.tif"},
        {"path": "/etc/passwd"},
        {"path": "../../etc/passwd"},
        {"path": "a/../../etc/passwd"},
        {"path": "/vsicurl/http://169.254.169.254/latest/meta-data"},
        {"url": 'https://a.tif" END'},
    ],
    ids=["file-url", "ftp-url", "absolute", "traversal", "inner-traversal", "vsicurl-path", "quote-in-url"],
)
def test_sources_outside_the_allow_list_are_rejected_by_the_schema(cluster, namespace, crds, source):
    with pytest.raises(ApiException) as e:
        create_cr(cluster.api, namespace, body("bad", source=source))
    assert e.value.status == 422


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/x.tif", "SourceURLNotAllowed"),
        ("http://10.0.0.1/private.tif", "SourceURLNotAllowed"),
        ("https://127.0.0.1:6443/api.tif", "SourceURLNotAllowed"),
    ],
    ids=["metadata-service", "private-range", "loopback-apiserver"],
)
def test_urls_to_private_ranges_are_refused_by_the_operator(
    cluster, namespace, operator_process, url, reason
):
    create_cr(cluster.api, namespace, body("u", source={"url": url}))
    obj = wait_condition(cluster.api, namespace, "MapDataset", "u", status="False", reason=reason)
    assert "allowed URL hosts" in obj["status"]["conditions"][0]["message"]
