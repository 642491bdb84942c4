"""/docs in a real headless Chromium against gunicorn: it renders, and its copy buttons copy."""

from __future__ import annotations

import csv
import html
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from flask.testing import FlaskClient
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename
from sqlalchemy import func, select

from southrock_api.admin.tokens import IssuedToken
from southrock_api.api.errors import CATALOGUE, CHANGES_EXPIRED
from southrock_api.api.parameters import EnrolmentQuerySchema
from southrock_api.apidocs.page import COPY_ANCHOR, LANGUAGES, LIST_EXAMPLES
from southrock_api.data.db import get_database
from southrock_api.data.demo import write_demo_csvs
from southrock_api.data.importer import import_directory
from southrock_api.data.models import BusinessUnit, Enrolment, WorkUnit
from tests import databases, factories, feeds, servers

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


# The demo data `make serve` loads, smaller: enough completed enrolments that the root business
# unit's examples walk three pages of 500.
DEMO_ENROLMENTS = 1500
# Runnable here: the C# example needs the .NET SDK.
RUNNERS = {"curl": ("sh", "-c"), "python": (sys.executable, "-c"), "node": ("node", "--input-type=module", "-e")}
# How each language prints a null (PARENT_ORG_CODE at the top).
NULLS = {"python": "None", "node": "null"}


@dataclass(frozen=True)
class Served:
    """The docs site under gunicorn, on demo data, with a token of its root business unit and of one work unit."""

    base_url: str
    tokens: dict[str, IssuedToken]
    database_url: str
    demo: Path  # the demo data's CSV files, as imported


@contextmanager
def _demo_site(backend: str, directory: Path, env: dict[str, str] | None = None) -> Iterator[Served]:
    """gunicorn on the demo data set (as `make serve` loads it) with a business-unit and a work-unit token."""
    with databases.fresh_database(backend, directory) as url:
        app = servers.migrated_app(url)
        try:
            with get_database(app).session_factory() as session:
                write_demo_csvs(directory / "demo", enrolments=DEMO_ENROLMENTS, seed=1)
                import_directory(session, directory / "demo")
                root = session.scalars(select(BusinessUnit).where(BusinessUnit.parent_id.is_(None))).one()
                # The work unit with the most completed enrolments of its own.
                busiest = session.scalars(
                    select(WorkUnit)
                    .join(Enrolment, Enrolment.work_unit_id == WorkUnit.id)
                    .where(Enrolment.status == "COMPLETED")
                    .group_by(WorkUnit.id)
                    .order_by(func.count().desc(), WorkUnit.code)
                    .limit(1)
                ).one()
                tokens = {"business_unit": factories.token(session, root), "work_unit": factories.token(session, busiest)}
                session.commit()
        finally:
            servers.dispose(app)
        env = {
            "SOUTHROCK_DATABASE_URL": url,
            "SOUTHROCK_RATELIMIT_STORAGE_URI": f"sqlite:///{directory / 'ratelimit.sqlite'}",
            # The wrong-key runs must not reach the failure limit's 429.
            "SOUTHROCK_AUTH_FAILURE_LIMIT": "1000 per minute",
            **(env or {}),
        }
        with servers.gunicorn(env, workers=1, log_path=directory / "gunicorn.log") as base_url:
            yield Served(base_url, tokens, url, directory / "demo")


