"""The HTML report in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by Selenium through the system chromedriver; nothing downloads a
browser). Charts must render without console errors, the table must sort, and a hostile run
name must stay text. A screenshot is kept under artifacts/ (gitignored)."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from groklab.report import build_report
from groklab.report.synthetic import synthetic_sweep

HOSTILE = "<img src=x onerror=alert(1)>"
ARTIFACTS = Path(__file__).parents[1] / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

if not (CHROMIUM and DRIVER):
    # CI installs both (scripts/test.sh); a developer machine without them skips, CI fails.
    if os.environ.get("CI"):
        raise RuntimeError("the browser test needs Debian's chromium and chromium-driver (scripts/test.sh installs them)")
    pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)
try:
    from selenium import webdriver
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("selenium not installed (pip install -e '.[test]')", allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1600"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    # Record instead of block: an injected alert() would leave its trace here.
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {
        "source": "window.__alerts = []; window.alert = function (m) { window.__alerts.push(String(m)); };"})
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    from groklab.store import Store

    root = tmp_path_factory.mktemp("browser")
    store = Store(root / "runs")
    ids = synthetic_sweep(store, n_runs=20, n_evals=120, steps=5000, sweep="syn", names=[HOSTILE])
    runs_page, sweep_page = root / "runs.html", root / "sweep.html"
    # the hostile run and five that grok (weight decay 0.1, fractions 0.3-0.6)
    runs_page.write_text(build_report(store, [ids[0], *ids[6:11]]), encoding="utf-8")
    sweep_page.write_text(build_report(store, sweep="syn"), encoding="utf-8")
    return {"runs": runs_page, "sweep": sweep_page}


def _open(driver, path: Path):
    driver.get(path.as_uri())
    t0 = time.time()
    while not driver.execute_script("return document.body.getAttribute('data-ready') === '1'"):
        assert time.time() - t0 < 30, "the report's script never finished"
        time.sleep(0.1)
    return driver.get_log("browser")  # also clears the log for the next check


def _severe(driver, earlier=()):
    return [e for e in [*earlier, *driver.get_log("browser")] if e["level"] == "SEVERE"]


def _traces(driver, div_id: str) -> int:
    return driver.execute_script(
        "var d = document.getElementById(arguments[0]); return d ? d.querySelectorAll('g.trace').length : -1;",
        div_id)


def test_charts_render_without_console_errors(browser, pages):
    logs = _open(browser, pages["sweep"])
    # overlay: the first 8 runs ticked, a solid validation and a dotted train line each
    assert _traces(browser, "overlay-plot") == 16
    for div in ("sweep-efficiency", "sweep-critical", "sweep-phase"):
        assert _traces(browser, div) > 0, div
    # run charts are drawn as they come into view
    browser.execute_script("document.getElementById('plot-run-1').scrollIntoView()")
    t0 = time.time()
    while _traces(browser, "plot-run-1") < 5 and time.time() - t0 < 10:
        time.sleep(0.1)
    assert _traces(browser, "plot-run-1") == 5  # train/val accuracy, train/val loss, weight norm
    svg_lines = browser.execute_script(
        "return document.querySelectorAll('#plot-run-1 .shapelayer path').length")
    assert svg_lines >= 1  # the 99 % threshold marker(s)
    browser.execute_script("window.groklabReport.renderAll()")
    assert all(_traces(browser, f"plot-run-{i}") == 5 for i in range(1, 21))
    assert _severe(browser, logs) == []
    browser.execute_script("window.scrollTo(0, 0)")
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "report-sweep-top.png"))
    browser.execute_script("document.getElementById('sweep').scrollIntoView()")
    time.sleep(0.3)
    browser.save_screenshot(str(ARTIFACTS / "report-sweep-analyses.png"))


def _column(driver, header: str) -> list[str]:
    return driver.execute_script("""
        var ths = Array.from(document.querySelectorAll('#runs-table thead th'));
        var col = ths.findIndex(function (th) { return th.textContent === arguments[0]; });
        return Array.from(document.querySelectorAll('#runs-table tbody tr'))
                    .map(function (tr) { return tr.cells[col].getAttribute('data-v'); });
    """.replace("arguments[0]", repr(header)))


def _click_sort(driver, header: str) -> None:
    for b in driver.find_elements("css selector", "#runs-table button.sort"):
        if b.text.strip(" ▲▼") == header:
            b.click()
            return
    raise AssertionError(f"no sort button {header!r}")


def test_sorting_the_table_reorders_rows(browser, pages):
    _open(browser, pages["sweep"])
    before = _column(browser, "run")
    assert before == [str(i) for i in range(1, 21)]
    _click_sort(browser, "t_val99")
    vals = _column(browser, "t_val99")
    nums = [float(v) for v in vals if v]
    assert nums == sorted(nums) and all(v == "" for v in vals[len(nums):])  # never-grokked last
    assert _column(browser, "run") != before
    _click_sort(browser, "t_val99")
    vals = _column(browser, "t_val99")
    nums = [float(v) for v in vals if v]
    assert nums == sorted(nums, reverse=True) and all(v == "" for v in vals[len(nums):])
    _click_sort(browser, "name")
    _click_sort(browser, "name")  # descending: punctuation sorts before letters, so "<img ..." is last
    assert _column(browser, "name")[-1] == HOSTILE and _column(browser, "name")[0] != HOSTILE
    _click_sort(browser, "run")
    assert _column(browser, "run") == before
    assert _severe(browser) == []


def test_overlay_follows_the_ticked_runs(browser, pages):
    _open(browser, pages["runs"])
    assert _traces(browser, "overlay-plot") == 12  # 6 runs, all ticked
    boxes = browser.find_elements("css selector", "input.pick")
    boxes[0].click()
    boxes[1].click()
    assert _traces(browser, "overlay-plot") == 8
    assert _severe(browser) == []


def test_hostile_run_name_is_text_and_runs_nothing(browser, pages):
    logs = _open(browser, pages["runs"])
    browser.execute_script("window.groklabReport.renderAll()")
    time.sleep(0.5)
    assert browser.execute_script("return window.__alerts") == []
    assert browser.execute_script("return document.querySelectorAll('img').length") == 0
    cell = browser.find_element("css selector", "#runs-table tbody tr:first-child td:nth-child(3)")
    assert cell.text == HOSTILE
    heading = browser.find_element("css selector", "#run-1 h3")
    assert heading.text == f"run 1: {HOSTILE}"
    legend = browser.execute_script(
        "return Array.from(document.querySelectorAll('#overlay-plot .legendtext')).map(function (t) "
        "{ return t.textContent; });")
    assert f"1: {HOSTILE}" in legend  # Plotly shows it as text too
    assert _severe(browser, logs) == []
    ARTIFACTS.mkdir(exist_ok=True)
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(ARTIFACTS / "report-runs.png"))
