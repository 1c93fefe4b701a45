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

#: Seconds any wait may take before it fails. Each wait ends as soon as the page reaches the
#: state it waits for, so this is only a ceiling: generous, for a machine busy with other work.
PATIENCE = 180


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
    driver.set_page_load_timeout(PATIENCE)
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


def wait_for(driver, condition, what):
    """Wait until ``condition(driver)`` is true (its value is returned); fail naming ``what``."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # Bokeh redraws tooltips and table rows: an element read a moment ago may be gone.
    wait = WebDriverWait(driver, PATIENCE, ignored_exceptions=[StaleElementReferenceException])
    return wait.until(lambda d: condition(d), message=what)


#: JavaScript: bring flake #1 of the atlas to the middle of the window and return its file,
#: its place in the window (from Bokeh's own data and scales) and a description of the element
#: on top at that place, looked up through the shadow roots; null until Bokeh has drawn.
_WHERE_IS_RANK_1 = """
const views = [];
const walk = (view) => { views.push(view); (view.child_views ?? []).forEach(walk); };
(window.Bokeh?.index?.roots ?? []).forEach(walk);
const plot = views.find((view) => view.model.name === "atlas");
const renderer = plot?.model.renderers.find((r) => r.data_source?.data?.thumb);
if (!renderer || !plot.frame.bbox.width) return null;
const data = renderer.data_source.data;
const row = data.rank.indexOf(1);
const place = () => {
    const box = plot.el.getBoundingClientRect();
    return [box.left + plot.frame.x_scale.compute(data.x[row]),
            box.top + plot.frame.y_scale.compute(data.y[row])];
};
const [, y] = place();
window.scrollBy(0, y - window.innerHeight / 2);
const [x2, y2] = place();
let element = document.elementFromPoint(x2, y2);
const path = [];
while (element) {
    path.push(element);
    const inner = element.shadowRoot?.elementFromPoint(x2, y2);
    if (!inner || inner === element) break;
    element = inner;
}
const onTop = path.at(-1);
const free = path[0] === plot.el && onTop.classList.contains("bk-events");
return [data.file[row], x2, y2, free ? "" : path.map((e) => e.className).join(" > ")];
"""


def hover_over_the_most_unique_flake(driver):
    """Point at flake #1 on the atlas: its tooltip must show its file, rank and thumbnail.

    Flake #1 can sit anywhere on the map, corners included (t-SNE fills the square, and where
    each flake lands differs between CPU kinds), so the place comes from Bokeh's own data, is
    scrolled to the middle of the window and must be free: the atlas's event layer, not a
    legend or anything else, must be on top there, or no pointer could reach the flake.
    """
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    file, x, y, covered_by = wait_for(
        driver, lambda d: d.execute_script(_WHERE_IS_RANK_1), "the atlas to place flake #1"
    )
    assert not covered_by, f"flake #1 ({file}) is covered by {covered_by} at ({x:.0f}, {y:.0f})"
    pointer = ActionBuilder(driver)
    pointer.pointer_action.move_to_location(int(x), int(y))
    pointer.perform()
    wait_for(driver, lambda d: any(file in t.text for t in deep(d, ".bk-Tooltip")), "a tooltip")
    tooltip = next(t for t in deep(driver, ".bk-Tooltip") if file in t.text)
    assert "#1" in tooltip.text
    wait_for(
        driver,
        lambda d: any(i.get_property("naturalWidth") for i in deep(d, "img[width='96']")),
        "the tooltip's thumbnail to decode",
    )


def check_top_rows_fit_1280_pixels(driver):
    """At a 1,280-pixel-wide window each top flake and its neighbours share one line."""
    driver.set_window_size(1280, 1000)
    rows = driver.execute_script(
        "return [...document.querySelectorAll('div.row')].slice(0, 3)"
        ".map(row => [...row.querySelectorAll('figure')].map(f => f.offsetTop))"
    )
    assert rows and all(len(row) == 6 and len(set(row)) == 1 for row in rows), rows


def check_report_in_browser(driver, page, screenshot):
    """Open ``page``; check errors, images, sorting, filtering, hover; save ``screenshot``."""
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

    assert "DEMO run" in driver.find_element("tag name", "body").text
    hover_over_the_most_unique_flake(driver)
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, f"JavaScript errors or blocked requests: {errors}"
    requested = driver.execute_script(
        "return performance.getEntriesByType('resource').map(entry => entry.name)"
    )
    assert not [name for name in requested if not name.startswith(("data:", "blob:"))]
    check_top_rows_fit_1280_pixels(driver)
    assert driver.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000


def test_report_of_a_notebook_02_run_works_offline_in_chromium(browser, run_notebook, tmp_path):
    from PIL import Image

    from snowflake_tools import demo

    flakes = tmp_path / "flakes"
    demo.make_demo_set(flakes, count=12, side=96, progress=False)
    shutil.copy(flakes / "demo-hexagonal_plate-01.png", flakes / "copy-of-plate.png")
    Image.open(flakes / "demo-stellar_plate-01.png").save(flakes / "reencoded.jpg", quality=90)
    results = tmp_path / "results"
    run_notebook(
        "02_most_unique_snowflake.ipynb",
        IMAGE_DIR=str(flakes),
        RESULTS_DIR=str(results),
        WEIGHTS=None,
        IMAGE_SIZE=64,
        TOP_N=3,
    )
    assert Image.open(results / "atlas.png").size[0] > 500
    check_report_in_browser(browser, results / "report.html", tmp_path / "report.png")
