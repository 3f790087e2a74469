"""Heads tell the trainer what they need through hooks; the module never asks what a head is."""

from __future__ import annotations

import functools

import torch
from hydra.utils import instantiate
from torch import nn

from stn_face.nn.head_hooks import HeadHooks, hooks_of
from stn_face.nn.heads import CombinedMarginHead
from stn_face.nn.partial_fc import PartialFCHead
from tests.helpers import compose_train


def test_a_plain_head_gets_the_do_nothing_defaults() -> None:
    head = CombinedMarginHead(8, 4)
    hooks = hooks_of(head)
    assert hooks.optimizer_groups() == [] and hooks.configure_distributed() == []
    assert hooks.ddp_comm_hook() is None and not hooks.votes_on_skipped_steps()
    checkpoint = {"state_dict": {"head.weight": torch.ones(4, 8)}}
    hooks.save_to_checkpoint(checkpoint, "head.")
    hooks.load_from_checkpoint(checkpoint, "head.")
    assert checkpoint["state_dict"]["head.weight"].shape == (4, 8)


def test_partial_fc_implements_them_on_one_process() -> None:
    head = PartialFCHead(8, 4, weight_decay=0.1)
    assert hooks_of(head) is head
    (group,) = head.optimizer_groups()
    assert group["name"] == "sharded_head" and group["weight_decay"] == 0.1 and group["params"] == [head.weight]
    assert head.configure_distributed() == [] and head.ddp_comm_hook() is None and not head.votes_on_skipped_steps()


class _OwnGroupHead(HeadHooks, nn.Module):
    """A new head with a parameter group of its own: nothing in the module names it."""

    def __init__(self, embedding_size: int, num_classes: int) -> None:
        super().__init__()
        self.centres = nn.Parameter(torch.zeros(num_classes, embedding_size))

    def optimizer_groups(self):
        return [{"params": [self.centres], "name": "centres", "lr": 0.5}]

    def loss(self, embeddings, labels, margin_factor=1.0, step=0):
        logits = embeddings @ self.centres.t()
        return nn.functional.cross_entropy(logits, labels), logits.argmax(1) == labels


def test_the_module_takes_the_head_groups_and_the_configured_rate(tmp_path) -> None:
    cfg = compose_train(["backbone=tiny", "optimizer.lr=0.2"], tmp_path)
    model = instantiate(cfg.model, num_classes=4, head=_OwnGroupHead)
    groups = model.parameter_groups()
    assert [g["name"] for g in groups] == ["main", "localization", "centres"]
    assert groups[-1]["params"] == [model.head.centres]
    assert all(p is not model.head.centres for p in groups[0]["params"])
    assert model.base_learning_rate() == 0.2
    assert groups[1]["lr"] == 0.2 * model.localization_lr_mult
    model.optimizer_factory = functools.partial(torch.optim.SGD, momentum=0.9)  # no lr: the optimiser's own default
    assert model.base_learning_rate() == torch.optim.SGD([torch.zeros(1, requires_grad=True)]).defaults["lr"]
