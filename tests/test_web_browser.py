"""End to end in a real browser: the example pipelines publish to the real broker, the real consumers
project into PostgreSQL, `assetlog serve` (as the read-only role) serves the pages, headless Chromium
(Debian's chromium and chromium-driver, installed when missing) clicks through them."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import Isolated, StackEndpoints, create_isolated, drop_isolated
from query_world import reader_dsn
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait
from web_support import ARTIFACTS, ensure_programs, serving

from assetlog.config import ENV_POSTGRES_READONLY_DSN
from assetlog.consumers import run_until_caught_up
from assetlog.examples import run_all
from assetlog.producer import Asset, AssetProperties, Publisher, flow, materialize, publishing
from assetlog.projections import migrate
from assetlog.tokens import create_token
from assetlog.web.urls import asset_url

PROCESSED = "s3://my-bucket/processed-data.csv"
RAW = "s3://my-bucket/raw-data.csv"
CONFIG = "s3://my-bucket/processing-config.json"
EXPORT = "s3://web-test/nightly-export.csv"
HOSTILE = "s3://web-test/hostile.csv"
HOSTILE_NAME = "<script>alert('name')</script>"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1100")

nightly_export = Asset(key=EXPORT, properties=AssetProperties(name="Nightly export", owners=["ops-team"]))
hostile = Asset(key=HOSTILE, properties=AssetProperties(
    name=HOSTILE_NAME, description="\"><img src=x onerror=alert('description')>",
    owners=["<img src=x onerror=alert('owner')>"], url="javascript:alert('url')"))


@materialize(nightly_export, asset_deps=[PROCESSED])
def export_customers() -> None:
    raise ValueError("disk full")


@materialize(hostile)
def hostile_task() -> None:
    hostile.add_metadata({"<script>alert('metadata')</script>": "\"><svg onload=alert('value')>"})


@flow
def extra_flows() -> None:
    hostile_task()
    with contextlib.suppress(ValueError):  # the failure is the point: the export's health turns red
        export_customers()


@pytest.fixture(scope="module")
def world(stack: StackEndpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isolated]:
    """What the `isolated` fixture gives, for the whole module: both tests browse one world."""
    isolated = create_isolated(stack, tmp_path_factory.mktemp("outbox"))
    try:
        yield isolated
    finally:
        drop_isolated(stack, isolated)


@pytest.fixture(scope="module")
def served(world: Isolated) -> Iterator[str]:
    """The guide's pipelines plus a failed and a hostile asset, published, projected and served."""
    isolated = world
    ensure_programs(["dot"], ["graphviz"])  # the server draws the lineage pictures with it
    publisher = Publisher(isolated.settings)
    with publishing(publisher):
        run_all()
        with contextlib.suppress(ValueError):
            extra_flows()
    assert publisher.close().complete
    migrate(isolated.dsn)
    for projection in ("properties", "lineage"):
        stats = run_until_caught_up(projection, isolated.settings)
        assert stats.dead_letters == 0 and stats.events > 0
    with psycopg.connect(isolated.dsn) as conn:
        SIGN_IN["token"], _ = create_token(conn, "browser test")
    with serving(isolated.env(**{ENV_POSTGRES_READONLY_DSN: reader_dsn(isolated.dsn)})) as base:
        yield base


SIGN_IN: dict[str, str] = {}  # the token `served` made for this module


@pytest.fixture(scope="module")
def browser(served: str, chromium: webdriver.Chrome) -> webdriver.Chrome:
    """Chromium signed in the way a person does: the login form, then the session cookie."""
    chromium.get(served + "/")
    assert chromium.title == "Sign in · Assetlog"  # nothing is shown before signing in
    assert chromium.find_elements(By.ID, "assets") == []
    chromium.find_element(By.ID, "token").send_keys("alt_0000000000000000_not-a-token-not-a-token-not-a-token-not")
    chromium.find_element(By.CSS_SELECTOR, "form.login button").click()
    WebDriverWait(chromium, 10).until(expected_conditions.text_to_be_present_in_element(
        (By.ID, "login-message"), "not valid"))
    chromium.find_element(By.ID, "token").send_keys(SIGN_IN["token"])
    chromium.find_element(By.CSS_SELECTOR, "form.login button").click()
    WebDriverWait(chromium, 10).until(expected_conditions.title_is("Assets · Assetlog"))
    return chromium


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    chromium, chromedriver = ensure_programs(["chromium", "chromedriver"], ["chromium", "chromium-driver"])
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=chromedriver))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def texts(driver: webdriver.Chrome, selector: str) -> list[str]:
    return [element.text for element in driver.find_elements(By.CSS_SELECTOR, selector)]


