"""Defaults for running embedded and offline, applied by every entry point (the CLI, the flows
package that `python -m flows.serve` and Prefect workers import) before Prefect or MLflow load.

A value the user set, in the environment or in the active Prefect profile, always wins.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import MutableMapping
from pathlib import Path

EMBEDDED_DEFAULTS = {
    # Prefect's ephemeral server takes ~40 s to start on 2 cores; its default wait is 20 s.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # Usage telemetry cannot reach its servers offline; each failed send is a warning in the output.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def active_prefect_profile(environ: MutableMapping[str, str]) -> dict[str, str]:
    """The settings of the active Prefect profile (profiles.toml), without importing Prefect."""
    home = Path(environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
    path = Path(environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        profiles = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    active = environ.get("PREFECT_PROFILE") or profiles.get("active", "ephemeral")
    return {k: str(v) for k, v in profiles.get("profiles", {}).get(active, {}).items()}


def apply_embedded_defaults(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Sets each default the user has not set; returns what was set."""
    profile = active_prefect_profile(environ)
    applied = {k: v for k, v in EMBEDDED_DEFAULTS.items() if k not in environ and k not in profile}
    environ.update(applied)
    return applied
