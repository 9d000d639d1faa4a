"""The mapfile injection corpus of test_injection.py, this time through the facade (POST /datasets):
every string is either refused with 422 naming its field, or accepted and then served verbatim in a
mapfile that MapServer loads with exactly the expected layers (read from the operator's ConfigMap)."""

from __future__ import annotations

import shutil
import uuid

import mapscript
from kubernetes import client

from kms_operator.builders import mapfile_from_configmap
from tests.helpers import create_cr, get_cr, wait_until
from tests.integration.test_injection import CORPUS, REJECTED_TITLES

# file names a user may really have on the data volume (the path pattern allows quotes and spaces)
ODD_FILES = ['we"ird END.tif', 'INCLUDE "etc".tif', "ÆØÅ ✓ 漢字 🚀.tif", "# hash END.tif", "a' b.tif"]
# labels that are no valid label values, ids and identifiers that are no names
BAD_IDS = ['x" END', "END\nLAYER", "ÆØÅ", "a b", "../x", "INCLUDE"]


def test_injection_corpus_through_the_facade(cluster, facade, data_root, capsys):
    ns, tag = facade.namespace, uuid.uuid4().hex[:6]
    sel = {"inj-facade": tag}
    folder = f"inj-{tag}"
    (data_root / folder).mkdir()
    for name in ODD_FILES:
        shutil.copy(data_root / "ocean" / "sst-sample.tif", data_root / folder / name)
    accepted: dict[str, dict] = {}  # id → what the mapfile must show
    refused: dict[str, int] = {}
    server_errors = 0

    def post(body: dict, field: str | None) -> None:
        """field None: must be accepted; else accepted or refused with 422 naming `field`."""
        nonlocal server_errors
        r = editor.post("/datasets", json=body)
        server_errors += r.status_code >= 500
        if r.status_code == 201:
            accepted[r.json()["id"]] = body
            return
        assert field is not None, f"{body}: HTTP {r.status_code} {r.text}"
        assert r.status_code == 422 and r.json()["field"] == field, (body, r.status_code, r.text)
        refused[field] = refused.get(field, 0) + 1

    def spec(i: str, **kw) -> dict:
        base = {
            "id": f"fi-{tag}-{i}",
            "type": "raster",
            "source": {"path": "ocean/sst-sample.tif"},
            "identifier": f"fi:{tag}-{i}",
            "title": f"t{i}",
            "labels": sel,
        }
        return {**base, **kw}

    with facade.client("editor") as editor:
        for i, text in enumerate(CORPUS):  # titles, abstracts, keywords, campaigns: accepted, verbatim
            post(spec(f"c{i}", title=text, abstract=text, keywords=[text[:100]], campaign=text[:200]), None)
        for i, name in enumerate(ODD_FILES):  # odd but real file names
            post(spec(f"p{i}", source={"path": f"{folder}/{name}"}, title=f"path {name}"), "source.path")
        for i, text in enumerate(REJECTED_TITLES):  # control characters: refused
            post(spec(f"r{i}", title=text), "title")
            post(spec(f"a{i}", abstract=text), "abstract")
        for i, text in enumerate(CORPUS + BAD_IDS):  # not names: refused
            post(spec(f"x{i}", id=text), "id")
            post(spec(f"y{i}", identifier=text), "identifier")
        for i, text in enumerate(['x" END', "a\nb", "ÆØÅ"]):
            post(spec(f"l{i}", labels={**sel, "evil": text}), "labels")
            post(spec(f"m{i}", source={"path": f"ocean/sst-sample.tif{text}"}), "source.path")
        for i, text in enumerate(CORPUS[:4]):  # quotes in the label key itself
            post(spec(f"k{i}", labels={**sel, text: "v"}), "labels")
        # every refused body created nothing
        names = {
            o["metadata"]["name"]
            for o in client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(
                "maps.kube-mapserver.io", "v1alpha1", ns, "mapdatasets", label_selector=f"inj-facade={tag}"
            )["items"]
        }
        assert names == set(accepted), names ^ set(accepted)

        create_cr(
            cluster.api,
            ns,
            {
                "apiVersion": "maps.kube-mapserver.io/v1alpha1",
                "kind": "MapService",
                "metadata": {"name": f"inj-{tag}"},
                "spec": {"datasetSelector": {"matchLabels": sel}, "title": CORPUS[1]},
            },
        )

        def served():
            st = (get_cr(cluster.api, ns, "MapService", f"inj-{tag}") or {}).get("status") or {}
            return st if st.get("datasetCount") == len(accepted) and st.get("configMap") else None

        st = wait_until(served, f"all {len(accepted)} accepted datasets served", 90)
        cm = client.CoreV1Api(cluster.api).read_namespaced_config_map(st["configMap"], ns)
        m = mapscript.fromstring(mapfile_from_configmap(cm.data, cm.binary_data))
        assert m.numlayers == len(accepted), "a string created or removed a layer"
        layers = {m.getLayer(i).metadata.get("kms_dataset"): m.getLayer(i) for i in range(m.numlayers)}
        assert set(layers) == set(accepted)
        for id_, body in accepted.items():
            layer = layers[id_]
            assert layer.metadata.get("wms_title") == body["title"], f"title {body['title']!r} altered"
            assert layer.metadata.get("wms_abstract") in (None, body.get("abstract")), id_
            assert layer.data.endswith(body["source"]["path"]), f"DATA {layer.data!r} for {body['source']}"
        with facade.client("viewer") as viewer:  # and the API shows the strings back unchanged
            for id_, body in accepted.items():
                got = viewer.get(f"/datasets/{id_}").json()["spec"]
                assert got["title"] == body["title"] and got["source"]["path"] == body["source"]["path"]
        delete = client.CustomObjectsApi(cluster.api).delete_namespaced_custom_object
        delete("maps.kube-mapserver.io", "v1alpha1", ns, "mapservices", f"inj-{tag}")
        for id_ in accepted:
            assert editor.delete(f"/datasets/{id_}").status_code == 200
    tried = len(accepted) + sum(refused.values())
    with capsys.disabled():
        print(
            f"\n[security] injection corpus via the facade: inputs tried={tried}, accepted and served "
            f"verbatim={len(accepted)} in 1 loadable mapfile, "
            f"refused with their field={dict(sorted(refused.items()))}, "
            f"server errors={server_errors}, unsafe mapfiles=0"
        )
    assert server_errors == 0
