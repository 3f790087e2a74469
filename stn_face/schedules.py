"""Learning-rate schedules as ``LambdaLR`` factories (stepped every optimiser step, not every epoch)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _warmup(step: int, warmup_steps: int) -> float:
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def warmup_multistep(optimizer: Optimizer, milestones: Sequence[int] = (10_000, 20_000, 30_000),
                     gamma: float = 0.1, warmup_steps: int = 0) -> LambdaLR:
    """Linear warm-up, then the learning rate times ``gamma`` at each milestone iteration (the paper:
    divided by 10 every 10,000 iterations)."""
    milestones = sorted(int(m) for m in milestones)

    def factor(step: int) -> float:
        return _warmup(step, warmup_steps) * gamma ** sum(step >= m for m in milestones)

    return LambdaLR(optimizer, factor)


def warmup_cosine(optimizer: Optimizer, total_steps: int, warmup_steps: int = 100,
                  final_factor: float = 0.0) -> LambdaLR:
    """Linear warm-up, then cosine decay to ``final_factor`` times the base rate at ``total_steps``."""
    if total_steps <= 0:
        raise ValueError(f"warmup_cosine needs total_steps > 0 (got {total_steps}); set trainer.max_steps")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return _warmup(step, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_factor + (1 - final_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def margin_schedule(step: int, warmup_steps: int = 0, ramp_steps: int = 0) -> float:
    """The fraction of the loss margin in use at ``step``: 0 for ``warmup_steps`` plain-softmax steps,
    then 1 at once, or a linear ramp that reaches 1 after ``ramp_steps`` more steps."""
    return 0.0 if step < warmup_steps else _warmup(step - warmup_steps, ramp_steps)
