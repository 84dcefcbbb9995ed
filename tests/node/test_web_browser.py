"""The review page in a real browser: Debian's headless Chromium driven by Selenium.

A reviewer signs in with the keyboard, sees a study arrive after a storescu send, opens
it, switches a segment off, and retries the dead letters of the unreachable destination;
the page is checked on a phone-sized window, for labels, alt texts and contrast, and for
console errors. Screenshots go to ``test-artifacts/browser/`` (CI keeps them)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import REPO, require_tool
from tests.node.node_helpers import CR_UNCOMPRESSED, copy_with_new_uids, storescu
from tests.node.web_helpers import WebNode

ARTIFACTS = Path(os.environ.get("CXR_TEST_ARTIFACTS", REPO / "test-artifacts")) / "browser"
WAIT_S = 240

# WCAG 2 contrast ratio of an element's text against its background (walks up to the
# first non-transparent background)
CONTRAST_JS = """
const luminance = (rgb) => {
  const [r, g, b] = rgb.match(/[0-9.]+/g).slice(0, 3).map(Number).map((c) => {
    c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const background = (el) => {
  for (; el; el = el.parentElement) {
    const color = getComputedStyle(el).backgroundColor;
    if (!/rgba\\(.*, 0\\)$/.test(color) && color !== "transparent") return color;
  }
  return "rgb(255, 255, 255)";
};
const el = arguments[0];
const [a, b] = [luminance(getComputedStyle(el).color), luminance(background(el))];
return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager reach for the internet
    options = Options()
    options.binary_location = require_tool("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(require_tool("chromedriver")), options=options)
    driver.set_page_load_timeout(60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: WebDriver, condition, what: str, timeout: float = 30):  # type: ignore[no-untyped-def]
    # the list is re-rendered on every refresh: an element found before it may go stale
    return WebDriverWait(driver, timeout, poll_frequency=0.5,
                         ignored_exceptions=[StaleElementReferenceException]).until(
        condition, message=f"waiting for {what}")


def _shot(driver: WebDriver, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def _visible(driver: WebDriver, element_id: str) -> bool:
    return driver.find_element(By.ID, element_id).is_displayed()


def _sign_in_with_the_keyboard(driver: WebDriver, web: WebNode) -> None:
    driver.get(web.url + "/ui/")
    _wait(driver, lambda d: _visible(d, "login"), "the sign-in form")
    assert driver.find_element(By.CSS_SELECTOR, ".banner").text.startswith(
        "AI output, not verified")
    _shot(driver, "01-sign-in")
    field = driver.find_element(By.ID, "token")
    field.send_keys("not-a-token", Keys.ENTER)
    _wait(driver, lambda d: d.find_element(By.ID, "login-error").text, "the refusal")
    field.send_keys(web.token, Keys.ENTER)
    _wait(driver, lambda d: _visible(d, "studies"), "the study list")


def _new_dead_lettered_study(driver: WebDriver, known: set[str]) -> str | None:
    driver.find_element(By.ID, "refresh").click()
    rows = driver.find_elements(By.CSS_SELECTOR, "#study-rows tr")
    fresh = [r for r in rows if r.get_attribute("data-study") not in known]
    if fresh and fresh[0].find_elements(By.CSS_SELECTOR, ".state-dead-lettered"):
        return fresh[0].get_attribute("data-study")
    return None


def test_review_page_in_chromium(web: WebNode, browser: WebDriver) -> None:
    _sign_in_with_the_keyboard(browser, web)
    known = {r.get_attribute("data-study")
             for r in browser.find_elements(By.CSS_SELECTOR, "#study-rows tr")}
    image = copy_with_new_uids(CR_UNCOMPRESSED, web.root / "browser")
    assert storescu([image], web.node.port).returncode == 0
    study_id = _wait(browser, lambda d: _new_dead_lettered_study(d, known),
                     "the new study, analysed, with its dead letters", timeout=WAIT_S)
    _shot(browser, "02-study-list")

    _wait(browser, lambda d: d.find_element(
        By.CSS_SELECTOR, f"tr[data-study='{study_id}'] a").click() or True, "the study link")
    _wait(browser, lambda d: _visible(d, "study"), "the study")
    radiograph = browser.find_element(By.CSS_SELECTOR, "img[data-layer=radiograph]")
    _wait(browser, lambda d: d.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth > 0", radiograph),
        "the radiograph to load")
    assert radiograph.get_attribute("alt")
    findings = browser.find_element(By.CSS_SELECTOR, ".panel table").text
    assert "abnormal" in findings and "Threshold" in findings
    assert "Models" in browser.find_element(By.CSS_SELECTOR, ".panel").text
    layer = browser.find_element(By.CSS_SELECTOR, "img[data-layer='segment-right_lung']")
    assert layer.is_displayed()
    _shot(browser, "03-study")
    browser.find_element(By.CSS_SELECTOR, "input[data-toggle='segment-right_lung']").click()
    assert not layer.is_displayed()
    _shot(browser, "04-right-lung-off")

    browser.find_element(By.ID, "back").click()
    _wait(browser, lambda d: _visible(d, "studies"), "the list again")
    browser.find_element(
        By.CSS_SELECTOR, f"tr[data-study='{study_id}'] button").send_keys(Keys.ENTER)
    _wait(browser, lambda d: "requeued" in d.find_element(By.ID, "studies-status").text,
          "the retry to be confirmed")
    _shot(browser, "05-retried")

    _check_accessibility(browser)
    browser.set_window_size(390, 844)  # a phone
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - window.innerWidth")
    _shot(browser, "06-phone")
    assert overflow <= 0
    errors = [entry["message"] for entry in browser.get_log("browser")
              if entry["level"] == "SEVERE" and "not-a-token" not in entry["message"]
              and "/api/session" not in entry["message"]]
    assert errors == []


def _check_accessibility(driver: WebDriver) -> None:
    for field in driver.find_elements(By.CSS_SELECTOR, "input"):
        labelled = driver.execute_script(
            "const e = arguments[0]; return e.labels && e.labels.length > 0", field)
        assert labelled, field.get_attribute("outerHTML")
    for picture in driver.find_elements(By.CSS_SELECTOR, "img"):
        assert picture.get_attribute("alt") is not None
    for selector in ("body", ".banner", "button", "th", "td"):
        for element in driver.find_elements(By.CSS_SELECTOR, selector)[:3]:
            if element.is_displayed():
                ratio = driver.execute_script(CONTRAST_JS, element)
                assert ratio >= 4.5, (selector, ratio)
