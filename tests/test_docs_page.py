"""/docs in a real headless Chromium against gunicorn: it renders, and its copy buttons copy."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Iterator
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from flask.testing import FlaskClient
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename
from sqlalchemy.orm import Session

from southrock_api.data.models import BusinessUnit
from southrock_api.api.errors import CATALOGUE
from southrock_api.api.parameters import EnrolmentQuerySchema
from southrock_api.admin.tokens import IssuedToken
from tests import databases, factories, servers

if TYPE_CHECKING:
    from selenium.webdriver import Chrome

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = servers.ROOT / "docs" / "docs-page.png"
# The committed picture is replaced only on request (or when missing): each run's port differs.
UPDATE_SCREENSHOT = os.environ.get("SOUTHROCK_UPDATE_SCREENSHOT", "") not in ("", "0")
# Quiet, offline, reproducible: nothing but the page under test touches the network.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1600",
)
WAIT_SECONDS = 10


def two_work_units(session: Session) -> BusinessUnit:
    """EDU with a completed enrolment in each of ORG1 and ORG2; the token is for EDU."""
    bu = factories.business_unit(session, code="EDU", name="Education")
    for code in ("ORG1", "ORG2"):
        learner = factories.learner(session, factories.work_unit(session, bu, code=code))
        factories.enrolment(session, learner, factories.course(session))
    return bu


@pytest.fixture(scope="module")
def served(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, IssuedToken]]:
    """gunicorn on a fresh database with two work units of completed enrolments and a token."""
    directory = tmp_path_factory.mktemp("docs")
    with databases.fresh_database(backend, directory) as url:
        issued = servers.seeded_token(url, two_work_units)
        env = {
            "SOUTHROCK_DATABASE_URL": url,
            "SOUTHROCK_RATELIMIT_STORAGE_URI": f"sqlite:///{directory / 'ratelimit.sqlite'}",
        }
        with servers.gunicorn(env, workers=1, log_path=directory / "gunicorn.log") as base_url:
            yield base_url, issued


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chrome]:
    """Headless Chromium through chromedriver, with a fresh profile and its console recorded."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = f"{CHROMIUM} or {CHROMEDRIVER} is missing: apt-get install -y chromium chromium-driver"
        if databases.REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(WAIT_SECONDS * 3)
    try:
        yield driver
    finally:
        driver.quit()


def _open_docs(driver: Chrome, base_url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(base_url + "/docs")
    WebDriverWait(driver, WAIT_SECONDS).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true"
    )


