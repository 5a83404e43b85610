"""Optional GPU packages live in the lock as the `gpu` extra: `uv sync --frozen --extra gpu` installs
them and the default sync leaves them out (so a CPU machine never downloads them)."""

import importlib.util
import tomllib
from pathlib import Path

import pytest
import torch

from components.config import ConfigError, TrainParams
from components.train import _optimizer

ROOT = Path(__file__).resolve().parents[2]


def locked_packages() -> dict[str, dict]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {p["name"]: p for p in lock["package"]}


def default_closure(packages: dict[str, dict]) -> set[str]:
    """Every package a plain `uv sync --no-dev` installs: the project's dependencies, transitively,
    following an optional-dependency only where a dependency names that extra."""
    seen, todo = set(), [("conceptlab", None)]
    while todo:
        name, extras = todo.pop()
        pkg = packages[name]
        deps = list(pkg.get("dependencies", []))
        for extra in extras or ():
            deps += pkg.get("optional-dependencies", {}).get(extra, [])
        for dep in deps:
            key = (dep["name"], tuple(dep.get("extra", ())))
            if key not in seen:
                seen.add(key)
                todo.append((dep["name"], dep.get("extra")))
    return {name for name, _ in seen}


def test_bitsandbytes_is_locked_as_the_gpu_extra_only():
    packages = locked_packages()
    project = packages["conceptlab"]
    assert [d["name"] for d in project["optional-dependencies"]["gpu"]] == ["bitsandbytes"]
    assert "bitsandbytes" in packages, "the extra is resolved in uv.lock, not installed by hand"
    assert "bitsandbytes" not in default_closure(packages), "the default sync must not install it"
    assert packages["torch"]["version"] == "2.14.1", "adding the extra must not move the torch pin"


def test_8bit_adam_without_the_extra_names_the_command():
    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here (the gpu extra)")
    layer = torch.nn.Linear(2, 2)
    with pytest.raises(ConfigError, match=r"train\.optimizer 'adamw_8bit' needs .*uv sync --frozen --extra gpu"):
        _optimizer(TrainParams(optimizer="adamw_8bit"), {"unet": layer}, "unet")
