"""The Carbon page in a real browser: log in to the Airflow UI, trigger carbon_training from its Trigger
button, open the Carbon page from the nav, check the run's row against its stored report,
the chart, the download, and that a logged-out browser gets nothing. Screenshots: output/screenshots/."""
import json
import re
import time
from datetime import datetime
from urllib.parse import quote

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec

from tests.stack.browser import chromium, click, link, log_in, screenshot, trigger_with_conf, wait_for
from tests.stack.conftest import trace_conf
from tests.stack.services import ADMIN, REPO_ROOT, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.stack, pytest.mark.browser, pytest.mark.timeout(900)]

SCREENSHOTS = REPO_ROOT / "output" / "screenshots"

# Row cell -> where its number sits in comparison_report.json
NUMBERS = {
    "run_now_intensity_g_per_kwh": ("timing", "run_now_intensity_g_per_kwh"),
    "window_intensity_g_per_kwh": ("timing", "chosen_window_intensity_g_per_kwh"),
    "baseline_energy_kwh": ("efficiency", "baseline_energy_kwh"),
    "optimized_energy_kwh": ("efficiency", "optimized_energy_kwh"),
    "baseline_emissions_kg": ("carbon_savings", "baseline_emissions_kg"),
    "optimized_emissions_kg": ("carbon_savings", "optimized_emissions_kg"),
    "saving_kg": ("carbon_savings", "reduction_kg"),
    "timing_saving_kg": ("timing", "saving_kg"),
    "efficiency_saving_kg": ("efficiency", "saving_kg"),
    "baseline_accuracy_pct": ("accuracy_impact", "baseline_accuracy"),
    "optimized_accuracy_pct": ("accuracy_impact", "optimized_accuracy"),
    "wait_seconds": ("schedule", "wait_seconds"),
}
SCALE = {"mg CO₂e": 1e-6, "g CO₂e": 1e-3, "kg CO₂e": 1.0, "Wh": 1e-3, "kWh": 1.0, "g/kWh": 1.0,
         "%": 1.0, "s": 1.0, "min": 60.0, "h": 3600.0}


def shown_value(text: str) -> tuple[float, float]:
    """The number a person reads in a cell, in the report's unit, and half a step of its last shown
    digit (its rounding): '15.8 mg CO₂e' -> (1.58e-05, 5e-08) (kg)."""
    match = re.match(r"\s*([+-]?([0-9]+)(?:\.([0-9]+))?)\s*"
                     r"(mg CO₂e|kg CO₂e|g CO₂e|g/kWh|kWh|Wh|%|min|s|h)(?!\w)", text)
    assert match, f"no number with a unit in {text!r}"
    number, _, decimals, unit = match.groups()
    return float(number) * SCALE[unit], 0.5 * 10 ** -len(decimals or "") * SCALE[unit]


def _dig(report, path):
    for key in path:
        report = report[key]
    return report


@pytest.fixture
def browser(request):
    driver = chromium()
    yield driver
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else True:
        screenshot(driver, SCREENSHOTS / "failure.png")  # what the browser showed when the test failed
    driver.quit()


