"""The real app in a real headless Chromium: ask, follow a citation to its source, no XSS; the
API docs page with "Try it out"; the admin page from sign-in to a document uploaded, answered,
deleted and no longer answered."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qa.service import QAService
from qa.web import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
JWC = "How many members does the Joint Water Commission have?"

pytestmark = pytest.mark.browser


@contextlib.contextmanager
def serving(service: QAService) -> Iterator[str]:
    """The app over ``service`` on a free 127.0.0.1 port, in a thread; yields its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, create_app(service.settings, service), threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="browser-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server_url(tiny_service: QAService) -> Iterator[str]:
    with serving(tiny_service) as url:
        yield url


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Any]:
    if not all(os.access(p, os.X_OK) for p in (CHROMIUM, CHROMEDRIVER)):
        pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} (`make browser` installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", "--window-size=1200,1400",
                f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    browser.set_page_load_timeout(60)
    browser.implicitly_wait(0)
    try:
        yield browser
    finally:
        browser.quit()


def text_shown(selector: str, text: str) -> Any:
    """A wait condition: the page's ``selector`` element shows ``text``. Read in one script, so
    that no element handle can outlive a navigation; a read that races one (Chromium answers
    "Node with given id does not belong to the document" or loses the script's context) is
    "not yet", and the wait's timeout still bounds it."""
    from selenium.common.exceptions import WebDriverException

    def shown(driver: Any) -> bool:
        try:
            return text in str(driver.execute_script(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
                selector))
        except WebDriverException:
            return False

    return shown


def ask(driver: Any, base: str, question: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(base + "/")
    field = driver.find_element(By.ID, "q")
    field.clear()
    field.send_keys(question)
    driver.find_element(By.CSS_SELECTOR, "form.ask-form button[type=submit]").click()
    # The form is GET: the answer page is the one whose URL carries the question. (Waiting for
    # the old page's element to go stale races with Chromium's inspector.)
    WebDriverWait(driver, 60).until(ec.url_contains("q="))
    WebDriverWait(driver, 60).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "section.answer")))


def test_ask_follow_citation_and_source(driver: Any, server_url: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    ask(driver, server_url, JWC)
    assert "q=" in driver.current_url
    answer_text = driver.find_element(By.CSS_SELECTOR, "section.answer .answer-text").text
    assert "Joint Water Commission" in answer_text
    cards = driver.find_elements(By.CSS_SELECTOR, "li.card")
    assert len(cards) == 5
    assert driver.find_elements(By.CSS_SELECTOR, "li.card mark")

    shot = tmp_path / "answer.png"
    assert driver.save_screenshot(str(shot))
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and shot.stat().st_size > 1000

    cite = driver.find_element(By.CSS_SELECTOR, "section.answer a.cite")
    assert cite.text == "[1]"
    target = cite.get_attribute("href").split("#", 1)[1]
    cite.click()
    WebDriverWait(driver, 10).until(lambda d: d.current_url.endswith("#" + target))
    card = driver.find_element(By.ID, target)
    assert "Lake Baikal" in card.find_element(By.TAG_NAME, "h3").text
    targeted = driver.execute_script("return document.querySelector(':target').id")
    assert targeted == target

    card.find_element(By.CSS_SELECTOR, ".source a").click()
    WebDriverWait(driver, 30).until(ec.url_contains("/documents/lake-baikal-accord"))
    mark = WebDriverWait(driver, 30).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "mark#highlight")))
    assert mark.text and mark.text in answer_text
    chunk = driver.execute_script("return document.querySelector(':target').id")
    assert chunk.startswith("chunk-lake-baikal-accord-c")


def test_script_in_the_question_is_shown_literally(driver: Any, server_url: str) -> None:
    from selenium.webdriver.common.by import By

    attack = "<script>window.__xss=1</script>"
    ask(driver, server_url, attack)
    assert driver.execute_script("return window.__xss === undefined") is True
    assert driver.find_element(By.ID, "q").get_attribute("value") == attack
    assert attack in driver.find_element(By.TAG_NAME, "title").get_attribute("textContent")
    assert driver.execute_script("return document.scripts.length") == 0


