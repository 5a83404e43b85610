"""What the three toy-world trainers share: a seeded loop with AdamW, warm-up then cosine decay,
gradient clipping, and a line of progress now and then."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import torch


def train_loop(
    params: Iterable[torch.nn.Parameter],
    step_loss: Callable[[int], torch.Tensor],
    steps: int,
    lr: float,
    name: str,
    warmup: int = 100,
    after_step: Callable[[int], None] | None = None,
    log=print,
) -> list[float]:
    """Runs ``steps`` optimizer steps of ``step_loss(step)``; returns the loss per step."""
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    losses, started = [], time.time()
    for step in range(steps):
        loss = step_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if after_step:
            after_step(step)
        if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:
            recent = sum(losses[-50:]) / len(losses[-50:])
            log(f"{name}: step {step + 1}/{steps}, loss {recent:.4f}, {time.time() - started:.0f} s")
    return losses


def ema_tracker(modules: torch.nn.Module, decay: float) -> tuple[torch.nn.Module, Callable[[int], None]]:
    """A frozen copy of ``modules`` and the ``after_step`` that moves it towards them (with a warm-up,
    so early weights do not linger): the toy-world generators ship the averaged weights."""
    import copy

    ema = copy.deepcopy(modules).requires_grad_(False)

    def update(step: int) -> None:
        d = min(decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), modules.parameters(), strict=True):
                e.lerp_(p, 1 - d)

    return ema, update
