"""DDP with a bounded collective timeout: when one rank dies, the others stop instead of hanging."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from lightning.pytorch.strategies import DDPStrategy


def ddp_strategy(timeout_s: float = 1800.0, **kwargs: Any) -> DDPStrategy:
    """A ``DDPStrategy`` whose collectives give up after ``timeout_s`` seconds (gloo and NCCL)."""
    return DDPStrategy(timeout=timedelta(seconds=timeout_s), **kwargs)
