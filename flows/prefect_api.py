"""Prefect's temporary API server for the demo, started early.

With no PREFECT_API_URL, a flow's first call starts Prefect's temporary server and waits for it: a
process that imports Prefect's server and opens (on a fresh PREFECT_HOME: creates) its database, the
biggest single part of the demo's time on 2 cores. Prefect starts it only when the first flow runs,
after the demo process has imported Prefect and MLflow itself. Here the same server (the command
Prefect's own SubprocessASGIServer runs) is started before those imports, so both proceed at once,
and PREFECT_API_URL points this process's flows at it. It stops when the demo process exits.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time
import urllib.request
from importlib.util import find_spec
from pathlib import Path

from filelock import FileLock

from components.environment import active_prefect_profile


class PrefectServerError(RuntimeError):
    """The temporary server did not answer in time, or exited."""


def _configured(name: str) -> str | None:
    return os.environ.get(name) or active_prefect_profile(os.environ).get(name)


def needs_temporary_server() -> bool:
    """No API configured and the temporary server allowed: what Prefect itself would start one for."""
    if _configured("PREFECT_API_URL"):
        return False
    allowed = _configured("PREFECT_SERVER_EPHEMERAL_ENABLED") or _configured("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE")
    return (allowed or "true").lower() not in ("false", "0", "no")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_lock() -> FileLock:
    """One server starting at a time per PREFECT_HOME: a starting server creates or migrates the
    database there, and two doing it at once fail (SQLite: "duplicate column name")."""
    home = Path(_configured("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return FileLock(str(home / "conceptlab-server-start.lock"))


class TemporaryServer:
    """A Prefect API server process on a free local port; ``wait()`` blocks until it answers."""

    def __init__(self) -> None:
        spec = find_spec("prefect")
        assert spec is not None and spec.origin is not None, "prefect is not installed"
        # Held until this server answers (or fails): the next one starts on a migrated database.
        self._lock = _start_lock()
        self._lock.acquire(timeout=startup_timeout())
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(Path(spec.origin).parent.parent),
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            # The settings Prefect's own temporary server runs with: no UI, ephemeral mode.
            env={
                **os.environ,
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
            },
        )
        atexit.register(self.stop)

    def wait(self, timeout: float) -> None:
        try:
            self._wait(timeout)
        finally:
            self._lock.release()

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PrefectServerError(f"Prefect's temporary server exited (code {self.process.returncode})")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise PrefectServerError(
            f"Prefect's temporary server did not answer within {timeout:.0f} s (raise "
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or set PREFECT_API_URL to a running server)"
        )

    def stop(self) -> None:
        self._lock.release()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_temporary_server() -> TemporaryServer | None:
    """Starts the server and points this process's Prefect at it (call before Prefect is imported);
    None when an API is configured (or the temporary server is turned off), which Prefect then uses."""
    if not needs_temporary_server() or "prefect" in sys.modules:  # a loaded Prefect has read its settings
        return None
    server = TemporaryServer()
    os.environ["PREFECT_API_URL"] = server.url
    return server


def startup_timeout() -> float:
    return float(_configured("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS") or 120)
