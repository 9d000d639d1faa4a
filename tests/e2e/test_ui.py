"""The /ui/ layer preview page in a real headless browser (Debian's Chromium, Selenium) against
the installed product: the page from the facade pod, maps from the MapServer and tile-cache pods.
KMS_UPDATE_SCREENSHOTS=1 writes the page's screenshot to docs/ui-preview.png (the README's).
The style editor's test comes last: it changes zones-sample and puts the example style back."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import httpx
import pytest
from selenium.webdriver.common.by import By

from kms_operator.mapfile import ramp_colors
from tests.e2e import browser as b
from tests.e2e.conftest import REPO, install, ready
from tests.helpers import wait_until
from tests.pixels import drawn, rgba

SCREENSHOT = REPO / "docs" / "ui-preview.png"
PROTECTED, FISHING, OUTLINE = "#2ca25f", "#fdae6b", "#333333"  # examples/zones-sample.yaml


@pytest.fixture(scope="module")
def page(examples) -> Iterator:
    d = b.chromium(install.browser_host_rules(examples.kubeconfig, examples.namespace))
    try:
        yield d
    finally:
        d.quit()


@pytest.fixture
def ui(page, examples):
    b.open_page(page, examples.facade_url, examples.admin_password)
    page.get_log("browser")  # from here on, each test sees its own console messages only
    return page


def test_login_form_refuses_a_wrong_password(page, examples):
    page.get(f"{examples.facade_url}/ui/")
    page.execute_script("sessionStorage.clear()")
    page.get(f"{examples.facade_url}/ui/")
    wait_until(lambda: b.by_id(page, "login").is_displayed(), "the login form")
    b.css(page, "#login input[name=username]").send_keys("admin")
    b.css(page, "#login input[name=password]").send_keys("not-the-password")
    b.css(page, "#login button[type=submit]").click()
    wait_until(lambda: "wrong username or password" in b.by_id(page, "login-error").text, "the 401 shown")
    assert not b.by_id(page, "app").is_displayed()
    assert page.execute_script("return sessionStorage.length") == 0
    assert "token" not in page.current_url and "password" not in page.current_url


def test_the_example_raster_is_drawn_from_the_wms_and_from_the_tile_cache(ui, examples):
    b.open_dataset(ui, "sst-sample")
    first, last = ramp_colors("viridis", 8)[0], ramp_colors("viridis", 8)[-1]

    def ramp_drawn(arr):
        # 8 classes west to east over the whole map: the first and the last each cover a slice
        return b.share_near(arr, first) > 0.03 and b.share_near(arr, last) > 0.03 and (arr,)

    (arr,) = wait_until(lambda: ramp_drawn(b.map_pixels(ui)), "the viridis ramp drawn on the map (WMS)")
    drawn(arr, 0.9)
    links = {a.text: a.get_attribute("href") for a in ui.find_elements(By.CSS_SELECTOR, "#dataset-links a")}
    assert "REQUEST=GetCapabilities" in links["WMS GetCapabilities"]
    png = links["PNG preview (GetMap)"]
    assert "REQUEST=GetMap" in png and "kms_sst-sample" in png
    assert "WMTS capabilities (tile cache)" in links
    # the tile cache's XYZ tiles instead of the WMS
    ui.find_element(By.CSS_SELECTOR, "input[name=source][value=tiles]").click()
    wait_until(
        lambda: any(
            "/gmaps/sst-sample@" in u
            for u in ui.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        ),
        "XYZ tiles requested from the tile cache",
    )
    wait_until(lambda: ramp_drawn(b.map_pixels(ui)), "the viridis ramp drawn on the map (tiles)")
    ui.find_element(By.CSS_SELECTOR, "input[name=source][value=wms]").click()
    assert b.by_id(ui, "map-message").text == ""
    assert b.severe_console_errors(ui) == []


def test_vector_features_are_drawn_and_a_click_shows_their_attributes(ui, examples):
    b.open_dataset(ui, "zones-sample")
    protected, fishing = b.blend(PROTECTED, 0.8), b.blend(FISHING, 0.8)  # opacity 80 over white

    def zones_drawn():
        arr = b.map_pixels(ui)
        return b.share_near(arr, protected, 12) > 0.05 and b.share_near(arr, fishing, 12) > 0.05

    wait_until(zones_drawn, "both zone classes drawn in their colours")
    b.click_map_at(ui, 10, 60)
    wait_until(lambda: b.feature_attribute(ui, "kind") == "protected", "feature info: kind=protected")
    assert b.feature_attribute(ui, "name") == "North"
    b.click_map_at(ui, 10, 30)
    wait_until(lambda: b.feature_attribute(ui, "kind") == "fishing", "feature info: kind=fishing")
    b.click_map_at(ui, 10, 45)  # between the two zones
    wait_until(lambda: b.by_id(ui, "feature-info").text == "no feature here", "no feature between the zones")
    assert b.severe_console_errors(ui) == []


def test_search_and_the_example_service_on_one_map(ui, examples, tmp_path):
    search = b.by_id(ui, "search")
    search.clear()
    search.send_keys("temperature")  # a keyword of sst-sample only

    def listed() -> list[str]:
        return [li.get_attribute("data-dataset") for li in ui.find_elements(By.CSS_SELECTOR, "#datasets li")]

    wait_until(lambda: "sst-sample" in listed() and "zones-sample" not in listed(), "the search finds sst")
    search.clear()
    search.send_keys(" ")
    wait_until(lambda: {"sst-sample", "zones-sample"} <= set(listed()), "all datasets again")
    # the example service's two datasets together: the zones opened, the raster checked under them
    b.open_dataset(ui, "zones-sample")
    ui.find_element(By.CSS_SELECTOR, "li[data-dataset='sst-sample'] input[type=checkbox]").click()
    ramp = ramp_colors("viridis", 8)
    # the zones lie at 0-20°E, where the raster's values (15-16.7) fall in its 5th class
    protected = b.blend(PROTECTED, 0.8, tuple(ramp[4]))

    def both_drawn():
        arr = b.map_pixels(ui)
        # checking the raster zooms out to both extents: the whole ramp, the zones small
        return b.share_near(arr, ramp[-1]) > 0.02 and b.share_near(arr, protected, 12) > 0.002

    wait_until(both_drawn, "the raster and the zones drawn together")
    b.click_map_at(ui, 10, 60)
    wait_until(lambda: b.feature_attribute(ui, "kind") == "protected", "feature info over both layers")
    # nothing but the facade and the map services: no CDN, no base map from the internet
    facade_host = examples.facade_url.split("/")[2].split(":")[0]
    others = {h for h in b.resource_hosts(ui) if h != facade_host and not h.endswith(".svc.cluster.local")}
    assert not others, f"the page loaded from {others}"
    wait_until(lambda: "OGC API" in b.service_links(ui, "ocean"), "the service list with ocean's URLs")
    shot = tmp_path / "ui-preview.png"
    ui.save_screenshot(str(shot))
    drawn(shot.read_bytes(), 0.99)
    if os.environ.get("KMS_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(shot, SCREENSHOT)


def _get(url: str, params: dict) -> httpx.Response | None:
    """GET, or None while a connection is reset (a MapServer pod a rollout replaced, for a moment)."""
    try:
        return httpx.get(url, params=params, timeout=30)
    except httpx.TransportError:
        return None


def _ready_service(examples, name: str) -> dict | None:
    svc = examples.get("mapservice", name)
    return svc if ready(svc) else None


def test_the_example_service_is_listed_with_its_wms_and_ogc_api_urls(ui, examples):
    # earlier tests may leave ocean rolling out: wait until it is Ready, then reload the page's lists
    status = wait_until(lambda: _ready_service(examples, "ocean"), "ocean Ready", timeout=300)["status"]
    ui.refresh()  # the token stays in the tab's sessionStorage
    links = wait_until(
        lambda: (found := b.service_links(ui, "ocean")) and "OGC API" in found and found,
        "ocean listed with its URLs (GET /services, GET /services/ocean)",
    )
    assert links["OGC API"] == status["ogcapi"]
    assert "SERVICE=WMS" in links["WMS"] and "REQUEST=GetCapabilities" in links["WMS"]
    assert "SERVICE=WFS" in links["WFS"]  # zones-sample offers WFS
    assert "SERVICE=WCS" in links["WCS"]  # sst-sample offers WCS
    assert "REQUEST=GetCapabilities" in links["WMTS (tile cache)"]
    assert b.css(ui, "#services li[data-service='ocean'] span.ok").text.startswith("ready")
    # the OGC API link is the live landing page of the service
    landing_url = examples.host_url(links["OGC API"])
    landing = wait_until(lambda: _get(landing_url, {"f": "json"}), "the OGC API landing page")
    assert landing.status_code == 200 and landing.json()["title"] == "Ocean maps"
    # opening the service: its datasets, links, conditions and the live mapfile
    b.css(ui, "#services li[data-service='ocean'] > button").click()
    wait_until(lambda: "sst-sample, zones-sample" in b.by_id(ui, "service-summary").text, "the service panel")
    panel = {a.text: a.get_attribute("href") for a in ui.find_elements(By.CSS_SELECTOR, "#service-links a")}
    assert panel["OGC API"] == status["ogcapi"]
    assert b.css(ui, "#service-conditions tr[data-condition=Ready] td:nth-child(2)").text == "True"
    b.css(ui, "#service-links button").click()
    wait_until(lambda: "kms_zones-sample" in b.by_id(ui, "mapfile").text, "the live mapfile shown")
    assert "kms_sst-sample" in b.by_id(ui, "mapfile").text  # both datasets' layers
    assert b.severe_console_errors(ui) == []


def _settled(examples, name: str) -> dict:
    """The dataset reconciled, Ready and its tiles seeded: no status update is under way (an editor
    loaded now keeps a current ETag)."""
    obj = examples.get("mapdataset", name)
    st = obj.get("status") or {}
    seeded = (st.get("tileCacheSeeded") or {}).get("version") == (st.get("tileCache") or {}).get("version")
    return ready(obj) and st.get("observedGeneration") == obj["metadata"]["generation"] and seeded and obj


def test_style_editor_previews_and_saves_a_colour(ui, examples):
    """Preview a new class colour (POST /datasets/preview: nothing applied), save it (PATCH with
    If-Match) and see the served map change; a save from a stale editor gets the 412 message."""
    original = wait_until(lambda: _settled(examples, "zones-sample"), "zones-sample settled")["spec"]
    protected = b.blend(PROTECTED, 0.8)
    api = examples.client()
    try:
        b.open_dataset(ui, "zones-sample")
        wait_until(lambda: b.share_near(b.map_pixels(ui), protected, 12) > 0.05, "zones drawn")
        red = "#d7191c"
        b.set_style_field(ui, "class-0-color", red)
        b.by_id(ui, "style-preview").click()
        wait_until(lambda: b.style_state(ui) == "previewed", "preview rendered")
        img_el = b.by_id(ui, "style-preview-img")
        # over the dataset's extent at the panel's width (bbox, width, height of the request)
        panel = b.by_id(ui, "editor-panel").size["width"]
        assert abs(img_el.size["width"] - panel) <= 4, (img_el.size, panel)
        img = rgba(img_el.screenshot_as_png)
        assert b.share_near(img, b.blend(red, 0.8), 15) > 0.05  # the preview is red...
        assert b.share_near(b.map_pixels(ui), protected, 12) > 0.05  # ...the served map is not
        assert red not in str(examples.get("mapdataset", "zones-sample")["spec"])  # nothing applied
        b.by_id(ui, "style-save").click()
        wait_until(lambda: b.style_state(ui) in ("saved", "served"), "saved")
        assert b.style_status(ui) == "200"
        assert examples.get("mapdataset", "zones-sample")["spec"]["style"]["vectorClasses"][0]["color"] == red
        wait_until(
            lambda: b.share_near(b.map_pixels(ui), b.blend(red, 0.8), 12) > 0.05, "map red", timeout=180
        )
        wait_until(lambda: b.style_state(ui) == "served", "the page saw the new style served", timeout=180)

        # a stale editor: the dataset changes through the API after it was loaded -> 412, nothing saved
        b.open_dataset(ui, "zones-sample")
        r = api.patch(
            "/datasets/zones-sample",
            json={"title": "Zones (changed elsewhere)"},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert r.status_code == 200, r.text
        b.set_style_field(ui, "class-0-color", PROTECTED)
        b.by_id(ui, "style-save").click()
        wait_until(lambda: b.style_state(ui) == "error", "the save refused")
        assert b.style_status(ui) == "412"
        assert "changed since you opened it" in b.by_id(ui, "style-message").text
        # the browser logs the refused PATCH (412) as a failed request: that one only
        assert all("412" in m for m in b.severe_console_errors(ui))
        spec = examples.get("mapdataset", "zones-sample")["spec"]
        assert spec["style"]["vectorClasses"][0]["color"] == red
        assert spec["title"] == "Zones (changed elsewhere)"
    finally:
        # the example's style and title back, for the tests after this one
        served = examples.get("mapservice", "ocean")["status"]["mapfileHash"]
        r = api.patch(
            "/datasets/zones-sample",
            json={"title": original["title"], "style": original["style"]},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        api.close()
        assert r.status_code == 200, r.text
    assert examples.get("mapdataset", "zones-sample")["spec"]["style"] == original["style"]

    def restored() -> bool:
        svc = examples.get("mapservice", "ocean")
        return ready(svc) and svc["status"]["mapfileHash"] != served

    wait_until(restored, "ocean serves the example style again", timeout=300)
    wait_until(lambda: _settled(examples, "zones-sample"), "zones-sample settled again", timeout=180)
    b.open_dataset(ui, "zones-sample")  # reloaded: the WMS URL carries the new generation
    wait_until(lambda: b.share_near(b.map_pixels(ui), protected, 12) > 0.05, "the map green again")
    assert b.severe_console_errors(ui) == []
