"""The web app as a person meets it: a registry filled by the project's own stages, `conceptlab ui`
started as a real uvicorn server process, and Debian's Chromium driven by Playwright.

Playwright's own browser download needs the internet; these tests use the system Chromium
($CONCEPTLAB_CHROMIUM, default /usr/bin/chromium; scripts/test.sh installs it with apt-get as root)
and fail, not skip, when it is missing. Screenshots go to $CONCEPTLAB_TEST_ARTIFACTS or the test's
temporary folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.ui.toy_registry import ROOT, ToyRegistry, fill_registry

CHROMIUM = os.environ.get("CONCEPTLAB_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The system Chromium, checked before anything slow is set up."""
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: the browser tests drive the system Chromium (Playwright's own "
            "download needs the internet). Install it with `apt-get install chromium` (scripts/test.sh does so "
            "when run as root) or point CONCEPTLAB_CHROMIUM at a Chromium binary.",
            pytrace=False,
        )
    return CHROMIUM


@pytest.fixture(scope="session")
def toy_registry(chromium, tmp_path_factory) -> ToyRegistry:
    # Session fixtures are set up before the per-test clean-up of MLFLOW_TRACKING_URI, which conceptlab
    # lets win over params.yaml: without this, an earlier test's URI would receive the registrations.
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        return fill_registry(tmp_path_factory.mktemp("ui-registry"))


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("CONCEPTLAB_TEST_ARTIFACTS") or tmp_path_factory.mktemp("ui-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UiServer:
    """`conceptlab ui` in its own process (the installed console script, as a person starts it)."""

    def __init__(self, tracking_uri: str, log: Path, cache: Path, *flags: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        script = Path(sys.executable).with_name("conceptlab")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "components.cli"]
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env.update(CONCEPTLAB_CACHE_DIR=str(cache), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
        env.pop("CONCEPTLAB_UI_USER", None)
        self.log = log
        self.proc = subprocess.Popen(
            [*command, "ui", "--port", str(self.port), "--tracking-uri", tracking_uri, "--repo", str(ROOT), *flags],
            cwd=ROOT,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait(self, timeout: float = 180) -> UiServer:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"conceptlab ui exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=5) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"conceptlab ui did not answer in {timeout} s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="session")
def ui_servers(toy_registry, tmp_path_factory):
    """Two apps on the same registry, started at once: read-only, and with --allow-promotion for alice
    (the user an authenticating proxy names in X-Forwarded-User)."""
    folder = tmp_path_factory.mktemp("ui-servers")
    cache = folder / "cache"
    servers = {
        "readonly": UiServer(toy_registry.tracking_uri, folder / "readonly.log", cache),
        "promotion": UiServer(
            toy_registry.tracking_uri, folder / "promotion.log", cache, "--allow-promotion", "--promoter", "alice"
        ),
    }
    try:
        yield {name: server.wait() for name, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()


# Module scope: Playwright's sync API keeps an event loop on this thread while it runs, and Prefect's
# sync-or-async calls (Artifact.get, State.result) then return coroutines; tests after these must not see it.
@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()