@pytest.fixture(scope="module")
def hostile_url(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[str]:
    """A server over a corpus holding a document whose text contains a script tag."""
    import shutil

    from conftest import TINY, make_settings

    root = tmp_path_factory.mktemp("hostile")
    shutil.copytree(TINY, root / "corpus")
    (root / "corpus" / "hostile-note.txt").write_text(
        "A note on the Tuul river.\n\nThe Tuul river report says <script>window.__doc_xss=1"
        "</script> and <img src=x onerror=\"window.__img_xss=1\"> in its appendix.\n")
    settings = make_settings(root / "corpus", root / "index", encoder="torch")
    service = QAService(settings, embedder=embedder)
    service.index()
    with serving(service) as url:
        yield url


def test_script_inside_a_document_is_shown_never_run(driver: Any, hostile_url: str) -> None:
    from selenium.webdriver.common.by import By

    ask(driver, hostile_url, "What does the Tuul river report say in its appendix?")
    page = driver.find_element(By.TAG_NAME, "body").text
    assert "<script>window.__doc_xss=1</script>" in page
    driver.get(hostile_url + "/documents/hostile-note")
    assert "<script>window.__doc_xss=1</script>" in driver.find_element(By.TAG_NAME, "body").text
    for name in ("__doc_xss", "__img_xss"):
        assert driver.execute_script(f"return window.{name} === undefined") is True
    assert driver.execute_script("return document.scripts.length") == 0
    assert driver.execute_script("return document.images.length") == 0


# -- the API docs page ---------------------------------------------------------------------------
def test_api_docs_render_and_try_it_out_answers(driver: Any, server_url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(server_url + "/")
    driver.find_element(By.LINK_TEXT, "API docs").click()
    WebDriverWait(driver, 30).until(ec.url_contains("/api/docs"))
    block = WebDriverWait(driver, 60).until(ec.presence_of_element_located(
        (By.CSS_SELECTOR, "#operations-default-post_api_v1_answer, [id$='post_api_v1_answer']")))
    assert "CICA QA API" in driver.find_element(By.CSS_SELECTOR, ".info .title").text
    block.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    WebDriverWait(driver, 30).until(lambda d: block.find_elements(By.CSS_SELECTOR, ".try-out"))
    block.find_element(By.CSS_SELECTOR, ".try-out button").click()
    body = WebDriverWait(driver, 30).until(lambda d: block.find_element(
        By.CSS_SELECTOR, "textarea.body-param__text"))
    body.clear()
    body.send_keys(json.dumps({"question": JWC}))
    block.find_element(By.CSS_SELECTOR, "button.execute").click()
    status = WebDriverWait(driver, 60).until(lambda d: block.find_element(
        By.CSS_SELECTOR, ".live-responses-table tbody .response-col_status"))
    assert status.text.strip().startswith("200")
    shown = block.find_element(By.CSS_SELECTOR, ".live-responses-table .microlight").text
    assert "Joint Water Commission" in shown and "lake-baikal-accord" in shown
    # Nothing the page needed was refused by its Content-Security-Policy.
    refused = [e for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
    assert refused == []


# -- the admin page --------------------------------------------------------------------------------
ADMIN_TOKEN = "browser-admin-token"
KYZYL = "How many megawatts does the Kyzylkum solar array produce?"


@pytest.fixture
def admin_url(fresh_service: QAService) -> Iterator[str]:
    settings = fresh_service.settings.replace(admin_token=ADMIN_TOKEN, reload_interval=0.05)
    fresh = QAService(settings, embedder=fresh_service.embedder)
    with serving(fresh) as url:
        yield url


def _rebuild_until_served(driver: Any) -> str:
    """Start a rebuild on the admin page and follow its page until the new version is served."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.ID, "rebuild").click()
    WebDriverWait(driver, 30).until(ec.url_contains("/admin/jobs/"))

    def done(d: Any) -> bool:
        try:
            return bool(d.find_element(By.ID, "job").get_attribute("data-done") == "true")
        except WebDriverException:  # reloading itself: no such element, stale, or lost node
            return False

    WebDriverWait(driver, 300, poll_frequency=0.2).until(done)
    assert driver.find_element(By.ID, "job").get_attribute("data-state") == "succeeded"
    result = driver.find_element(By.ID, "job-result").text
    assert "is now served" in result
    assert driver.find_element(By.ID, "job-stage").text
    return str(result.split()[1])


def test_admin_sign_in_upload_rebuild_ask_delete_rebuild(driver: Any, admin_url: str,
                                                         tmp_path: Path) -> None:
    from pdfmaker import write_pdf
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    ask(driver, admin_url, KYZYL)
    # The fact, not the bare number: the section also shows the served index's id, a timestamp
    # that can hold "412" (20261203T041249...).
    assert "412 megawatts" not in driver.find_element(By.CSS_SELECTOR, "section.answer").text

    driver.get(admin_url + "/admin")
    driver.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.ID, "sign-out")))
    cookie = driver.get_cookie("qa_admin")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert driver.execute_script("return document.cookie") == ""  # HttpOnly: not readable

    pdf = write_pdf(tmp_path / "kyzylkum-solar.pdf", [[
        "The Kyzylkum Solar Array",
        "The Kyzylkum solar array produces 412 megawatts of electricity.",
        "It was completed in 2031 near the town of Uchkuduk.",
    ]])
    driver.find_element(By.ID, "file-1").send_keys(str(pdf))
    driver.find_element(By.ID, "title-1").send_keys("The Kyzylkum Solar Array")
    driver.find_element(By.ID, "authors-1").send_keys("D. Rakhimova, E. Sato")
    driver.find_element(By.ID, "date-1").send_keys("2031-09")
    driver.find_element(By.ID, "upload").click()
    WebDriverWait(driver, 30).until(text_shown("main", "Uploaded kyzylkum-solar.pdf"))

    version = _rebuild_until_served(driver)
    driver.get(admin_url + "/admin")
    assert version in driver.find_element(By.ID, "served").text
    rows = driver.find_elements(By.CSS_SELECTOR, "table.versions tbody tr")
    assert len(rows) >= 2 and "served" in rows[0].text and version in rows[0].text
    titles = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "table.documents td a")]
    assert "The Kyzylkum Solar Array" in titles
    shot = tmp_path / "admin.png"  # the README's picture (docs/admin.png) is one of these
    driver.set_window_size(1200, 1900)
    assert driver.save_screenshot(str(shot))
    driver.set_window_size(1200, 1400)
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    ask(driver, admin_url, KYZYL)
    answer = driver.find_element(By.CSS_SELECTOR, "section.answer .answer-text").text
    assert "412 megawatts" in answer
    first_card = driver.find_element(By.CSS_SELECTOR, "li.card h3").text
    assert "The Kyzylkum Solar Array" in first_card

    driver.get(admin_url + "/admin")
    driver.find_element(By.CSS_SELECTOR,
                        "button.danger[aria-label='Delete The Kyzylkum Solar Array']").click()
    WebDriverWait(driver, 30).until(text_shown("main", "Removed kyzylkum-solar.pdf"))
    _rebuild_until_served(driver)

    ask(driver, admin_url, KYZYL)
    section = driver.find_element(By.CSS_SELECTOR, "section.answer").text
    assert "412 megawatts" not in section
    assert "Kyzylkum" not in driver.find_element(By.CSS_SELECTOR, "section.passages").text

    driver.get(admin_url + "/admin")
    driver.find_element(By.ID, "sign-out").click()
    WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.ID, "token")))
