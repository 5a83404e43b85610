"""Embedded defaults reach every entry point and never override what the user set."""

import os
import subprocess
import sys

from components.environment import EMBEDDED_DEFAULTS, apply_embedded_defaults

PREFECT_VARS = ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "PREFECT_SERVER_ANALYTICS_ENABLED")


def test_defaults_fill_only_what_is_unset(tmp_path):
    environ = {"PREFECT_HOME": str(tmp_path), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300"}
    applied = apply_embedded_defaults(environ)
    assert environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "300"
    assert environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" not in applied


def test_a_value_in_the_active_prefect_profile_wins(tmp_path):
    (tmp_path / "profiles.toml").write_text(
        'active = "team"\n[profiles.team]\nPREFECT_SERVER_ANALYTICS_ENABLED = true\n'
    )
    environ = {"PREFECT_HOME": str(tmp_path)}
    apply_embedded_defaults(environ)
    assert "PREFECT_SERVER_ANALYTICS_ENABLED" not in environ
    assert environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "120"


def _prefect_settings_seen_by(code: str, tmp_path) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in EMBEDDED_DEFAULTS}
    env |= {"HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path / "prefect")}
    probe = (
        "from prefect.settings import get_current_settings as g; s = g().server; "
        "print(s.ephemeral.startup_timeout_seconds, s.analytics_enabled)"
    )
    out = subprocess.run([sys.executable, "-c", f"{code}; {probe}"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_the_flows_package_applies_them_before_prefect_loads(tmp_path):
    # What `python -m flows.serve` and a worker running flows/*.py do first.
    assert _prefect_settings_seen_by("import flows", tmp_path) == ["120", "False"]
    assert _prefect_settings_seen_by("pass", tmp_path) == ["20", "True"]  # Prefect's own, for contrast


def test_the_cli_applies_them_for_every_command(tmp_path):
    code = (
        "from typer.testing import CliRunner; from components.cli import app; "
        "CliRunner().invoke(app, ['models', '--help'])"
    )
    assert _prefect_settings_seen_by(code, tmp_path) == ["120", "False"]
