"""Files in ConfigMaps, gzipped when large (kms_crds.configmap_files): one helper for the operator
(mapfile and tile cache ConfigMaps) and the facade."""

from __future__ import annotations

import hashlib

from kms_crds.configmap_files import (
    MAX_PLAIN,
    FileWriter,
    gzipped_lines,
    is_gzipped,
    pack_file,
    put_file,
    put_packed,
    read_file,
    read_mapfile,
)
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


def test_a_file_written_line_by_line_is_stored_byte_for_byte_as_put_file_stores_it() -> None:
    lines = [f"  LAYER {i} {'x' * (i % 70)}\n" for i in range(60_000)]
    lines[4321] = '  DATA "/vsicurl/https://example.org/a.tif"\n'
    text = "".join(lines)
    whole: dict = {}
    put_file(whole, "m", text)
    writer = FileWriter(watch=("/vsicurl/", "absent"))
    for line in lines:
        writer.write(line)
    packed = writer.packed()
    streamed: dict = {}
    put_packed(streamed, "m", packed)
    assert "m.gz" in whole["binaryData"] and streamed == whole
    assert (
        packed.found == {"/vsicurl/"}
        and packed.sha256.hexdigest() == hashlib.sha256(text.encode()).hexdigest()
    )
    assert "".join(gzipped_lines(streamed["binaryData"], "m")) == text
    small: dict = {}
    put_packed(small, "m", pack_file("MAP\nEND\n"))
    assert small == {"data": {"m": "MAP\nEND\n"}}