def test_carbon_page_in_the_browser(stack, browser):
    started = time.time()
    log_in(browser, stack.base_url, ADMIN, stack.password)
    conf = trace_conf(wait_seconds=5)
    run_id = trigger_with_conf(browser, stack.base_url, "carbon_training", conf)

    # The UI created the run with our conf, as the logged-in user.
    run = stack.run(run_id)
    assert run["conf"] == conf and run["run_type"] == "manual" and run["triggering_user_name"] == ADMIN
    stack.wait_for_run(run_id, timeout=600)
    report = stack.xcom(run_id, "report")
    assert stack.stored_report(run_id) == report  # what the page reads, whichever worker wrote it

    # The Carbon entry of the UI's nav opens the page inside the UI.
    browser.get(f"{stack.base_url}/dags/carbon_training")
    click(browser, link("Carbon"), what="Carbon in the nav")
    wait_for(browser, lambda b: "/plugin/carbon" in b.current_url)
    wait_for(browser, ec.frame_to_be_available_and_switch_to_it((By.CSS_SELECTOR, "iframe")))
    row_css = f'tr[data-run-id="{run_id}"]'
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, row_css), message=f"no row for {run_id}")
    # The page is static once its script has written the local times: read every cell in one go.
    planned_css = f'{row_css} td[data-field="planned_start"]'
    wait_for(browser, lambda b: "your time" in b.find_element(By.CSS_SELECTOR, planned_css).text)
    cells = browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll(arguments[0] + ' td[data-field]')].map("
        "td => [td.dataset.field, {value: td.dataset.value, text: td.innerText,"
        " datetime: td.querySelector('time') && td.querySelector('time').getAttribute('datetime')}]))",
        row_css)
    assert cells["provider"]["text"].startswith(report["sources"]["forecast"]), cells["provider"]

    # Every number in the row is the report's, exactly in data-value and to the shown precision on screen.
    for field, path in NUMBERS.items():
        cell = cells[field]
        expected = _dig(report, path)
        assert float(cell["value"]) == expected, field
        shown, rounding = shown_value(cell["text"])
        assert abs(shown - expected) <= rounding * (1 + 1e-9), (field, cell["text"], expected)
    assert cells["planned_start"]["datetime"] == report["schedule"]["planned_start"]
    assert "your time" in cells["planned_start"]["text"]  # local time beside UTC

    # The totals add up every stored report.
    all_reports = [json.loads(text) for (text,) in stack.records("SELECT report FROM carbon_reports")]
    shown = {key: float(browser.find_element(By.CSS_SELECTOR, f'[data-total="{key}"]')
                        .get_attribute("data-value"))
             for key in ("saving_kg", "baseline_cost_kg", "net_saving_kg")}
    avoided = sum(r["carbon_savings"]["reduction_kg"] for r in all_reports)
    cost = sum(r["baseline"]["measurement_cost_kg"] or 0.0 for r in all_reports)
    assert shown["saving_kg"] == pytest.approx(avoided) and shown["baseline_cost_kg"] == pytest.approx(cost)
    assert shown["net_saving_kg"] == pytest.approx(avoided - cost)
    assert cost > 0, "the first run measured the cached baseline: its emissions are a cost"
    browser.switch_to.default_content()
    page_shot = screenshot(browser, SCREENSHOTS / "carbon-page.png")

    # One run: the chart renders and the download is the report.
    browser.get(f"{stack.base_url}/carbon/")
    click(browser, lambda b: b.find_element(By.CSS_SELECTOR, f'tr[data-run-id="{run_id}"] td a'),
          what="the run's link")
    chart = wait_for(browser, lambda b: b.find_elements(By.ID, "chart"))[0]
    wait_for(browser,
             lambda b: b.execute_script("return arguments[0].complete && arguments[0].naturalWidth", chart))
    assert browser.execute_script("return arguments[0].naturalWidth", chart) > 500
    screenshot(browser, SCREENSHOTS / "carbon-run.png")
    download = browser.find_element(By.PARTIAL_LINK_TEXT,
                                    "download comparison_report.json").get_attribute("href")
    cookie = {"_token": browser.get_cookie("_token")["value"]}
    assert requests.get(download, cookies=cookie, timeout=30).json() == report

    # The run's graph view, for the artefacts.
    browser.get(f"{stack.base_url}/dags/carbon_training/runs/{quote(run_id, safe='')}")
    click(browser, lambda b: b.find_element(By.CSS_SELECTOR, "button[aria-label^='Show Graph']"),
          what="Show Graph")
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".react-flow__node"))
    time.sleep(1)
    screenshot(browser, SCREENSHOTS / "run-graph.png")

    # Logged out: the page, its JSON and the report file are refused, and no number leaks.
    browser.delete_all_cookies()
    ((report_id,),) = stack.records("SELECT id FROM carbon_reports WHERE run_id = :run", run=run_id)
    for path in ("/carbon/", f"/carbon/runs/{report_id}", "/carbon/api/runs"):
        browser.get(f"{stack.base_url}{path}")
        assert run_id not in browser.page_source.replace(quote(run_id, safe=""), "")
        assert "Not authenticated" in browser.page_source
    screenshot(browser, SCREENSHOTS / "carbon-page-logged-out.png")
    assert requests.get(f"{stack.base_url}/carbon/api/runs", timeout=30).status_code == 401
    assert requests.get(download, timeout=30).status_code == 401
    assert page_shot.stat().st_size > 20_000
    print(f"browser test: {time.time() - started:.0f} s; screenshots in {SCREENSHOTS}")


def test_the_ledger_view_in_the_browser_shows_a_try_as_the_database_holds_it(stack, browser):
    """An ordinary tagged DAG's run, then the Ledger view: one try's row against its rows in the records
    database (the try, its readings) and against the ledger's JSON."""
    run_id = stack.trigger({"work_seconds": 8}, dag_id="ordinary_ledger")
    stack.wait_for_run(run_id, timeout=300, dag_id="ordinary_ledger")
    ended = "SELECT worker, state, started_at FROM carbon_ledger_tasks WHERE dag_id = 'ordinary_ledger' " \
            "AND run_id = :run AND task_id = 'load' AND ended_at IS NOT NULL"
    ((worker, state, started_at),) = wait_until(lambda: stack.records(ended, run=run_id), 120,
                                                "the load task's meter to write its end")
    ((kwh,),) = stack.records("SELECT max(kwh) FROM carbon_energy_readings WHERE dag_id = 'ordinary_ledger' "
                              "AND run_id = :run AND job = 'ledger:load:try-1'", run=run_id)
    (entry,) = [e for e in stack.get("/carbon/api/ledger", dag_id="ordinary_ledger")["entries"]
                if e["run_id"] == run_id and e["task_id"] == "load"]

    log_in(browser, stack.base_url, ADMIN, stack.password)
    browser.get(f"{stack.base_url}/carbon/")
    click(browser, lambda b: b.find_element(By.PARTIAL_LINK_TEXT, "Ledger"), what="the Ledger link")
    row_css = f'tr.ledger-try[data-run-id="{run_id}"][data-task-id="load"]'
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, row_css), message=f"no row for {run_id}")
    cells = browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll(arguments[0] + ' td')].map("
        "td => [td.className.split(' ')[0], {value: td.dataset.value, text: td.innerText}]))", row_css)
    screenshot(browser, SCREENSHOTS / "carbon-ledger.png")

    assert cells["worker"]["text"] == worker and cells["state"]["text"] == state == "success"
    assert float(cells["energy-kwh"]["value"]) == kwh > 0  # exactly the last reading
    shown, rounding = shown_value(cells["energy-kwh"]["text"])
    assert abs(shown - kwh) <= rounding * (1 + 1e-9), cells["energy-kwh"]
    assert float(cells["emissions-g"]["value"]) == entry["emissions_g"]
    shown, rounding = shown_value(cells["emissions-g"]["text"])
    assert abs(shown - entry["emissions_g"] / 1000) <= rounding * (1 + 1e-9), cells["emissions-g"]
    assert datetime.fromisoformat(cells["started-at"]["value"]).timestamp() == pytest.approx(started_at)
    assert float(cells["would-have-saved-g"]["value"]) == entry["shadow"]["saved_g"]
    assert "would have" in browser.page_source.lower()