@pytest.fixture(scope="module")
def served(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The demo site; its bucket stays the default the page shows (the examples' runs spend under half of it)."""
    with _demo_site(backend, tmp_path_factory.mktemp("docs")) as site:
        yield site


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
    browser: Chrome, served: Served, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    base_url = served.base_url
    _open_docs(browser, base_url)
    assert "Southrock LMS Enrolment Data Extraction API" in browser.title
    whoami = browser.find_element(By.ID, "whoami")
    units = browser.find_element(By.ID, "listUnits")
    enrolments = browser.find_element(By.ID, "listEnrolments")
    assert "GET /api/v1" in whoami.find_element(By.TAG_NAME, "h2").text
    assert "GET /api/v1/units" in units.find_element(By.TAG_NAME, "h2").text
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
    for section in (whoami, units, enrolments):
        rows = {
            row.find_element(By.CSS_SELECTOR, "td:first-child").text: row.find_element(By.CSS_SELECTOR, "td:nth-child(2)").text
            for row in section.find_elements(By.CSS_SELECTOR, "table.responses tbody tr")
        }
        assert list(rows) == list(document["paths"][section.get_attribute("data-path")]["get"]["responses"])
        assert {"414", "431"} <= set(rows)
        # Every 404 an endpoint answers (spec §18): E2020 and, for any other method, E2030.
        assert rows["404"].split() == ["E2020", "E2030"]
    refusals = browser.find_element(By.CSS_SELECTOR, "table.refusals").text
    assert "URI Too Long" in refusals and "Request Header Fields Too Large" in refusals
    tabs = [tab.text for tab in enrolments.find_elements(By.CSS_SELECTOR, "[role=tab]")]
    assert tabs == ["cURL", "Python", "Node.js", "C#"]
    page = browser.find_element(By.TAG_NAME, "body").text
    for topic in ("Getting started", "Authentication", "Paging", "Rate limits", "X-Rate-Limit-Remaining", "Link", "Keeping a copy"):
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
    browser: Chrome, served: Served
) -> None:
    base_url = served.base_url
    _open_docs(browser, base_url)
    _grant_clipboard(browser, base_url)
    code = _click_copy(browser, "listEnrolments", "curl")
    assert f"url='{base_url}/api/v1/enrolments?limit=500'" in code
    assert _read_clipboard(browser) == code
    python_code = _click_copy(browser, "listEnrolments", "python")
    assert _read_clipboard(browser) == python_code
    assert _console_problems(browser) == []


def test_copy_falls_back_when_the_clipboard_api_is_denied(
    browser: Chrome, served: Served
) -> None:
    from selenium.webdriver.common.by import By

    base_url = served.base_url
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


def _example(page: str, anchor: str, language: str) -> str:
    """One example's code as the page shows it (and its copy button copies it)."""
    found = re.search(f'<code id="code-{anchor}-{language}">(.*?)</code>', page, re.S)
    assert found is not None
    return html.unescape(found.group(1))


def _run(
    language: str, code: str, public_key: str, private_key: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run an example as a user would (in cwd), with the keys in the environment it reads them from."""
    runner = RUNNERS[language]
    if shutil.which(runner[0]) is None or (language == "curl" and shutil.which("curl") is None):
        pytest.skip(f"{runner[0]} is not installed")
    env = {**os.environ, "SOUTHROCK_PUBLIC_KEY": public_key, "SOUTHROCK_PRIVATE_KEY": private_key}
    # Long enough to wait out a whole rate-limit window, should the site's bucket run out.
    return subprocess.run([*runner, code], env=env, capture_output=True, text=True, timeout=150, cwd=cwd)


@pytest.fixture(scope="module")
def every_row(served: Served) -> dict[tuple[str, str], tuple[list[dict[str, Any]], int]]:
    """Each list as the API answers each token, page after page, and its number of pages: read once."""
    found = {}
    for token, issued in served.tokens.items():
        for path in LIST_EXAMPLES:
            rows: list[dict[str, Any]] = []
            url: str | None = f"{served.base_url}{path}?limit=500"
            pages = 0
            while url:
                response = requests.get(url, auth=(issued.public_key, issued.private_key), timeout=10)
                assert response.status_code == 200
                rows += response.json()
                pages += 1
                url = response.links.get("next", {}).get("url")
            found[(path, token)] = (rows, pages)
    return found


def _printed(language: str, row: dict[str, Any], columns: tuple[str, ...]) -> str:
    """The line an example prints for a row."""
    return " ".join(NULLS[language] if row[column] is None else str(row[column]) for column in columns)


@pytest.mark.parametrize("token", ["business_unit", "work_unit"])
@pytest.mark.parametrize("anchor", ["listEnrolments", "listUnits"])
@pytest.mark.parametrize("language", ["curl", "python", "node"])
def test_the_examples_return_every_row_on_demo_data(
    served: Served,
    every_row: dict[tuple[str, str], tuple[list[dict[str, Any]], int]],
    language: str,
    anchor: str,
    token: str,
) -> None:
    """As copied from the page, each list example prints the whole list the token sees, every page of it."""
    issued = served.tokens[token]
    page = requests.get(served.base_url + "/docs", timeout=10).text
    path = {"listEnrolments": "/api/v1/enrolments", "listUnits": "/api/v1/units"}[anchor]
    expected, pages = every_row[(path, token)]
    assert expected  # demo data: the token sees rows, so the example must print them
    if token == "business_unit" and anchor == "listEnrolments":
        assert pages == 3  # the example has to follow `next`
    result = _run(language, _example(page, anchor, language), issued.public_key, issued.private_key)
    assert result.returncode == 0, result.stderr
    if language == "curl":
        # One JSON array a page, as the API wrote it.
        printed_pages = [json.loads(line) for line in result.stdout.splitlines()]
        assert len(printed_pages) == pages
        assert [row for rows in printed_pages for row in rows] == expected
    else:
        columns = LIST_EXAMPLES[path].columns
        assert result.stdout.splitlines() == [_printed(language, row, columns) for row in expected]


@pytest.mark.parametrize("language", ["curl", "python", "node"])
def test_the_whoami_example_names_the_tokens_unit(served: Served, language: str) -> None:
    issued = served.tokens["work_unit"]
    page = requests.get(served.base_url + "/docs", timeout=10).text
    result = _run(language, _example(page, "whoami", language), issued.public_key, issued.private_key)
    assert result.returncode == 0, result.stderr
    assert issued.unit_code in result.stdout and "ORG_NAME" in result.stdout


@pytest.mark.parametrize("anchor", ["whoami", "listUnits", "listEnrolments", COPY_ANCHOR])
@pytest.mark.parametrize("language", ["curl", "python", "node"])
def test_the_examples_stop_with_the_apis_error_code(served: Served, language: str, anchor: str, tmp_path: Path) -> None:
    """A wrong key: a non-zero exit with the status, E-code and message, not a bare HTTP error (spec §13)."""
    issued = served.tokens["business_unit"]
    page = requests.get(served.base_url + "/docs", timeout=10).text
    code = _example(page, anchor, language)
    result = _run(language, code, issued.public_key, "srsk_not-the-private-key", cwd=tmp_path)
    assert list(tmp_path.iterdir()) == []  # the copy loop wrote no copy
    assert result.returncode != 0
    if language == "curl":
        # As far as curl goes: the status and the API's error object.
        assert '"E1010"' in result.stdout + result.stderr and "401" in result.stdout + result.stderr
    else:
        assert result.stderr.strip().splitlines()[-1] == "401 E1010: Authentication failed"
        assert "Traceback" not in result.stderr and result.stdout == ""


def test_no_example_filters_on_a_placeholder(client: FlaskClient) -> None:
    """The examples ask for what the token sees; ORGCODES and dates appear only in the comments saying how to narrow it."""
    page = client.get("/docs").get_data(as_text=True)
    for anchor in ("whoami", "listUnits", "listEnrolments", COPY_ANCHOR):
        for language, _label, _template in LANGUAGES:
            code = _example(page, anchor, language)
            statements = [line for line in code.splitlines() if not line.lstrip().startswith(("#", "//"))]
            assert not [line for line in statements if re.search(r"\b(ORGCODES|SDATE|EDATE|ORG1)\b|2017", line)], (anchor, language)
            if anchor == "listEnrolments":
                assert "/api/v1/units" in code  # where the codes ORGCODES takes come from


def test_the_snapshot_and_changes_examples_are_the_copy_loop(client: FlaskClient) -> None:
    """No example sends a placeholder changes token: the two endpoints point to the loop, which takes its own."""
    page = client.get("/docs").get_data(as_text=True)
    for anchor in ("enrolmentSnapshot", "enrolmentChanges"):
        section = page[page.index(f'<section class="endpoint" id="{anchor}"') :]
        section = section[: section.index("</section>")]
        assert "<code" not in section.split("<h3>Examples</h3>")[1].replace("<code>", "")
        assert f'href="#{COPY_ANCHOR}"' in section
    for language, _label, _template in LANGUAGES:
        code = _example(page, COPY_ANCHOR, language)
        assert "/api/v1/enrolments/snapshot" in code and "/api/v1/enrolments/changes" in code
        assert "southrock-copy.json" in code


def test_docs_and_document_are_public_and_not_counted(served: Served) -> None:
    base_url = served.base_url
    for path in ("/docs", "/openapi.json", "/static/docs.js", "/static/docs.css"):
        response = requests.get(base_url + path, timeout=10)
        assert response.status_code == 200
        assert "X-Rate-Limit-Limit" not in response.headers
    assert "script-src 'self'" in requests.get(base_url + "/docs", timeout=10).headers[
        "Content-Security-Policy"
    ]


def test_the_served_document_reads_with_openapi_spec_validators_reader(
    served: Served, tmp_path: Path
) -> None:
    """gunicorn's bytes, as the validator's CLI reads a file: through a YAML loader, which refuses
    raw U+FFFF (the patterns' top character) and other characters JSON allows unescaped."""
    base_url = served.base_url
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


@contextmanager
def _fake_site(handler: type[BaseHTTPRequestHandler], client: FlaskClient) -> Iterator[str]:
    """Serve a fake API with handler; yield the /docs page as rendered for it (its examples call it)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield client.get("/docs", base_url=f"http://127.0.0.1:{server.server_address[1]}").get_data(as_text=True)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("language", ["python", "node"])
def test_the_examples_start_again_when_the_data_changes_between_pages(client: FlaskClient, language: str) -> None:
    _ChangingSite.served = 0
    with _fake_site(_ChangingSite, client) as page:
        result = _run(language, _example(page, "listEnrolments", language), "srpk_x", "srsk_x")
    assert result.returncode == 0, result.stderr
    # Not A, A, B, C (the first walk's page 1, then the changed data's page 2): the walk started again.
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["A", "X", "B", "C"]


def test_the_curl_example_stops_when_the_data_changes_between_pages(client: FlaskClient) -> None:
    # It has printed the first page already: it says so and fails rather than print a mix.
    _ChangingSite.served = 0
    with _fake_site(_ChangingSite, client) as page:
        result = _run("curl", _example(page, "listEnrolments", "curl"), "srpk_x", "srsk_x")
    assert result.returncode == 1
    assert "run this again" in result.stderr
    assert [row["LR_ID"] for row in json.loads(result.stdout)] == ["A", "B"]


class _ThrottledSite(BaseHTTPRequestHandler):
    """One page of enrolments, after a first answer of 429 E1030 that asks for a one-second wait."""

    served = 0

    def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
        type(self).served += 1
        if type(self).served == 1:
            error = {"message": "API call exceeded rate limit due to too many requests", "code": "E1030"}
            body = json.dumps({"error": error}).encode()
            self.send_response(429)
            self.send_header("Retry-After", "1")
        else:
            body = json.dumps([{"LR_ID": "A", "CRS_CODE": "C", "SCH_AEDATE": "2024-01-01", "SCH_SCORE": "90.00"}]).encode()
            self.send_response(200)
            self.send_header("X-Data-Version", "v1")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.mark.parametrize("language", ["curl", "python", "node"])
def test_the_examples_wait_out_a_429_as_retry_after_says(client: FlaskClient, language: str) -> None:
    _ThrottledSite.served = 0
    with _fake_site(_ThrottledSite, client) as page:
        began = time.monotonic()
        result = _run(language, _example(page, "listEnrolments", language), "srpk_x", "srsk_x")
        waited = time.monotonic() - began
    assert result.returncode == 0, result.stderr
    assert _ThrottledSite.served == 2 and waited >= 1
    if language == "curl":
        assert [row["LR_ID"] for row in json.loads(result.stdout)] == ["A"]
    else:
        assert result.stdout.split() == ["A", "C", "2024-01-01", "90.00"]
        # The wait is explained, with the API's code.
        assert "429 E1030: API call exceeded rate limit due to too many requests: waiting 1 s" in result.stderr


# Keeping a copy: the loop of the "Keeping a copy" section, first run a snapshot, then the changes.


@pytest.fixture(scope="module")
def changing(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A demo site of its own, whose data the copy tests change by imports; its bucket is not what they test."""
    with _demo_site(backend, tmp_path_factory.mktemp("copy"), {"SOUTHROCK_RATE_LIMIT": "1000 per minute"}) as site:
        yield site


def _listing(site: Served, token: str) -> dict[str, dict[str, Any]]:
    """The listing the token sees, every page of it, as a copy holds it: by SCH_ID, without RNUM."""
    issued = site.tokens[token]
    rows: list[dict[str, Any]] = []
    url: str | None = f"{site.base_url}/api/v1/enrolments?limit=500"
    while url:
        response = requests.get(url, auth=(issued.public_key, issued.private_key), timeout=10)
        assert response.status_code == 200
        rows += response.json()
        url = response.links.get("next", {}).get("url")
    return feeds.copy_of(rows)


def _import_changes(site: Served, directory: Path, round_: int) -> None:
    """An import that corrects scores, takes completions back, deletes enrolments and moves learners:
    each round other rows of the demo data, so that every one changes something."""
    with (site.demo / "enrolments.csv").open(encoding="utf-8", newline="") as file:
        header, *rows = list(csv.reader(file))
    completed = [row for row in rows if row[3] == "COMPLETED"][round_ * 30 : (round_ + 1) * 30]
    for row in completed[:10]:
        row[5] = f"{round_ + 1}.50"  # a corrected score
    for row in completed[10:20]:
        row[3] = "IN_PROGRESS"  # no longer completed: a DELETE for every token that saw it
    deleted = [row[0] for row in completed[20:]]
    with (site.demo / "learners.csv").open(encoding="utf-8", newline="") as file:
        learners_header, *learners = list(csv.reader(file))
    units = sorted({learner[4] for learner in learners})
    moved = learners[round_ * 3 : (round_ + 1) * 3]
    for learner in moved:
        learner[4] = units[(units.index(learner[4]) + 1) % len(units)]
    delta = directory / f"delta-{round_}"
    delta.mkdir()
    for name, head, body in (
        ("enrolments.csv", header, completed[:20]),
        ("deletions.csv", ["SCH_ID"], [[sch_id] for sch_id in deleted]),
        ("learners.csv", learners_header, moved),
    ):
        with (delta / name).open("w", encoding="utf-8", newline="") as file:
            csv.writer(file).writerows([head, *body])
    app = servers.migrated_app(site.database_url)
    try:
        with get_database(app).session_factory() as session:
            import_directory(session, delta)
            session.commit()
    finally:
        servers.dispose(app)


ROUNDS = iter(range(100))  # each test's import changes rows no other test's changed


@pytest.mark.parametrize("token", ["business_unit", "work_unit"])
@pytest.mark.parametrize("language", ["curl", "python", "node"])
def test_the_copy_loop_keeps_a_copy_equal_to_the_listing(
    changing: Served, language: str, token: str, tmp_path: Path
) -> None:
    """As copied from the page: the first run's copy is the listing; after an import, the next run's is the new listing."""
    issued = changing.tokens[token]
    page = requests.get(changing.base_url + "/docs", timeout=10).text
    code = _example(page, COPY_ANCHOR, language)
    work = tmp_path / "copy"
    work.mkdir()
    copy_file = work / "southrock-copy.json"

    def run() -> dict[str, Any]:
        result = _run(language, code, issued.public_key, issued.private_key, cwd=work)
        assert result.returncode == 0, result.stderr
        copy: dict[str, Any] = json.loads(copy_file.read_text(encoding="utf-8"))
        assert result.stdout.strip() == f"{len(copy['rows'])} rows in southrock-copy.json"
        assert [path.name for path in work.iterdir()] == ["southrock-copy.json"]  # nothing left behind
        return copy

    first = run()  # the snapshot
    before = _listing(changing, token)
    assert before and first["rows"] == before
    _import_changes(changing, tmp_path, next(ROUNDS))
    after = _listing(changing, token)
    assert after != before  # the import changed what the token sees
    second = run()  # the changes since the snapshot
    assert second["rows"] == after and second["token"] != first["token"]
    assert run() == second  # caught up: nothing changed, the same token to poll with


class _CopySite(BaseHTTPRequestHandler):
    """A snapshot of one row with the token "fresh"; any older token is 410 E3020.

    `cut` drops the closing record; `throttled` answers the first request 429 E1030, Retry-After 1.
    """

    cut = False
    throttled = False
    served = 0
    ROW = {"SCH_ID": "S1", "LR_ID": "A", "LR_SNAME": "García", "SCH_SCORE": "90.00", "RNUM": "1"}

    def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
        path = urlsplit(self.path).path
        type(self).served += 1
        if self.throttled and self.served == 1:
            error = {"message": "API call exceeded rate limit due to too many requests", "code": "E1030"}
            body = json.dumps({"error": error}).encode()
            self.send_response(429)
            self.send_header("Content-Type", "application/json")
            self.send_header("Retry-After", "1")
        elif path.endswith("/snapshot"):
            lines = [self.ROW] if self.cut else [self.ROW, {"END": True, "ROWS": 1}]
            # UTF-8 as the API writes it (spec §10), under a type that names no charset.
            body = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("X-Changes-Token", "fresh")
        else:
            body = json.dumps({"error": {"message": CHANGES_EXPIRED.description, "code": CHANGES_EXPIRED.code}}).encode()
            self.send_response(410)
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.mark.parametrize("language", ["curl", "python", "node"])
def test_the_copy_loop_takes_a_new_snapshot_on_e3020(client: FlaskClient, language: str, tmp_path: Path) -> None:
    copy_file = tmp_path / "southrock-copy.json"
    copy_file.write_text(json.dumps({"token": "old", "rows": {"S9": {"SCH_ID": "S9"}}}), encoding="utf-8")
    _CopySite.cut, _CopySite.throttled, _CopySite.served = False, False, 0
    with _fake_site(_CopySite, client) as page:
        result = _run(language, _example(page, COPY_ANCHOR, language), "srpk_x", "srsk_x", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "410" in result.stderr and "E3020" in result.stderr and "taking a new snapshot" in result.stderr
    row = {key: value for key, value in _CopySite.ROW.items() if key != "RNUM"}
    assert json.loads(copy_file.read_text(encoding="utf-8")) == {"token": "fresh", "rows": {"S1": row}}


@pytest.mark.parametrize("language", ["curl", "python", "node"])
def test_the_copy_loop_stops_on_a_snapshot_without_its_closing_record(
    client: FlaskClient, language: str, tmp_path: Path
) -> None:
    _CopySite.cut, _CopySite.throttled, _CopySite.served = True, False, 0
    with _fake_site(_CopySite, client) as page:
        result = _run(language, _example(page, COPY_ANCHOR, language), "srpk_x", "srsk_x", cwd=tmp_path)
    assert result.returncode != 0
    assert "The snapshot was cut short: run this again." in result.stderr
    assert list(tmp_path.iterdir()) == []  # no copy to continue from


@pytest.mark.parametrize("language", ["curl", "python", "node"])
def test_the_copy_loop_waits_out_a_429_as_retry_after_says(client: FlaskClient, language: str, tmp_path: Path) -> None:
    _CopySite.cut, _CopySite.throttled, _CopySite.served = False, True, 0
    with _fake_site(_CopySite, client) as page:
        began = time.monotonic()
        result = _run(language, _example(page, COPY_ANCHOR, language), "srpk_x", "srsk_x", cwd=tmp_path)
        waited = time.monotonic() - began
    assert result.returncode == 0, result.stderr
    assert _CopySite.served == 2 and waited >= 1
    assert json.loads((tmp_path / "southrock-copy.json").read_text(encoding="utf-8"))["token"] == "fresh"
    if language != "curl":
        assert "429 E1030: API call exceeded rate limit due to too many requests: waiting 1 s" in result.stderr
