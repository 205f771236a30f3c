"""The chat page in a real browser: Playwright drives Debian's Chromium (`/usr/bin/chromium`, never a
downloaded browser) against two app replicas on a real `prefect server`, an agent workflow on the
loopback OpenAI server.

Tokens appear progressively (many paints over time), a tool approval clicked in the page resumes
the run, a reload mid-run and a dropped connection resume the stream without duplicates, two
replicas serve one run, and closing the tab leaves the run running to completion.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from prefect_beluga.testing import OpenAIServer
from prefect_beluga.testing.app_server import AppServer
from prefect_beluga.testing.helpers import eventually
from prefect_beluga.testing.prefect_server import PrefectServer

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HERE = Path(__file__).parent
TOKEN = f"page-token-{uuid.uuid4().hex}"
KEY = f"sk-page-{uuid.uuid4().hex}"
WORDS = ("Your refund for order A1 is approved and forty euros will reach your card within three "
         "to five working days; thank you for your patience and have a good day.")

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium; .ci/run does it)",
                allow_module_level=True)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def llm() -> Iterator[OpenAIServer]:
    with OpenAIServer(api_key=KEY, chunk_delay=0.08) as server:
        yield server


@pytest.fixture(scope="module")
def replicas(llm: OpenAIServer) -> Iterator[tuple[AppServer, AppServer]]:
    with PrefectServer() as api:
        env = dict(api.env, BELUGA_TEST_OPENAI_URL=llm.base_url, BELUGA_TEST_OPENAI_KEY=KEY)
        options = dict(env=env, token=TOKEN, pythonpath=[str(HERE)])
        specs = ["server_fixtures:support", "server_fixtures:echo"]
        with AppServer(specs, **options) as a, AppServer(specs, **options) as b:
            yield a, b


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=shutil.which("chromium") or CHROMIUM, args=FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


def signed_in(browser, app: AppServer, path: str = "/"):
    """A fresh page on `app`, signed in through the page's own form (the cookie, not the token)."""
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    page = context.new_page()
    reply = page.goto(app.url + "/")
    assert reply.status == 401  # the sign-in form
    page.fill("#token", TOKEN)
    page.click("#sign-in")
    page.wait_for_selector("#workflow option[value=support]", state="attached")
    if path != "/":
        page.goto(app.url + path)
    return page


def script(llm: OpenAIServer, *, approval: bool = True) -> None:
    replies = [{"tool_calls": [{"name": "lookup_order", "arguments": {"order_id": "A1"}}]}]
    if approval:
        replies.append({"tool_calls": [{"name": "refund", "arguments": {"order_id": "A1", "amount": 40}}]})
    llm.reply_with(*replies, WORDS)


def answer_text(page) -> str:
    texts = page.locator(".msg.assistant .text").all_inner_texts()
    return "".join(texts)


def ask(page, question: str) -> str:
    page.select_option("#workflow", "support")
    page.fill("#question", question)
    page.click("#send")
    page.wait_for_function("window.belugaChat.runId !== null")
    return page.evaluate("window.belugaChat.runId")


def wait_finished(page, timeout: float = 60) -> None:
    page.wait_for_function("window.belugaChat.finished", timeout=timeout * 1000)


