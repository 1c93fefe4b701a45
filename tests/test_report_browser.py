"""report.html in a real browser: headless Chromium loads it offline, with no errors.

Needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``). Without them the test is skipped, except when
``SNOWFLAKE_REQUIRE_BROWSER=1`` (set by ``.ci/run``, which installs them): then it fails.
Every request off the page goes to a dead proxy, so anything the page tried to fetch from the
network would show up as an error.
"""

from __future__ import annotations

import os
import shutil

import pytest

pytestmark = pytest.mark.slow

#: JavaScript: every element matching ``arguments[0]``, also inside Bokeh's shadow roots.
_DEEP_QUERY = """
const deep = (selector, root) => {
    let found = [...root.querySelectorAll(selector)];
    for (const element of root.querySelectorAll("*")) {
        if (element.shadowRoot) found = found.concat(deep(selector, element.shadowRoot));
    }
    return found;
};
return deep(arguments[0], document);
"""


def find_browser() -> tuple[str, str]:
    """Paths of Chromium and its driver, or skip (fail under SNOWFLAKE_REQUIRE_BROWSER=1)."""
    browser = next(filter(None, map(shutil.which, ["chromium", "chromium-browser"])), None)
    driver = shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    reason = "needs chromium and chromedriver (apt-get install chromium chromium-driver)"
    if os.environ.get("SNOWFLAKE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"SNOWFLAKE_REQUIRE_BROWSER=1 but the report's browser test {reason}")
    pytest.skip(reason)


@pytest.fixture
def browser():
    """A headless Chromium through Selenium, cut off from the network; quit after the test."""
    binary, driver_path = find_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,1000",
        "--proxy-server=http://127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def deep(driver, selector):
    return driver.execute_script(_DEEP_QUERY, selector)


def table_cells(driver, column):
    """Texts of column ``column`` (0-based) in the rows the table shows, top to bottom."""
    rows = sorted(deep(driver, ".slick-row"), key=lambda row: row.rect["y"])
    return [row.find_elements("css selector", ".slick-cell")[column].text for row in rows]


def wait_for(driver, condition, what, timeout=30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: condition(d), message=what)


def check_report_in_browser(driver, page, screenshot):
    """Open ``page``; check errors, images, sorting and filtering; save ``screenshot``."""
    driver.get(page.resolve().as_uri())
    wait_for(driver, lambda d: len(deep(d, ".slick-row")) > 0, "the ranking table to render")
    wait_for(driver, lambda d: len(deep(d, "canvas")) > 0, "the atlas to render")

    images = deep(driver, "img")
    assert len(images) > 10
    wait_for(driver, lambda d: all(i.get_property("complete") for i in images), "images loaded")
    broken = [i.get_attribute("alt") for i in images if not i.get_property("naturalWidth")]
    assert not broken, f"images that did not decode: {broken}"

    ranks = [int(text) for text in table_cells(driver, 0)]
    assert ranks == sorted(ranks) and ranks[0] == 1
    header = next(h for h in deep(driver, ".slick-header-column") if "distance" in h.text)
    header.click()  # SlickGrid sorts ascending first: the least unique flake comes on top
    wait_for(driver, lambda d: int(table_cells(d, 0)[0]) != 1, "the table to sort")
    distances = [float(text.replace(",", "")) for text in table_cells(driver, 5)]
    assert distances == sorted(distances)

    box = deep(driver, "input[type=text]")[0]
    first_file = table_cells(driver, 2)[0]
    box.send_keys(first_file)
    wait_for(driver, lambda d: len(deep(d, ".slick-row")) < len(ranks), "the table to filter")
    assert first_file in table_cells(driver, 2)

    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, f"JavaScript errors or blocked requests: {errors}"
    requested = driver.execute_script(
        "return performance.getEntriesByType('resource').map(entry => entry.name)"
    )
    assert not [name for name in requested if not name.startswith(("data:", "blob:"))]
    assert driver.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000


def test_report_loads_offline_decodes_every_image_and_sorts(browser, tmp_path):
    from test_report import make_flakes

    from snowflake_tools import atlas, report

    folder = tmp_path / "flakes"
    folder.mkdir()
    features, names, ranking, near = make_flakes(folder, n_clusters=4, per_cluster=5)
    page = report.write_report(
        tmp_path / "report.html",
        features=features,
        flake_files=names,
        ranking=ranking,
        near_duplicates=near,
        image_dir=folder,
        positions=atlas.layout(features),
        run={"weights_mode": "random", "demo": "random VGG16 weights"},
    )
    check_report_in_browser(browser, page, tmp_path / "report.png")
