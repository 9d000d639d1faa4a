"""Golden files of the tile cache a MapService produces (MapCache XML, ConfigMap, Deployment,
Service), and the pure rules around it: versions, diffs, automatic job names."""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from kms_crds.mapservice import MapServiceSpec
from kms_operator import builders, tilecache

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "tilecache"
OWNER = builders.Owner("ocean", "maps", "0000-uid")
TILESETS = [
    tilecache.Tileset(
        "sst", "kms_sst", "0123456789ab", 'Sea <surface> & "temperature"', (-180, -90, 180, 90)
    ),
    tilecache.Tileset("zones", "kms_zones", "ba9876543210", "Zones\nEND INCLUDE '/etc/passwd'", None),
]
CASES = {
    "disk": {"storage": {"persistentVolumeClaim": "tile-cache"}},
    "sqlite-jpeg": {
        "grids": ["WGS84"],
        "format": "jpeg",
        "storage": {"type": "sqlite"},
        "metatile": 4,
        "expires": 60,
        "replicas": 2,
        "resources": {"limits": {"cpu": "1500m", "memory": "512Mi"}},
        "seed": {"maxZoom": 6},
    },
}


def _check(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.read_text() == text, f"{name} changed; review and run UPDATE_GOLDEN=1 pytest {__file__}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_tile_cache_golden(case):
    tc = MapServiceSpec.model_validate({"tileCache": CASES[case]}).tile_cache
    xml = tilecache.build_mapcache_xml("ocean", tc, TILESETS, "http://ocean.maps.svc.cluster.local:8080/")
    _check(f"{case}.xml", xml)
    digest = tilecache.config_digest(xml)
    cm = tilecache.build_tiles_configmap(OWNER, xml, {t.name: t.version for t in TILESETS}, digest)
    children = {
        "configmap": {**cm, "data": {k: v for k, v in cm["data"].items() if k != tilecache.CONFIG_FILE}},
        "deployment": tilecache.build_tiles_deployment(OWNER, tc, cm["metadata"]["name"], digest),
        "service": tilecache.build_tiles_service(OWNER),
    }
    _check(f"{case}.yaml", yaml.safe_dump(children, sort_keys=True, width=120))


def test_titles_cannot_inject_configuration():
    tc = MapServiceSpec.model_validate({"tileCache": {}}).tile_cache
    root = ET.fromstring(tilecache.build_mapcache_xml("ocean", tc, TILESETS, "http://x/").encode())
    titles = [t.text for t in root.iter("title")]
    assert titles == [TILESETS[0].title, TILESETS[1].title]
    assert [c.get("name") for c in root.findall("cache")] == ["cache-sst", "cache-zones"]
    assert len(root.findall("tileset")) == 2


def test_generated_configuration_is_accepted_by_mapcache(tmp_path):
    """mapcache_seed parses the configuration (and refuses an unknown tileset with a clear error)."""
    tc = MapServiceSpec.model_validate({"tileCache": {"storage": {"type": "sqlite"}}}).tile_cache
    xml = tilecache.build_mapcache_xml("ocean", tc, TILESETS, "http://127.0.0.1:9/")
    conf = tmp_path / "mapcache.xml"
    conf.write_text(xml.replace(tilecache.CACHE_ROOT, str(tmp_path)))
    r = subprocess.run(
        ["mapcache_seed", "-c", str(conf), "-t", "nope", "-z", "0,0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "tileset not found in configuration" in r.stdout + r.stderr  # parsed; only the name is wrong
    conf.write_text(xml.replace("<mapcache>", "<mapcache><broken>"))
    r = subprocess.run(
        ["mapcache_seed", "-c", str(conf), "-t", "sst"], capture_output=True, text=True, timeout=30
    )
    assert "tileset not found" not in r.stdout + r.stderr and r.returncode != 0


def test_every_cache_container_runs_as_non_root_with_a_read_only_root():
    tc = MapServiceSpec.model_validate({"tileCache": {}}).tile_cache
    pod = tilecache.build_tiles_deployment(OWNER, tc, "cm", "h")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
        assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsUser"] != 0


def test_versions_follow_what_changes_the_tiles():
    spec = {"type": "raster", "source": {"path": "a.tif"}, "style": {"colorRamp": "viridis"}}
    status = {"extent": [0, 0, 1, 1], "checksum": "abc", "servedBy": ["x"], "url": "u"}
    v = tilecache.dataset_version(spec, status)
    assert v == tilecache.dataset_version(dict(spec), {**status, "servedBy": ["y"], "url": "other"})
    assert v != tilecache.dataset_version({**spec, "style": {"colorRamp": "magma"}}, status)
    assert v != tilecache.dataset_version(spec, {**status, "checksum": "def"})
    changes = tilecache.diff_versions({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "9", "d": "4"})
    assert (changes.new, changes.changed, changes.removed) == (["d"], ["b"], ["c"])
    name = tilecache.auto_job_name("x" * 63, "purge", {"b": 1})
    assert len(name) <= 63 and name == tilecache.auto_job_name("x" * 63, "purge", {"b": 1})


def test_a_dataset_changed_and_changed_back_is_seeded_again():
    """The switch back to an earlier version is a new seed job: the one that seeded that version
    first is finished (and its tiles were purged when the change went live). A retried reconcile
    of one switch names the same jobs (applied twice, created once)."""
    tc = MapServiceSpec.model_validate(
        {"tileCache": {"storage": {"persistentVolumeClaim": "tiles"}, "seed": {"maxZoom": 3}}}
    ).tile_cache
    first = tilecache.seed_mapjobs(OWNER, tc, {}, {"zones": "v1"}, replaced="")
    changed = tilecache.seed_mapjobs(OWNER, tc, {"zones": "v1"}, {"zones": "v2"}, replaced="ocean-tiles-a")
    back = tilecache.seed_mapjobs(OWNER, tc, {"zones": "v2"}, {"zones": "v1"}, replaced="ocean-tiles-b")
    names = [jobs[0]["metadata"]["name"] for jobs in (first, changed, back)]
    assert len(set(names)) == 3, names
    again = tilecache.seed_mapjobs(OWNER, tc, {"zones": "v2"}, {"zones": "v1"}, replaced="ocean-tiles-b")
    assert back == again
    assert back[0]["spec"]["cacheSeed"]["datasets"] == ["zones"]
    # the purges of the two retired configurations: different jobs, though both keep version v1
    purge_a = tilecache.purge_mapjobs(OWNER, tc, {"zones": "v0"}, {"zones": "v1"}, retired="ocean-tiles-a")
    purge_b = tilecache.purge_mapjobs(OWNER, tc, {"zones": "v2"}, {"zones": "v1"}, retired="ocean-tiles-b")
    assert purge_a[0]["metadata"]["name"] != purge_b[0]["metadata"]["name"]
    # pod-local caches: nothing to seed or purge
    local = MapServiceSpec.model_validate({"tileCache": {"seed": {"maxZoom": 3}}}).tile_cache
    assert tilecache.seed_mapjobs(OWNER, local, {}, {"zones": "v1"}, replaced="") == []
    assert tilecache.purge_mapjobs(OWNER, local, {"zones": "v0"}, {}, retired="x") == []


def test_seed_policy_and_zoom_ranges_are_validated():
    with pytest.raises(ValueError, match="minZoom"):
        MapServiceSpec.model_validate({"tileCache": {"seed": {"minZoom": 5, "maxZoom": 2}}})
    with pytest.raises(ValueError, match="extent"):
        MapServiceSpec.model_validate({"tileCache": {"seed": {"maxZoom": 2, "extent": [10, 0, 5, 1]}}})


def test_job_progress_is_read_from_the_last_progress_line():
    from kms_operator.job_progress import describe, parse_progress

    tail = "\n".join(
        [
            '{"ts":1,"level":"info","msg":"seeding","tileset":"sst","zoom":3,"progress":0.25}',
            "plain text from mapcache_seed",
            '{"ts":2,"level":"info","msg":"seeding","tileset":"sst","zoom":5,"progress":0.5}',
            '{"ts":3,"level":"info","msg":"no progress here"}',
            '{"broken json "progress": 0.9',
        ]
    )
    p = parse_progress(tail)
    assert p["progress"] == 0.5 and describe(p) == "running: 50% (seeding sst z5)"
    assert parse_progress("nothing\n{}") is None
    assert parse_progress('{"progress": 7}')["progress"] == 1.0
    assert parse_progress('{"progress": true}') is None


def test_large_configurations_are_stored_gzipped_and_read_back(tmp_path):

    tc = MapServiceSpec.model_validate({"tileCache": {}}).tile_cache
    many = [tilecache.Tileset(f"d{i:04d}", f"kms_d{i:04d}", f"{i:012x}", f"Dataset {i}") for i in range(2000)]
    xml = tilecache.build_mapcache_xml("ocean", tc, many, "http://x/")
    versions = {t.name: t.version for t in many}
    cm = tilecache.build_tiles_configmap(OWNER, xml, versions, tilecache.config_digest(xml))
    assert len(xml) > 1024 * 1024 and set(cm["binaryData"]) == {"mapcache.xml.gz"}
    assert len(yaml.safe_dump(cm)) < 512 * 1024  # fits a ConfigMap (1 MiB) with room to spare
    assert tilecache.configmap_file(cm.get("data"), cm.get("binaryData"), tilecache.CONFIG_FILE) == xml
    assert tilecache.configmap_file(cm.get("data"), cm.get("binaryData"), tilecache.VERSIONS_FILE)
    path = tilecache.config_path(cm)
    dep = tilecache.build_tiles_deployment(OWNER, tc, "cm", "h", config=path)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    # the image's entry script unpacks a gzipped configuration for mod_mapcache (images/mapcache)
    assert container["command"] == ["kms-mapcache-httpd"] and container["args"] == [path]
    assert path.endswith("mapcache.xml.gz")


def test_seeding_without_an_extent_covers_each_dataset_over_its_own_extent():
    from kms_jobs.tilecache import SeedParams
    from kms_operator.cache_jobs import _clamp

    p = SeedParams.model_validate(
        {
            "service": "s",
            "configXml": "<mapcache/>",
            "tilesets": ["a", "b"],
            "maxZoom": 3,
            "extents": {"a": [0, 0, 10, 10], "b": _clamp([170, 80, 200, 95])},
        }
    )
    assert p.extent_of("a") == [0, 0, 10, 10] and p.extent_of("b") == [170, 80, 180, 90]
    assert _clamp([5, 5, 5, 5])[2] > 5  # a point dataset still has an area to seed
    with pytest.raises(ValueError):
        SeedParams.model_validate(
            {
                "service": "s",
                "configXml": "x",
                "tilesets": ["a"],
                "maxZoom": 1,
                "extents": {"a": [5, 0, 1, 1]},
            }
        )
