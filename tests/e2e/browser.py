"""Debian's Chromium (hack/setup.sh installs chromium and chromium-driver) driven by Selenium, headless,
for the /ui/ page. The in-cluster names in the resources' status resolve to the Services' ClusterIPs
(Chromium's --host-resolver-rules; this machine routes the Service network to the node's bridge):
the browser opens the same URLs a browser inside the cluster network would."""

from __future__ import annotations

import os
import shutil

import numpy as np
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.helpers import wait_until
from tests.pixels import hex_rgb, rgba

WINDOW = (1400, 900)


def _binary(env: str, *names: str) -> str:
    """KMS_CHROMIUM / KMS_CHROMEDRIVER, else the first of `names` on PATH (Debian's first)."""
    found = os.environ.get(env) or next((p for n in names if (p := shutil.which(n))), None)
    assert found, f"{' or '.join(names)} missing: run make setup (Debian's chromium, chromium-driver)"
    return found


def chromium(host_rules: str) -> WebDriver:
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    opts = webdriver.ChromeOptions()
    opts.binary_location = _binary("KMS_CHROMIUM", "chromium", "google-chrome")
    for arg in (
        "--headless=new",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--force-device-scale-factor=1",
        "--hide-scrollbars",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        f"--host-resolver-rules={host_rules}",
    ):
        opts.add_argument(arg)
    if os.geteuid() == 0:
        opts.add_argument("--no-sandbox")  # Chromium refuses root without it
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(_binary("KMS_CHROMEDRIVER", "chromedriver")))
    driver.set_page_load_timeout(60)
    return driver


def by_id(d: WebDriver, id_: str):
    return d.find_element(By.ID, id_)


def css(d: WebDriver, selector: str):
    return d.find_element(By.CSS_SELECTOR, selector)


def open_page(d: WebDriver, facade: str, password: str) -> None:
    """The page, logged in as the bootstrap admin through its login form."""
    d.get(f"{facade}/ui/")
    wait_until(lambda: by_id(d, "login").is_displayed() or by_id(d, "app").is_displayed(), "page shown")
    if by_id(d, "login").is_displayed():
        css(d, "#login input[name=username]").send_keys("admin")
        css(d, "#login input[name=password]").send_keys(password)
        css(d, "#login button[type=submit]").click()
    wait_until(lambda: by_id(d, "app").is_displayed(), "logged in: the app shown")


def open_dataset(d: WebDriver, name: str) -> None:
    button = wait_until(lambda: css(d, f"li[data-dataset='{name}'] button"), f"{name} listed")
    button.click()
    wait_until(
        lambda: css(d, "#dataset-conditions tr[data-condition=Ready] td:nth-child(2)").text == "True",
        f"{name}: Ready=True in the status panel",
    )


def map_pixels(d: WebDriver) -> np.ndarray:
    return rgba(by_id(d, "map").screenshot_as_png)


def share_near(arr: np.ndarray, colour: str | tuple[int, int, int], tolerance: int = 30) -> float:
    """Share of the image's pixels within `tolerance` per channel of an RGB colour."""
    rgb = np.array(hex_rgb(colour) if isinstance(colour, str) else colour)
    return float((np.abs(arr[..., :3].astype(int) - rgb).max(axis=-1) <= tolerance).mean())


def blend(colour: str, opacity: float, under: tuple[int, int, int] = (255, 255, 255)) -> tuple[int, ...]:
    """A colour drawn at `opacity` over `under` (the map's white background)."""
    return tuple(round(opacity * c + (1 - opacity) * u) for c, u in zip(hex_rgb(colour), under, strict=True))


def click_map_at(d: WebDriver, lon: float, lat: float) -> None:
    """Click the map where (lon, lat) is drawn (the page's kmsUi.pixelOf: CSS px from its corner)."""
    x, y = d.execute_script("return kmsUi.pixelOf(arguments[0], arguments[1])", lon, lat)
    m = by_id(d, "map")
    w, h = m.size["width"], m.size["height"]
    ActionChains(d).move_to_element_with_offset(m, int(x - w / 2), int(y - h / 2)).click().perform()


def feature_attribute(d: WebDriver, name: str) -> str | None:
    cells = d.find_elements(By.CSS_SELECTOR, f"#feature-info tr[data-attribute='{name}'] td")
    return cells[0].text if cells and by_id(d, "feature-info").get_attribute("data-state") == "done" else None


def resource_hosts(d: WebDriver) -> set[str]:
    """Hosts of everything the page loaded (the Resource Timing entries and the page itself)."""
    urls = d.execute_script(
        "return [location.href, ...performance.getEntriesByType('resource').map(e => e.name)]"
    )
    return {u.split("/")[2].split(":")[0] for u in urls if u.startswith("http")}


def severe_console_errors(d: WebDriver) -> list[str]:
    return [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"]


def set_style_field(d: WebDriver, name: str, value: str) -> None:
    """Set a style editor input (colour inputs cannot be typed into) as a user's change would."""
    d.execute_script(
        "const i = document.querySelector(`#style-editor [name='${arguments[0]}']`);"
        "i.value = arguments[1]; i.dispatchEvent(new Event('input', {bubbles: true}));",
        name,
        value,
    )


def style_state(d: WebDriver) -> str | None:
    """The editor's state: idle, busy, previewed, saved or error (#style-message's data-state)."""
    return by_id(d, "style-message").get_attribute("data-state")


def style_status(d: WebDriver) -> str | None:
    """The HTTP status of the editor's last save or failure (#style-message's data-status)."""
    return by_id(d, "style-message").get_attribute("data-status")


def service_links(d: WebDriver, name: str) -> dict[str, str]:
    """The links listed under a service in the sidebar: {label: href}."""
    items = d.find_elements(By.CSS_SELECTOR, f"#services li[data-service='{name}'] ul.service-urls a")
    return {a.text: a.get_attribute("href") for a in items}
