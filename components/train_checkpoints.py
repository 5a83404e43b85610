"""Training checkpoints: LoRA weights, optimiser and LR-schedule state, the loss history so far.

Each is written to a temporary folder and renamed when complete, so an interrupted save is never
resumed from; only the newest ``limit`` are kept. A checkpoint carries the hash of the resolved
config and inputs, and resuming with different ones is refused.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from components.errors import CheckpointMismatch
from components.io import new_staging_dir, publish, read_json, write_json
from components.lora import load_lora_state

_PREFIX = "step-"


def _checkpoints(root: Path) -> list[Path]:
    found = [p for p in root.glob(f"{_PREFIX}*") if (p / "state.json").exists() and p.suffix != ".partial"]
    return sorted(found, key=lambda p: int(p.name.removeprefix(_PREFIX)))


def latest_checkpoint(root: Path) -> Path | None:
    found = _checkpoints(root) if root.exists() else []
    return found[-1] if found else None


def save_checkpoint(root, step, lora, optimizer, lr_scheduler, losses, config_hash, limit) -> Path:
    final = root / f"{_PREFIX}{step:07d}"
    staging = new_staging_dir(final)
    save_file(lora, str(staging / "lora.safetensors"))
    torch.save(
        {"optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict()}, staging / "optimizer.pt"
    )
    write_json(staging / "state.json", {"step": step, "config_hash": config_hash, "losses": losses})
    publish(staging, final)
    for old in _checkpoints(root)[:-limit]:
        shutil.rmtree(old)
    return final


def load_checkpoint(path: Path, modules: dict, optimizer, lr_scheduler, config_hash) -> tuple[int, list]:
    """Restores the LoRA weights of ``modules`` (by component name), optimiser and schedule; (step, losses)."""
    state = read_json(path / "state.json")
    if state["config_hash"] != config_hash:
        raise CheckpointMismatch(
            f"{path} was made with other params or inputs than this run; rerun without --resume "
            f"to start over (or restore the params it was made with)"
        )
    load_lora_state(modules, load_file(str(path / "lora.safetensors")))
    opt = torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu")
    optimizer.load_state_dict(opt["optimizer"])
    lr_scheduler.load_state_dict(opt["lr_scheduler"])
    return int(state["step"]), list(state["losses"])
