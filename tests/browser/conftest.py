"""The console in a real browser (headless Chromium driven by Playwright) against the local runtime, started
in-process with its token, two tenants, contract-checked Stripe and Twenty stand-ins, and a target that is down
(so that runs fail and can be replayed).

One browser for the whole session; each test gets a fresh page (its own sessionStorage). When no Chromium can
be found (make test installs Debian's `chromium` where apt is available) every test here is skipped with the
reason, never silently.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from billflow_local.receiver import SignedWebhookReceiver
from billflow_local.runtime import LocalRuntime
from tests.fakes.stripe_server import FakeStripe
from tests.fakes.twenty_server import FakeTwenty, load_sample_workspace

ROOT = Path(__file__).resolve().parents[2]
# Every run saves each page's screenshot in build/screenshots (ignored by git, so a run leaves the tree clean);
# UPDATE_SCREENSHOTS=1 saves them over the README's pictures in docs/screenshots instead.
SCREENSHOTS = ROOT / ("docs" if os.environ.get("UPDATE_SCREENSHOTS") else "build") / "screenshots"
TOKEN = "browser-test-token-7f3a9c"  # the runtime's console token for this session
TENANT, OTHER_TENANT = "acme", "globex"
SIGNING_SECRET = "browser-twenty-signing-secret"
HOOK_SECRET = "browserFinanceHookSecret42"
HOSTILE = "<img src=x onerror=alert(1)>"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def _chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _closed_port() -> int:
    with socket.socket() as sock:  # a port nothing listens on: the "down" target
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ConsoleStack:
    runtime: LocalRuntime
    stripe: FakeStripe
    twenty: FakeTwenty
    receiver: SignedWebhookReceiver
    dialogs: list[str] = field(default_factory=list)

    @property
    def console_url(self) -> str:
        return self.runtime.console_url

    def call(self, method: str, path: str, body: Any = None,
             token: str | None = TOKEN) -> tuple[int, dict[str, str], Any]:
        """An admin API call as a script makes it: (status, headers with lower-case names, JSON answer)."""
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.runtime.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                raw = resp.read()
                is_json = resp.headers.get_content_type() == "application/json"
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, json.loads(raw) if is_json else raw
        except urllib.error.HTTPError as err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, json.loads(err.read() or b"null")


@pytest.fixture(scope="module")  # a runtime holds process-wide state (moto, environment): gone after its module
def console_stack() -> Iterator[ConsoleStack]:
    stripe = FakeStripe().start()
    twenty = FakeTwenty(custom_fields={"opportunity": {"invoiceId": {"type": "string"}}}).start()
    twenty.seed(load_sample_workspace())
    receiver = SignedWebhookReceiver(HOOK_SECRET).start()
    tenant = {
        "sources": {"twenty": {"signing_secret": SIGNING_SECRET}},
        "connections": {
            "twenty": twenty.connection_settings(),
            "stripe-main": {"type": "stripe", "base_url": stripe.url, "api_key": stripe.api_key},
            "stripe-down": {"type": "stripe", "base_url": f"http://127.0.0.1:{_closed_port()}",
                            "api_key": "sk_test_down"},
            "finance-webhook": {"type": "webhook", "url": f"{receiver.url}/hooks/finance", "secret": HOOK_SECRET},
        },
        "settings": {"daily_limits": {"invoice": 500, "webhook": 500}},
    }
    other = {"sources": {"twenty": {"signing_secret": "globex-secret"}},
             "connections": {"stripe-main": {"type": "stripe", "base_url": stripe.url, "api_key": stripe.api_key}}}
    runtime = LocalRuntime(ROOT, port=0, rules=ROOT / "examples" / "rules",
                           connections={"tenants": {TENANT: tenant, OTHER_TENANT: other}},
                           tenant=TENANT, echo=None, fast_retries=True, console_token=TOKEN)
    runtime.start()
    try:
        yield ConsoleStack(runtime, stripe, twenty, receiver)
    finally:
        runtime.stop()
        for server in (stripe, twenty, receiver):
            server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = _chromium()
    if executable is None:
        pytest.skip("no Chromium here (make test installs Debian's chromium with apt where it can): "
                    "browser tests skipped")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install -e '.[dev]'): browser tests skipped")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def console_allows() -> list[str]:
    """What a test expects Chromium to log as an error besides the answers every page expects (a test whose
    form is refused with 400 on purpose adds "400")."""
    return []


@pytest.fixture
def page(browser: Any, console_stack: ConsoleStack, console_allows: list[str]) -> Iterator[Any]:
    context = browser.new_context(viewport=DESKTOP)
    opened = context.new_page()
    opened.set_default_timeout(10_000)
    opened.on("dialog", lambda d: (console_stack.dialogs.append(d.message), d.dismiss()))
    errors: list[str] = []
    opened.on("pageerror", lambda e: errors.append(str(e)))
    # answers the console expects (401 before a token; 404 of a missing rule) are logged by Chromium too
    expected = ("401", "403", "404")
    opened.on("console", lambda m: errors.append(m.text)
              if m.type == "error" and not any(code in m.text for code in (*expected, *console_allows)) else None)
    opened.goto(console_stack.console_url)
    opened.wait_for_selector("main h1")
    try:
        yield opened
    finally:
        context.close()
    assert not errors, f"the page logged errors: {errors}"
    assert not console_stack.dialogs, f"a dialog opened (hostile text ran?): {console_stack.dialogs}"


def shoot(page: Any, name: str, width: int | None = None) -> Path:
    """A screenshot for docs/screenshots; at phone width the page must not scroll sideways."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    if width is not None:
        page.set_viewport_size({"width": width, "height": PHONE["height"] if width <= 500 else DESKTOP["height"]})
        page.wait_for_timeout(50)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        wide = page.evaluate("w => [...document.querySelectorAll('body *')]"
                             ".filter(e => e.getBoundingClientRect().right > w"
                             " && !e.parentElement.closest('.table-wrap, .sm-wrap, .chart-wrap, pre, nav'))"
                             ".slice(0, 5).map(e => e.tagName + '.' + e.className + ' ' + e.textContent.slice(0, 40))",
                             width)
        assert overflow <= 0, f"{name}: the page is {overflow}px wider than a {width}px screen: {wide}"
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