def test_tokens_stream_into_the_page_and_an_approval_clicked_there_resumes_the_run(browser, replicas, llm):
    a, _ = replicas
    page = signed_in(browser, a)
    script(llm)
    run_id = ask(page, "Please refund order A1")
    approve = page.wait_for_selector(".approval button.approve", timeout=60_000)
    assert "refund" in page.inner_text(".approval") and '"order_id": "A1"' in page.inner_text(".approval")
    assert page.inner_text("#status") == "waiting for approval"
    approve.click()
    # sample what a person sees while the answer streams in
    samples: list[tuple[float, int]] = []

    def finished() -> bool:
        if page.evaluate("window.belugaChat.finished"):
            return True
        samples.append((time.monotonic(), len(answer_text(page))))
        return False

    eventually(finished, "the run to finish in the page", timeout=60, interval=0.03)
    assert answer_text(page) == WORDS
    partial = sorted({n for _, n in samples if 0 < n < len(WORDS)})
    assert len(partial) >= 3, f"the answer did not appear progressively: {samples}"
    paints = page.evaluate("window.belugaChat.paints")
    assert len(paints) >= 4 and paints[-1]["t"] - paints[0]["t"] > 300, paints
    tools = page.locator(".tool").all_inner_texts()
    assert "lookup_order" in tools[0] and "order A1: 2 items" in tools[0]
    assert "refund" in tools[1] and "refunded 40.00 EUR on order A1" in tools[1]
    assert page.inner_text(".approval .verdict") == "Approved"
    assert page.inner_text("#status") == "completed"
    assert page.get_attribute("#prefect-link", "href").endswith(f"/runs/flow-run/{run_id}")
    assert TOKEN not in page.content()
    shots = os.environ.get("BELUGA_SCREENSHOT_DIR")
    if shots:
        page.screenshot(path=str(Path(shots) / "chat-page.png"))
    page.context.close()


def test_a_reload_mid_run_and_a_dropped_connection_resume_without_duplicates(browser, replicas, llm):
    a, _ = replicas
    page = signed_in(browser, a)
    script(llm, approval=False)
    ask(page, "Where is order A1?")
    page.wait_for_function("document.querySelectorAll('.msg.assistant .text').length > 0 && "
                           "document.querySelector('.msg.assistant .text').textContent.length > 10")
    assert not page.evaluate("window.belugaChat.finished")
    page.reload()  # the page comes back on #run=<id> and replays the run's events into the fresh page
    wait_finished(page)
    assert answer_text(page) == WORDS
    assert page.locator(".tool").count() == 1
    ids = page.evaluate("window.belugaChat.eventIds")
    assert len(ids) == len(set(ids)) and ids[0] == "0"

    # a dropped connection (network, proxy): the page reconnects with Last-Event-ID
    script(llm, approval=False)
    ask(page, "Where is order A1, again?")
    page.wait_for_function("document.querySelector('.msg.assistant .text') && "
                           "document.querySelector('.msg.assistant .text').textContent.length > 10")
    page.evaluate("window.belugaChat.dropConnection()")
    wait_finished(page)
    assert answer_text(page) == WORDS
    assert page.evaluate("window.belugaChat.connections") >= 2
    ids = page.evaluate("window.belugaChat.eventIds")
    assert len(ids) == len(set(ids))
    assert [int(i.split("~")[0]) for i in ids] == list(range(len(ids)))  # nothing missed either
    page.context.close()


def test_two_replicas_serve_one_run_and_closing_the_tab_leaves_it_running(browser, replicas, llm):
    a, b = replicas
    page_a = signed_in(browser, a)
    script(llm)
    run_id = ask(page_a, "Please refund order A1")
    page_a.wait_for_selector(".approval button.approve", timeout=60_000)
    # the same run on the other replica, in another tab; the first tab closes
    page_b = signed_in(browser, b, f"/#run={run_id}")
    page_b.wait_for_selector(".approval button.approve", timeout=60_000)
    page_a.context.close()
    page_b.click(".approval button.approve")
    wait_finished(page_b)
    assert answer_text(page_b) == WORDS
    assert httpx.get(f"{a.url}/runs/{run_id}", headers=a.headers).json()["status"] == "COMPLETED"
    # closing a tab mid-run cancels nothing: the run completes on its own
    page_c = signed_in(browser, a)
    script(llm, approval=False)
    other = ask(page_c, "Where is order A1?")
    page_c.wait_for_selector(".tool")
    page_c.context.close()

    def completed() -> bool:
        return httpx.get(f"{b.url}/runs/{other}", headers=b.headers).json()["status"] == "COMPLETED"

    eventually(completed, "the run to go on after its tab closed", timeout=60, interval=0.3)
    page_b.context.close()
