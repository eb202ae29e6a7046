"""The admin as an operator sees it: headless Chromium (Debian's, through its chromedriver, driven by
Selenium) against the gateway under real gunicorn, its static files served by WhiteNoise from a
collectstatic run. Log in, find a conversation by a word of its text, read it as a chat, see the
usage chart and the API keys list, every page styled by the admin's base.css. Screenshots are kept
in test-artifacts/admin/ (ignored by git)."""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
from collections.abc import Callable, Iterator

import psycopg
import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.wait import WebDriverWait

from tests.e2e.gunicorn import ROOT, GatewayProcess

pytestmark = pytest.mark.e2e

ARTIFACTS = ROOT / "test-artifacts" / "admin"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DEMO_CONFIG = """
logging: {format: text, level: warn}
providers: {demo: {type: demo}}
models: [{name: demo, provider: demo}]
"""
PASSWORD = "a-long-admin-password-1"
HEADER_BG = "rgba(65, 118, 144, 1)"  # base.css: #header { background: var(--header-bg) } = #417690


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    # GatewayProcess runs collectstatic first (once per test process), as the production steps do.
    with GatewayProcess(DEMO_CONFIG) as gw:
        subprocess.run([sys.executable, "manage.py", "createsuperuser", "--no-input", "--username", "admin",
                        "--email", "admin@example.com"], cwd=ROOT, check=True,
                       env={**gw.env(), "DJANGO_SUPERUSER_PASSWORD": PASSWORD})
        yield gw


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                     "--disable-gpu"):
        options.add_argument(argument)
    # Both paths given: Selenium Manager has nothing to look up or download.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.implicitly_wait(5)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def seed(gw: GatewayProcess) -> str:
    """An API conversation with a question, a tool call and its result, then a demo turn; and a
    week of usage rows (the rollup a gunicorn worker writes every few seconds)."""
    created = requests.post(f"{gw.base_url}/conversations", timeout=10, json={"items": [
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "Which museums should I visit in Paris?"}]},
        {"type": "function_call", "call_id": "call_m1", "name": "find_museums", "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "call_m1", "output": "Louvre, Orsay, Rodin"},
    ]})
    assert created.status_code == 200, created.text
    conversation = created.json()["id"]
    turn = requests.post(f"{gw.base_url}/responses", timeout=10,
                         json={"model": "demo", "input": "Which one first?", "conversation": conversation})
    assert turn.status_code == 200, turn.text
    requests.post(f"{gw.base_url}/responses", timeout=10, json={"model": "demo", "input": "Tell me about Lisbon"})
    with psycopg.connect(gw.database_url.replace("postgres://", "postgresql://")) as conn:
        for days_ago in range(7):
            for model, subject in (("demo", "key:1"), ("gpt-4o-mini", "key:2")):
                conn.execute(
                    "INSERT INTO conversations_app_usageday (day, model, provider, owner, subject, requests, errors, "
                    "input_tokens, cached_tokens, output_tokens, cost_usd) VALUES (current_date - %s, %s, %s, 'acme', "
                    "%s, %s, %s, %s, 0, %s, %s)",
                    (days_ago, model, model, subject, 20 + days_ago, days_ago % 2, 1000 * (days_ago + 1), 400, 0.05))
    return str(conversation)


def styled(driver: webdriver.Chrome) -> None:
    header = driver.find_element(By.ID, "header")
    assert header.value_of_css_property("background-color") == HEADER_BG, "base.css is not applied"


def navigating(driver: webdriver.Chrome, action: Callable[[], None]) -> None:
    """Do what loads a new page (submit a form, follow a link) and wait until it has replaced the
    old one: `submit()` returns before the navigation, and under load the old page's elements were
    still there to be found, then went stale."""
    old = driver.find_element(By.TAG_NAME, "html")
    action()
    WebDriverWait(driver, 15).until(staleness_of(old))


