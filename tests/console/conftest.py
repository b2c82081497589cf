"""Fixtures for the console's tests: one real cluster and one console for the whole session
(a cluster takes seconds to start, the console a fraction of one; tests make their own people
so they do not step on each other), one Chromium per test module (Debian's /usr/bin/chromium,
driven by Playwright) and a fresh browser context per test (its own cookies).

Screenshots of every page go to a folder under pytest's temporary folder (and to
MINIPAY_CONSOLE_SCREENSHOTS too, when set, e.g. docs/console); the pages' server-side render
times are printed at the end of the run (tests/console/report.py)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect, sync_playwright

from certificate.ca import issue_client
from devtools.cluster import Cluster
from tests.conftest import TEST_ENV
from tests.console import report
from tests.console.support import Api, LiveConsole, console_settings
from tests.helpers import running_cluster

CHROMIUM = Path("/usr/bin/chromium")
# Playwright adds --headless, a fresh profile and its pipe; these keep Chromium quiet and
# offline (no update checks, no sync) and let it run as root in a container.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000  # generous: the machine may be busy with other tests
expect.set_options(timeout=TIMEOUT_MS)
REPO_ROOT = Path(__file__).resolve().parents[2]


# -- the system under test ------------------------------------------------------------------


@pytest.fixture(scope="session")
def console_certs(certs: Path) -> Path:
    issue_client(certs, "console")
    return certs


@pytest.fixture(scope="session")
def console_cluster(
    tmp_path_factory: pytest.TempPathFactory, console_certs: Path
) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("console-cluster")
    with running_cluster(folder, console_certs, TEST_ENV) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def console(console_cluster: Cluster, console_certs: Path) -> Iterator[LiveConsole]:
    server = LiveConsole(console_settings(console_cluster, console_certs)).start()
    yield server
    server.stop()
    for route, samples in server.state.render_times.samples().items():
        report.RENDER_TIMES.setdefault(route, []).extend(samples)


@pytest.fixture(scope="session")
def api(console_cluster: Cluster, console_certs: Path) -> Iterator[Api]:
    calls = Api(console_cluster, console_certs)
    yield calls
    calls.close()


# -- the browser ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test module. Not for the session: while Playwright's synchronous API
    runs, its event loop counts as running in this thread, and asyncio.run (which other test
    files sharing this xdist worker call) would be refused."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"no {CHROMIUM}: the console's browser tests drive Debian's chromium "
            "(apt-get install chromium; .ci/run installs it)"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


class Watched:
    """What a page said on its console and which dialogs it opened (an XSS would)."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.dialogs: list[str] = []

    def csp_violations(self) -> list[str]:
        return [m for m in self.messages if "Content Security Policy" in m]


@pytest.fixture
def watched() -> Watched:
    return Watched()


def _new_page(browser: Any, url: str, watched: Watched, **options: Any) -> Any:
    context = browser.new_context(base_url=url, viewport={"width": 1280, "height": 860}, **options)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.on("console", lambda message: watched.messages.append(message.text))

    def dialog(opened: Any) -> None:
        watched.dialogs.append(opened.message)
        opened.dismiss()

    page.on("dialog", dialog)
    return page


@pytest.fixture
def page(browser: Any, console: LiveConsole, watched: Watched) -> Iterator[Any]:
    """A fresh browser context on the session's console; checks no CSP violation happened."""
    opened = _new_page(browser, console.url, watched)
    yield opened
    opened.context.close()
    assert watched.csp_violations() == []
    assert watched.dialogs == []


@pytest.fixture
def new_page(browser: Any, watched: Watched) -> Iterator[Callable[..., Any]]:
    """Opens pages on another console (its URL given), closed after the test."""
    pages: list[Any] = []

    def open_page(url: str, **options: Any) -> Any:
        pages.append(_new_page(browser, url, watched, **options))
        return pages[-1]

    yield open_page
    for opened in pages:
        opened.context.close()


# -- screenshots and the report ---------------------------------------------------------------


@pytest.fixture(scope="session")
def screenshot_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("console-screenshots", numbered=False)
    report.SCREENSHOTS.append(str(folder))
    return folder


@pytest.fixture
def screenshot(screenshot_folder: Path) -> Callable[[Any, str], Path]:
    """Writes a PNG of a page (all of it) or of one element (a locator) as NAME.png, and a
    copy in $MINIPAY_CONSOLE_SCREENSHOTS."""
    copies = os.environ.get("MINIPAY_CONSOLE_SCREENSHOTS", "")

    def take(target: Any, name: str) -> Path:
        path = screenshot_folder / f"{name}.png"
        if hasattr(target, "goto"):  # a page
            target.screenshot(path=str(path), full_page=True)
        else:
            target.screenshot(path=str(path))
        if copies:
            folder = Path(copies) if Path(copies).is_absolute() else REPO_ROOT / copies
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, folder / path.name)
        return path

    return take
