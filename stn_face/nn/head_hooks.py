"""What a trainer asks of a margin head, with defaults that do nothing.

A head is any ``nn.Module`` with ``loss(embeddings, labels, margin_factor=, step=)``. One that needs more
of the trainer (a sharded head: its own optimiser group, its shard under DDP, a say in skipping a
step, its rows gathered into checkpoints) subclasses :class:`HeadHooks` and overrides what it needs;
:func:`hooks_of` gives every other head the defaults, so the LightningModule never asks what a head is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class HeadHooks:
    """The trainer's questions to a head; every answer here is "nothing special"."""

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """Parameter groups of the head's own (``params``, ``name`` and any options such as
        ``weight_decay``); their parameters leave the ``main`` group. Default: none."""
        return []

    def configure_distributed(self) -> list[str]:
        """Called once the processes are known (Lightning's ``configure_model``); returns the names (relative
        to the head) of parameters DDP must neither broadcast nor average. Default: none."""
        return []

    def ddp_comm_hook(self) -> Callable[..., Any] | None:
        """A DDP communication hook for the model's gradients (e.g. summing, not averaging). Default: None."""
        return None

    def votes_on_skipped_steps(self) -> bool:
        """Whether every process must agree before a step with non-finite gradients is skipped (its
        gradients differ between processes, unlike DDP-reduced ones). Default: False."""
        return False

    def save_to_checkpoint(self, checkpoint: dict[str, Any], prefix: str) -> None:
        """Adjust a checkpoint being saved (parameters under ``prefix``; every process calls it)."""

    def load_from_checkpoint(self, checkpoint: dict[str, Any], prefix: str) -> None:
        """Adjust a checkpoint being loaded, before its state dict is applied."""


_DEFAULTS = HeadHooks()


def hooks_of(head: Any) -> HeadHooks:
    """``head`` itself when it implements :class:`HeadHooks`, else the do-nothing defaults."""
    return head if isinstance(head, HeadHooks) else _DEFAULTS