def shot(driver: webdriver.Chrome, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def test_static_files_are_served_compressed_and_cache_busted(gateway):
    page = requests.get(f"{gateway.url}/admin/login/", timeout=10).text
    hashed = re.search(r'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', page)
    assert hashed, "the admin links the hashed name collectstatic wrote"
    for path in ("/static/admin/css/base.css", hashed.group(1)):
        response = requests.get(f"{gateway.url}{path}", timeout=10, headers={"Accept-Encoding": "identity"})
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/css")
    forever = requests.get(f"{gateway.url}{hashed.group(1)}", timeout=10, stream=True,
                           headers={"Accept-Encoding": "gzip"})
    assert "max-age=315360000" in forever.headers["Cache-Control"] and "immutable" in forever.headers["Cache-Control"]
    assert forever.headers["Content-Encoding"] == "gzip"
    assert b"--header-bg" in gzip.decompress(forever.raw.read())


def test_an_operator_finds_reads_and_measures_in_a_styled_admin(gateway, browser):
    conversation = seed(gateway)
    driver = browser
    driver.get(f"{gateway.url}/admin/login/")
    styled(driver)
    driver.find_element(By.ID, "id_username").send_keys("admin")
    driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
    navigating(driver, driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click)
    assert driver.find_element(By.ID, "user-tools").text.upper().startswith("WELCOME")
    shot(driver, "01-index")

    # Search by a word of the messages.
    driver.get(f"{gateway.url}/admin/conversations_app/conversation/")
    search = driver.find_element(By.ID, "searchbar")
    search.send_keys("museums")
    navigating(driver, search.submit)
    links = driver.find_elements(By.CSS_SELECTOR, "#result_list a.gw-id")
    assert [link.get_attribute("title") for link in links] == [conversation]
    assert "1 conversation" in driver.find_element(By.CSS_SELECTOR, "p.paginator").text
    styled(driver)
    shot(driver, "02-search")

    # Open it: the chat.
    navigating(driver, links[0].click)
    chat = driver.find_element(By.CLASS_NAME, "gw-chat")
    text = chat.text
    assert "Which museums should I visit in Paris?" in text and "Which one first?" in text
    assert "find_museums" in text and '"city": "Paris"' in text and "Louvre, Orsay, Rodin" in text
    assert "demo" in text and "completed" in text
    assert len(chat.find_elements(By.CSS_SELECTOR, ".gw-role-assistant")) == 1
    raw = chat.find_element(By.CSS_SELECTOR, "details.gw-raw")
    assert not raw.find_element(By.TAG_NAME, "pre").is_displayed()
    raw.find_element(By.TAG_NAME, "summary").click()
    assert raw.find_element(By.TAG_NAME, "pre").is_displayed()
    bubble = chat.find_element(By.CSS_SELECTOR, ".gw-role-user")
    assert bubble.value_of_css_property("border-top-left-radius") == "8px", "the chat's admin.css is not applied"
    styled(driver)
    driver.execute_script("arguments[0].scrollIntoView()", chat)
    shot(driver, "03-conversation")

    # The responses list: ids truncated, tokens and status on screen at 1400 px.
    driver.get(f"{gateway.url}/admin/conversations_app/storedresponse/")
    shot(driver, "04-responses")
    visible = driver.find_element(By.CSS_SELECTOR, ".results")  # scrolls sideways when too wide
    right = visible.location["x"] + visible.size["width"]
    assert driver.execute_script("const r = arguments[0]; return r.scrollWidth <= r.clientWidth", visible)
    for column in ("status_shown", "tokens", "cost", "created"):
        cell = driver.find_element(By.CSS_SELECTOR, f"#result_list td.field-{column}")
        assert cell.location["x"] + cell.size["width"] <= right, f"{column} is off-screen"
    styled(driver)
    shot(driver, "04-responses")

    # Usage: the chart and the rows.
    driver.get(f"{gateway.url}/admin/conversations_app/usageday/")
    chart = driver.find_element(By.CSS_SELECTOR, ".gw-usage-chart svg")
    assert chart.is_displayed() and chart.size["height"] > 150
    assert len(chart.find_elements(By.CSS_SELECTOR, "rect, path")) > 14
    assert "key:2" in driver.find_element(By.ID, "result_list").text
    styled(driver)
    shot(driver, "05-usage")

    # identity_app's API keys list.
    driver.get(f"{gateway.url}/admin/identity_app/apikey/")
    assert "api key" in driver.find_element(By.TAG_NAME, "h1").text.lower()
    styled(driver)
    shot(driver, "06-api-keys")
    assert all((ARTIFACTS / f"{name}.png").stat().st_size > 5000 for name in
               ("01-index", "02-search", "03-conversation", "04-responses", "05-usage", "06-api-keys"))
