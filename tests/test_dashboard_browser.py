"""The dashboard in a real headless Chromium (Debian's package), driven by Playwright.

Screenshots land in test-artifacts/dashboard/ for a person to look at.
"""

import os
import shutil
import subprocess
import threading
import time

import pytest

import burla
from burla import remote_parallel_map as rpm

from .conftest import ROOT, wait_until

ARTIFACTS = os.path.join(ROOT, "test-artifacts", "dashboard")
pytestmark = pytest.mark.timeout(900)  # may first install Debian's chromium


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None and os.geteuid() == 0:  # a fresh machine: install Debian's package
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=False, capture_output=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), timeout=900)
        path = shutil.which("chromium")
    assert path, "Debian's chromium package is needed: apt-get install chromium"
    return path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def shot(page, name: str) -> None:
    os.makedirs(ARTIFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTIFACTS, f"{name}.png"), full_page=True)


def chatty(x):
    import time

    print(f"input {x} says hello")
    print("<script>window.__xss = 1; alert('xss')</script><img src=x onerror=alert(2)>")
    time.sleep(0.15)
    if x == 5:
        raise ZeroDivisionError(f"input {x} failed on purpose")
    return x


def test_dashboard_end_to_end(browser, clusters):
    c = clusters.start(nodes=2, workers_per_node=1)
    burla.connect(c.record.head, c.record.token)
    dialogs: list[str] = []
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.type + ":" + d.message), d.accept()))

    # unauthenticated: 401 and no data
    anon = browser.new_context()
    resp = anon.request.get(c.record.http + "/v1/cluster")
    assert resp.status == 401 and "nodes" not in resp.text()
    resp = anon.new_page().goto(c.record.http + "/")
    assert resp.status == 401
    anon.close()

    # log in, see both nodes
    page.goto(c.record.http + "/login")
    page.fill("#token", c.record.token)
    page.click("#login")
    page.wait_for_selector("#nodes tbody tr >> nth=1")
    assert page.locator("#nodes tbody tr").count() == 2
    shot(page, "1-cluster")

    # a job started by the test: watch it reach 100 %
    results: list = []
    t = threading.Thread(target=lambda: results.append(rpm(chatty, range(12), raise_errors=False, spinner=False)))
    t.start()
    page.wait_for_selector("#jobs tbody tr[data-job] a")
    page.click("#jobs tbody tr[data-job] a")
    page.wait_for_selector("#job-view:not([hidden])")
    # a text selector, not wait_for_function: the page's Content-Security-Policy refuses eval
    page.wait_for_selector("#job-stats:text-matches('^12/12 done')", timeout=30000)
    t.join(30)
    assert len(results[0]) == 12 and isinstance(results[0][5], ZeroDivisionError)
    page.wait_for_selector("#job-state:text('done')")
    assert "1 failed" in page.text_content("#job-stats")
    bar = page.eval_on_selector("#job-bar", "e => parseFloat(e.style.width) + parseFloat(document.getElementById('job-bar-failed').style.width)")
    assert abs(bar - 100) < 0.01

    # an input's logs, with the XSS payload shown as text
    page.click("#inputs tbody tr[data-index='3'] button.logs")
    page.wait_for_selector("#log-lines div")
    text = page.inner_text("#log-lines")
    assert "input 3 says hello" in text and "<script>window.__xss = 1" in text
    page.fill("#log-search", "hello")
    assert page.locator("#log-lines div").count() == 1
    # the failed input's traceback
    page.click("details.err[data-index='5'] summary")
    assert "ZeroDivisionError: input 5 failed on purpose" in page.inner_text("details.err[data-index='5']")
    shot(page, "2-job")
    assert page.evaluate("window.__xss") is None and not any(d.startswith("alert") for d in dialogs)

    # cancel a running job from the page
    errors: list = []

    def long_job():
        try:
            rpm(time.sleep, [60] * 4, spinner=False)
        except burla.JobCanceled as e:
            errors.append(e)

    t = threading.Thread(target=long_job)
    t.start()
    page.click("#back")
    page.wait_for_selector("#jobs tbody tr[data-job] >> text=running")
    page.click("#jobs tbody tr:has-text('running') a")
    page.wait_for_selector("#cancel:not([hidden])")
    page.click("#cancel")
    page.wait_for_selector("#job-state:text('canceled')", timeout=10000)
    t.join(10)
    assert errors, "the client did not get JobCanceled"
    assert any(d.startswith("confirm") for d in dialogs)
    shot(page, "3-canceled")

    # both nodes are free again
    page.click("#back")
    wait_until(lambda: page.locator("#nodes .pill.idle").count() == 2, 10, "nodes to be idle")
    ctx.close()
