"""Files in ConfigMaps, gzipped when large (kms_crds.configmap_files): one helper for the operator
(mapfile and tile cache ConfigMaps) and the facade."""

from __future__ import annotations

from kms_crds.configmap_files import MAX_PLAIN, is_gzipped, put_file, read_file, read_mapfile
from kms_operator import builders


def test_small_files_stay_plain_large_ones_are_gzipped_and_read_back() -> None:
    cm: dict = {"data": {"other": "x"}}
    put_file(cm, "small.txt", "hello")
    big = "LAYER END\n" * (MAX_PLAIN // 5)
    put_file(cm, "big.txt", big)
    assert cm["data"] == {"other": "x", "small.txt": "hello"} and set(cm["binaryData"]) == {"big.txt.gz"}
    assert not is_gzipped(cm, "small.txt") and is_gzipped(cm, "big.txt")
    assert read_file(cm.get("data"), cm.get("binaryData"), "small.txt") == "hello"
    assert read_file(cm.get("data"), cm.get("binaryData"), "big.txt") == big
    assert read_file(cm.get("data"), cm.get("binaryData"), "missing") is None


def test_the_facade_reads_the_operators_mapfile_configmap() -> None:
    owner = builders.Owner("svc", "ns", "uid")
    for mapfile in ("MAP\nEND\n", "MAP\n" + "LAYER END\n" * 50_000 + "END\n"):
        cm = builders.build_configmap(owner, mapfile, "CONFIG END", "abc")
        assert read_mapfile(cm) == mapfile