def no_alert(driver: webdriver.Chrome) -> None:
    with pytest.raises(TimeoutException):
        WebDriverWait(driver, 0.5).until(expected_conditions.alert_is_present())


def api(base: str, path: str) -> tuple[int, Any]:
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {SIGN_IN['token']}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_browse_search_open_an_asset_and_follow_the_graph(served: str, browser: webdriver.Chrome) -> None:
    browser.get(served + "/")
    assert browser.title == "Assets · Assetlog"
    rows = browser.find_elements(By.CSS_SELECTOR, "#assets tbody tr")
    assert len(rows) >= 15
    health = {row.find_element(By.CSS_SELECTOR, ".asset-key").text: row.find_element(By.CSS_SELECTOR, ".health")
              for row in rows}
    assert health[PROCESSED].get_attribute("class") == "health ok"
    assert health[EXPORT].get_attribute("class") == "health failed"
    assert health[CONFIG].get_attribute("class") == "health unknown"  # only ever an upstream
    assert health[EXPORT].value_of_css_property("color") == "rgba(207, 34, 46, 1)"  # red, from the stylesheet

    search = browser.find_element(By.ID, "search")
    search.send_keys("customer")
    search.submit()
    WebDriverWait(browser, 10).until(expected_conditions.url_contains("search=customer"))
    names = texts(browser, "#assets .asset-name")
    assert "Processed Customer Data" in names and "Evolving Dataset" not in names and len(names) < len(rows)

    browser.find_element(By.LINK_TEXT, "Processed Customer Data").click()
    WebDriverWait(browser, 10).until(expected_conditions.text_to_be_present_in_element((By.ID, "asset-key"),
                                                                                       PROCESSED))
    assert browser.find_element(By.ID, "asset-name").text == "Processed Customer Data"
    assert texts(browser, "#owners a.owner") == ["data-team@company.com", "alice@company.com"]
    link = browser.find_element(By.CSS_SELECTOR, "#url a.external")
    assert link.get_attribute("href") == "https://dashboard.company.com/datasets/customer-data"
    assert link.text == "https://dashboard.company.com/datasets/customer-data"
    assert "rows_processed" in browser.find_element(By.ID, "metadata").text

    drawn = {g.get_attribute("data-key") for g in browser.find_elements(By.CSS_SELECTOR, "#picture g.node")}
    assert {PROCESSED, RAW, CONFIG, EXPORT} <= drawn
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "asset-page.png"))

    node = browser.find_element(By.CSS_SELECTOR, f'#picture g.node[data-key="{RAW}"] a')
    node.click()
    WebDriverWait(browser, 10).until(expected_conditions.text_to_be_present_in_element((By.ID, "asset-key"), RAW))
    assert browser.current_url == served + asset_url(RAW)
    assert texts(browser, "#downstream a") == [PROCESSED]


def test_hostile_properties_stay_text_in_the_browser(served: str, browser: webdriver.Chrome) -> None:
    browser.get(served + asset_url(HOSTILE))
    no_alert(browser)
    assert browser.find_element(By.ID, "asset-name").text == HOSTILE_NAME
    assert browser.find_element(By.ID, "description").text == "\"><img src=x onerror=alert('description')>"
    assert texts(browser, "#owners a.owner") == ["<img src=x onerror=alert('owner')>"]
    assert browser.find_element(By.ID, "url").text == "javascript:alert('url')"
    assert browser.find_elements(By.CSS_SELECTOR, "#url a") == []
    assert "<script>alert('metadata')</script>" in browser.find_element(By.ID, "metadata").text
    assert browser.find_elements(By.TAG_NAME, "img") == [] and browser.find_elements(By.TAG_NAME, "script") == []
    assert len(browser.find_elements(By.TAG_NAME, "svg")) == 1  # the lineage picture, nothing injected
    browser.get(served + "/?search=" + urllib.request.quote("\"><script>alert('search')</script>"))
    no_alert(browser)
    assert browser.find_element(By.ID, "search").get_attribute("value") == "\"><script>alert('search')</script>"

    status, answer = api(served, "/api/asset?key=" + urllib.request.quote(HOSTILE))
    assert status == 200 and answer["properties"]["name"] == HOSTILE_NAME
    assert api(served, "/api/lineage?key=s3://nowhere/x.csv")[0] == 404
    assert api(served, "/api/lineage?key=" + HOSTILE + "&depth=zero") == (
        400, {"error": "bad_request", "message": "depth must be a whole number from 1 to 100, not 'zero'"})
