"""Launching data-parallel training: with train.num_processes > 1, `conceptlab train` runs itself again
as that many processes under torch.distributed.run (torchrun, what `accelerate launch` runs too),
one per GPU with NCCL, or CPU processes joined over gloo where there is no GPU.

The command launches itself, rather than dvc.yaml writing `torchrun --nproc-per-node ${...}`, so the
count comes from the resolved config (params.yaml plus the concept's overrides) wherever the command
runs: DVC stages, the Prefect flows (which run DVC), or by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys

from components.config import ConfigError


def inside_launch() -> bool:
    """Whether this process is one of a launched group (torchrun and accelerate set these)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def check_devices(num_processes: int) -> None:
    """On GPUs each process needs a GPU of its own; without GPUs the processes share the CPU (gloo)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() < num_processes:
        raise ConfigError(
            f"train.num_processes is {num_processes} but this machine has {torch.cuda.device_count()} GPU(s): "
            "request as many GPUs (the Kubernetes Job's nvidia.com/gpu, see infra/k8s) or lower train.num_processes"
        )


def launch_command(num_processes: int, cli_args: list[str]) -> list[str]:
    # --standalone: one machine, a rendezvous on a free local port; no restarts, so a failed process fails
    # the run (the others are stopped) and DVC or the flow decides what happens next.
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={num_processes}",
        "--max-restarts=0",
        "-m",
        "components.cli",
        *cli_args,
    ]


def launch(num_processes: int, cli_args: list[str]) -> int:
    """Runs ``conceptlab <cli_args>`` as ``num_processes`` processes; the launcher's exit code."""
    check_devices(num_processes)
    return subprocess.run(launch_command(num_processes, cli_args), check=False).returncode
