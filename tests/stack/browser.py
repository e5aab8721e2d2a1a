"""Headless Debian Chromium driven through its own chromedriver (no browser download), and the few
Airflow UI gestures the browser test needs."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from urllib.parse import unquote

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait


def chromium() -> WebDriver:
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        raise RuntimeError("Debian's chromium and chromium-driver are needed: run `make system-deps`")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,1000", "--lang=en-US"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    browser.set_page_load_timeout(60)
    return browser


def wait_for(browser: WebDriver, condition, timeout: float = 30):
    return WebDriverWait(browser, timeout).until(condition)


def button(browser: WebDriver, label: str, within: str = "body") -> WebElement:
    """The visible button whose text is ``label``."""
    def find(_):
        for candidate in browser.find_elements(By.CSS_SELECTOR, f"{within} button"):
            if candidate.is_displayed() and candidate.text.strip() == label:
                return candidate
        return False
    return wait_for(browser, find)


def select_all(browser: WebDriver) -> None:
    ActionChains(browser).key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL).perform()


def log_in(browser: WebDriver, base_url: str, username: str, password: str) -> None:
    browser.get(f"{base_url}/")
    wait_for(browser, ec.url_contains("/auth/login"))
    wait_for(browser, ec.element_to_be_clickable((By.NAME, "username"))).send_keys(username)
    field = browser.find_element(By.NAME, "password")
    field.send_keys(password)
    field.send_keys(Keys.ENTER)
    wait_for(browser, lambda b: "/auth/login" not in b.current_url)


def trigger_with_conf(browser: WebDriver, base_url: str, dag_id: str, conf: dict) -> str:
    """Press the DAG's Trigger button, put ``conf`` in the form's Configuration JSON, and submit.
    Returns the new run's id, from the run page the UI opens."""
    browser.get(f"{base_url}/dags/{dag_id}")
    button(browser, "Trigger").click()
    dialog = "[role=dialog]"
    button(browser, "Advanced Options", dialog).click()
    editors = wait_for(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, f"{dialog} .monaco-editor")) >= 2
                       and b.find_elements(By.CSS_SELECTOR, f"{dialog} .monaco-editor"))
    editor = editors[-1]  # the Configuration JSON, below the params form's own editors
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", editor)
    editor.find_element(By.CSS_SELECTOR, ".view-lines").click()
    select_all(browser)
    # Inserted as one piece of text (as a paste would be), so the editor adds no closing brackets;
    # whatever it auto-closed when the text began is cut from the end.
    browser.execute_cdp_cmd("Input.insertText", {"text": json.dumps(conf)})
    ActionChains(browser).key_down(Keys.CONTROL).key_down(Keys.SHIFT).send_keys(Keys.END) \
        .key_up(Keys.SHIFT).key_up(Keys.CONTROL).send_keys(Keys.DELETE).perform()
    time.sleep(0.5)  # the form re-validates the JSON on change
    submit = [b for b in browser.find_elements(By.CSS_SELECTOR, f"{dialog} button") if b.text.strip() == "Trigger"][-1]
    wait_for(browser, lambda _: submit.is_enabled())
    submit.click()
    wait_for(browser, ec.url_contains(f"/dags/{dag_id}/runs/"))
    return unquote(browser.current_url.split("/runs/", 1)[1].split("/")[0].split("?")[0])


def screenshot(browser: WebDriver, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(path))
    return path