def _click_copy(driver: Chrome, anchor: str, language: str) -> str:
    """Show a language's tab, click its copy button, wait for it to report; return the code."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.ID, f"tab-{anchor}-{language}").click()
    button = driver.find_element(
        By.CSS_SELECTOR, f"#example-{anchor}-{language} button.copy"
    )
    assert button.is_displayed()
    button.click()
    WebDriverWait(driver, WAIT_SECONDS).until(
        lambda d: button.get_attribute("data-copied") == "true"
    )
    assert button.text == "Copied"
    status = driver.find_element(By.ID, "copy-status").text
    assert status.startswith("Copied")
    return str(
        driver.execute_script(
            "return document.getElementById(arguments[0]).textContent", f"code-{anchor}-{language}"
        )
    )


def _read_clipboard(driver: Chrome) -> str:
    return str(
        driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "navigator.clipboard.readText().then(done, (error) => done('ERROR ' + error));"
        )
    )


def _console_problems(driver: Chrome) -> list[dict[str, object]]:
    """Console errors and warnings since the last call (a CSP violation would be one)."""
    return [
        entry
        for entry in driver.get_log("browser")
        if entry["level"] in ("SEVERE", "WARNING")
    ]


def _grant_clipboard(driver: Chrome, base_url: str) -> None:
    driver.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": base_url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )


def test_page_renders_every_endpoint_parameter_and_error(
    browser: Chrome, served: tuple[str, IssuedToken], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    base_url, _ = served
    _open_docs(browser, base_url)
    assert "Southrock LMS Enrolment Data Extraction API" in browser.title
    whoami = browser.find_element(By.ID, "whoami")
    enrolments = browser.find_element(By.ID, "listEnrolments")
    assert "GET /api/v1" in whoami.find_element(By.TAG_NAME, "h2").text
    assert "GET /api/v1/enrolments" in enrolments.find_element(By.TAG_NAME, "h2").text
    names = [
        cell.text
        for cell in enrolments.find_elements(By.CSS_SELECTOR, "table.parameters tbody td:first-child")
    ]
    assert set(EnrolmentQuerySchema().fields) <= set(names)
    errors = browser.find_element(By.CSS_SELECTOR, "table.errors").text
    for error in CATALOGUE:
        assert error.code in errors
    # Each endpoint's table lists the document's statuses, gunicorn's own 414 and 431 included.
    document = requests.get(base_url + "/openapi.json", timeout=10).json()
    for section in (whoami, enrolments):
        statuses = [
            cell.text
            for cell in section.find_elements(By.CSS_SELECTOR, "table.responses tbody td:first-child")
        ]
        assert statuses == list(document["paths"][section.get_attribute("data-path")]["get"]["responses"])
        assert {"414", "431"} <= set(statuses)
    refusals = browser.find_element(By.CSS_SELECTOR, "table.refusals").text
    assert "URI Too Long" in refusals and "Request Header Fields Too Large" in refusals
    tabs = [tab.text for tab in enrolments.find_elements(By.CSS_SELECTOR, "[role=tab]")]
    assert tabs == ["cURL", "Python", "Node.js", "C#"]
    page = browser.find_element(By.TAG_NAME, "body").text
    for topic in ("Authentication", "Paging", "Rate limits", "X-Rate-Limit-Remaining", "Link"):
        assert topic in page
    # The whole page, endpoints and examples included: the window grows to the page's height.
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, int(height) + 120)
    assert browser.save_screenshot(str(tmp_path / SCREENSHOT.name))
    if UPDATE_SCREENSHOT or not SCREENSHOT.exists():
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(tmp_path / SCREENSHOT.name, SCREENSHOT)
    browser.set_window_size(1280, 1600)
    assert _console_problems(browser) == []


def test_copy_button_puts_the_example_on_the_clipboard(
    browser: Chrome, served: tuple[str, IssuedToken]
) -> None:
    base_url, _ = served
    _open_docs(browser, base_url)
    _grant_clipboard(browser, base_url)
    code = _click_copy(browser, "listEnrolments", "curl")
    assert code.startswith("curl ")
    assert f"'{base_url}/api/v1/enrolments?ORGCODES=ORG1&ORGCODES=ORG2&SDATE=" in code
    assert _read_clipboard(browser) == code
    python_code = _click_copy(browser, "listEnrolments", "python")
    assert _read_clipboard(browser) == python_code
    assert _console_problems(browser) == []


def test_copy_falls_back_when_the_clipboard_api_is_denied(
    browser: Chrome, served: tuple[str, IssuedToken]
) -> None:
    from selenium.webdriver.common.by import By

    base_url, _ = served
    _open_docs(browser, base_url)
    browser.execute_script(
        "navigator.clipboard.writeText = () => Promise.reject(new DOMException('denied', 'NotAllowedError'));"
        "window.copiedByFallback = null;"
        "document.addEventListener('copy', (event) => {"
        "  const area = event.target;"
        "  window.copiedByFallback = area.value.substring(area.selectionStart, area.selectionEnd);"
        "});"
    )
    code = _click_copy(browser, "whoami", "node")
    button = browser.find_element(By.CSS_SELECTOR, "#example-whoami-node button.copy")
    assert button.get_attribute("data-copied-via") == "fallback"
    assert browser.execute_script("return window.copiedByFallback") == code
    assert code.startswith("// Node.js 18 or later")


@pytest.mark.parametrize("language", ["curl", "python"])
def test_the_copied_examples_work(
    browser: Chrome, served: tuple[str, IssuedToken], tmp_path: Path, language: str
) -> None:
    base_url, issued = served
    _open_docs(browser, base_url)
    code = browser.execute_script(
        "return document.getElementById(arguments[0]).textContent", f"code-listEnrolments-{language}"
    )
    env = {
        **os.environ,
        "SOUTHROCK_PUBLIC_KEY": issued.public_key,
        "SOUTHROCK_PRIVATE_KEY": issued.private_key,
    }
    if language == "curl":
        if shutil.which("curl") is None:
            pytest.skip("curl is not installed")
        command = ["sh", "-c", code]
    else:
        (tmp_path / "example.py").write_text(code)
        command = [sys.executable, str(tmp_path / "example.py")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    if language == "curl":
        assert result.stdout.startswith("HTTP/1.1 200")
        body = result.stdout.split("\n\n", 1)[1]  # text mode turned CRLF into LF
        assert {row["ORG_CODE"] for row in json.loads(body)} == {"ORG1", "ORG2"}
    else:
        assert len(result.stdout.splitlines()) == 2  # one line for each enrolment


def test_docs_and_document_are_public_and_not_counted(served: tuple[str, IssuedToken]) -> None:
    base_url, _ = served
    for path in ("/docs", "/openapi.json", "/static/docs.js", "/static/docs.css"):
        response = requests.get(base_url + path, timeout=10)
        assert response.status_code == 200
        assert "X-Rate-Limit-Limit" not in response.headers
    assert "script-src 'self'" in requests.get(base_url + "/docs", timeout=10).headers[
        "Content-Security-Policy"
    ]


def test_the_served_document_reads_with_openapi_spec_validators_reader(
    served: tuple[str, IssuedToken], tmp_path: Path
) -> None:
    """gunicorn's bytes, as the validator's CLI reads a file: through a YAML loader, which refuses
    raw U+FFFF (the patterns' top character) and other characters JSON allows unescaped."""
    base_url, _ = served
    response = requests.get(base_url + "/openapi.json", timeout=10)
    assert response.status_code == 200 and response.content.isascii()
    (tmp_path / "openapi.json").write_bytes(response.content)
    loaded, _ = read_from_filename(str(tmp_path / "openapi.json"))
    validate(loaded)
    assert loaded == response.json()
    # The page shows no pattern and inlines no JSON (its CSP allows no inline script), and holds
    # no character HTML forbids.
    page = requests.get(base_url + "/docs", timeout=10).text
    assert not re.search("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ufdd0-\ufdef\ufffe\uffff]", page)
    assert "<script>" not in page and "\\u" not in page


class _ChangingSite(BaseHTTPRequestHandler):
    """Two pages of enrolments whose data version changes between the first walk's two pages."""

    served = 0
    PAGES = {  # (data version, start) → rows
        ("v1", "1"): ["A", "B"],
        ("v2", "1"): ["A", "X"],
        ("v2", "3"): ["B", "C"],
    }

    def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
        query = dict(parse_qsl(urlsplit(self.path).query))
        start = query.get("start", "1")
        version = "v1" if type(self).served == 0 else "v2"  # an import lands after the first page
        type(self).served += 1
        rows = [{"LR_ID": name, "CRS_CODE": "C", "SCH_AEDATE": "2024-01-01", "SCH_SCORE": "90.00"} for name in self.PAGES[(version, start)]]
        body = json.dumps(rows).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Data-Version", version)
        if start == "1":
            self.send_header("Link", f'<http://{self.headers["Host"]}/api/v1/enrolments?start=3&limit=2>; rel="next"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.mark.parametrize(("language", "runner"), [("python", (sys.executable, "-c")), ("node", ("node", "--input-type=module", "-e"))])
def test_the_examples_start_again_when_the_data_changes_between_pages(
    client: FlaskClient, language: str, runner: tuple[str, ...]
) -> None:
    if shutil.which(runner[0]) is None:
        pytest.skip(f"{runner[0]} is not installed")
    _ChangingSite.served = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChangingSite)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        page = client.get("/docs", base_url=f"http://127.0.0.1:{server.server_address[1]}").get_data(as_text=True)
        found = re.search(f'<code id="code-listEnrolments-{language}">(.*?)</code>', page, re.S)
        assert found is not None
        env = {**os.environ, "SOUTHROCK_PUBLIC_KEY": "srpk_x", "SOUTHROCK_PRIVATE_KEY": "srsk_x"}
        result = subprocess.run([*runner, html.unescape(found.group(1))], env=env, capture_output=True, text=True, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr
    # Not A, A, B, C (the first walk's page 1, then the changed data's page 2): the walk started again.
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["A", "X", "B", "C"]
