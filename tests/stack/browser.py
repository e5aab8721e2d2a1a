"""Headless Debian Chromium driven through its own chromedriver (no browser download), and the few
Airflow UI gestures the browser test needs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import unquote

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.common.exceptions import (ElementClickInterceptedException, ElementNotInteractableException,
                                        StaleElementReferenceException, TimeoutException)
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait


def chromium() -> WebDriver:
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        raise RuntimeError("Debian's chromium and chromium-driver are needed: run `make system-deps`")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,1000",
                 "--lang=en-US"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    browser.set_page_load_timeout(60)
    return browser


def select_all(browser: WebDriver) -> None:
    ActionChains(browser).key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL).perform()


def wait_for(browser: WebDriver, condition, timeout: float = 30, message: str = ""):
    """Poll ``condition`` until it returns something truthy. Elements are looked up afresh on every poll,
    and a lookup that raced a re-render (stale element) just counts as not yet."""
    return WebDriverWait(browser, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(
        condition, message)


def click(browser: WebDriver, locate, timeout: float = 30, what: str = "") -> None:
    """Locate an element and click it, locating again if the page re-rendered it in between, or if it
    could not take the click yet (covered, or not laid out while a dialog animates in)."""
    def clicked(b):
        element = locate(b)
        if not element:
            return False
        try:
            element.click()
        except (StaleElementReferenceException, ElementClickInterceptedException,
                ElementNotInteractableException):
            return False
        return True
    wait_for(browser, clicked, timeout, f"could not click {what or locate}")


def button(label: str, within: str = "body"):
    """A locator: the visible, enabled button whose text is ``label`` (the last one, if several)."""
    def find(browser: WebDriver):
        found = [candidate for candidate in browser.find_elements(By.CSS_SELECTOR, f"{within} button")
                 if candidate.is_displayed() and candidate.text.strip() == label and candidate.is_enabled()]
        return found[-1] if found else None
    return find


def link(label: str):
    def find(browser: WebDriver):
        found = [a for a in browser.find_elements(By.CSS_SELECTOR, "a")
                 if a.is_displayed() and a.text.strip() == label]
        return found[0] if found else None
    return find


def log_in(browser: WebDriver, base_url: str, username: str, password: str) -> None:
    browser.get(f"{base_url}/")
    wait_for(browser, ec.url_contains("/auth/login"))
    wait_for(browser, ec.element_to_be_clickable((By.NAME, "username"))).send_keys(username)
    field = browser.find_element(By.NAME, "password")
    field.send_keys(password)
    field.send_keys(Keys.ENTER)
    wait_for(browser, lambda b: "/auth/login" not in b.current_url)


# The trigger form's "Configuration JSON" field: its Monaco editor, and the text the form holds for it
# (what it will submit), read from the field's React props: the editor draws only the lines in view.
_CONF_FIELD_JS = """
const label = [...document.querySelectorAll('[role=dialog] label')]
  .find(l => l.textContent.trim() === 'Configuration JSON');
const editor = label && label.parentElement.querySelector('.monaco-editor');
if (!editor) return null;
let node = editor;
while (node && !Object.keys(node).some(k => k.startsWith('__reactFiber$'))) node = node.parentElement;
let fiber = node && node[Object.keys(node).find(k => k.startsWith('__reactFiber$'))];
while (fiber && !(fiber.memoizedProps && typeof fiber.memoizedProps.value === 'string'
                  && typeof fiber.memoizedProps.onChange === 'function')) fiber = fiber.return;
return fiber ? {lines: editor.querySelector('.view-lines'), value: fiber.memoizedProps.value} : null;
"""


# Focus the editor's own input (a textarea, or the EditContext node in newer Monaco) without a click.
_FOCUS_EDITOR_JS = """
const label = [...document.querySelectorAll('[role=dialog] label')]
  .find(l => l.textContent.trim() === 'Configuration JSON');
const editor = label && label.parentElement.querySelector('.monaco-editor');
const input = editor && editor.querySelector('.native-edit-context, textarea');
if (input) input.focus();
return !!input;
"""


_EDITOR_FOCUSED_JS = """
const focused = document.activeElement;
return !!(focused && focused.closest && focused.closest('.monaco-editor'));
"""


def _form_conf(browser: WebDriver) -> dict | None:
    field = browser.execute_script(_CONF_FIELD_JS)
    return field and {"lines": field["lines"], "value": field["value"]}


def trigger_with_conf(browser: WebDriver, base_url: str, dag_id: str, conf: dict) -> str:
    """Press the DAG's Trigger button, paste ``conf`` into the form's Configuration JSON, read back what
    the form will submit (failing clearly if it did not take the conf), then submit. Returns the new
    run's id, from the run page the UI opens."""
    browser.get(f"{base_url}/dags/{dag_id}")
    click(browser, button("Trigger"), what="the DAG's Trigger button")
    dialog = "[role=dialog]"
    click(browser, button("Advanced Options", dialog), what="Advanced Options")
    # Mounted and holding the params' defaults: a stable state to type into.
    field = wait_for(browser, lambda b: (f := _form_conf(b)) and f["value"].strip().startswith("{") and f,
                     message="the Configuration JSON editor never showed the params' defaults")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", field["lines"])

    def took(b):
        try:
            return json.loads((_form_conf(b) or {}).get("value") or "null") == conf
        except ValueError:
            return False
    focused = lambda b: b.execute_script(_EDITOR_FOCUSED_JS)  # noqa: E731
    for _attempt in range(3):  # a click can land while the editor re-renders: type again, then give up
        try:
            click(browser, lambda b: (_form_conf(b) or {}).get("lines"), timeout=10,
                  what="the Configuration JSON editor")
            wait_for(browser, focused, timeout=5)
        except TimeoutException:
            # The lines never took a click: focus the editor's input directly, as a click would.
            browser.execute_script(_FOCUS_EDITOR_JS)
            try:
                wait_for(browser, focused, timeout=5)
            except TimeoutException:
                continue
        select_all(browser)
        # Inserted as one piece of text (as a paste would be), so the editor adds no closing brackets;
        # whatever it auto-closed when the text began is cut from the end.
        browser.execute_cdp_cmd("Input.insertText", {"text": json.dumps(conf)})
        ActionChains(browser).key_down(Keys.CONTROL).key_down(Keys.SHIFT).send_keys(Keys.END) \
            .key_up(Keys.SHIFT).key_up(Keys.CONTROL).send_keys(Keys.DELETE).perform()
        try:
            wait_for(browser, took, timeout=10)
            print(f"trigger form: the conf took on attempt {_attempt + 1}")
            break
        except TimeoutException:
            continue
    else:
        held = (_form_conf(browser) or {}).get("value")
        raise AssertionError(f"the trigger form did not take the conf: its Configuration JSON holds "
                             f"{held!r}, expected {json.dumps(conf)}")
    click(browser, button("Trigger", dialog), what="the form's Trigger button")
    wait_for(browser, ec.url_contains(f"/dags/{dag_id}/runs/"), message="the UI did not open the new run")
    return unquote(browser.current_url.split("/runs/", 1)[1].split("/")[0].split("?")[0])


def screenshot(browser: WebDriver, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(path))
    return path
