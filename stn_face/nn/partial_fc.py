"""Partial FC (An et al., "Partial FC: Training 10 Million Identities on a Single Machine", ICCVW 2021):
a combined-margin head whose class centres are sharded over the DDP ranks.

Each of ``W`` ranks holds the centres of a contiguous block of about ``C / W`` classes
(:func:`shard_range`). A training step gathers the embeddings and labels of the global batch
(``W x B`` rows) onto every rank, keeps the rank's centres of the classes in that batch (the positives)
plus a random share of its other centres (``sample_rate`` of its block in all), and computes the
softmax cross-entropy of the global batch across ranks: the row maxima and the sums of exponentials
are all-reduced, so no rank ever holds the ``(W B, C)`` logits. Gradients reach every rank's embeddings
through the gather (its backward sums the ranks' parts).

Why the numbers equal a full head's: every rank's loss is the global batch's mean loss, and the
gradient that reaches rank ``r``'s embeddings is the whole gradient of that loss with respect to them.
The backbone's DDP gradients must therefore be **summed** over the ranks, not averaged
(:func:`sum_gradients`, registered by :class:`stn_face.module.StnFaceModule`); then the update equals
that of a full head on the global batch, and with ``sample_rate=1`` the loss and every gradient do too.

The centres are not replicated parameters: DDP must ignore them (``_ddp_params_and_buffers_to_ignore``),
their optimiser state (momentum) is per rank, and a checkpoint holds the whole ``(C, D)`` matrix and its
state (gathered on save, sliced on load: :func:`gather_shards_into_checkpoint`,
:func:`take_shard_from_checkpoint`), so a checkpoint looks like one of a full head and resumes on any
number of ranks. In one process the head is the full head with class-centre sampling.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from stn_face.errors import InputError
from stn_face.nn.head_hooks import HeadHooks
from stn_face.nn.heads import margin_logits

#: the name of the optimiser parameter group that holds sharded parameters (one row block per rank)
SHARDED_GROUP = "sharded_head"


def shard_range(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of the ``num_classes`` centres held by ``rank``: contiguous blocks, the
    first ``num_classes % world_size`` ranks one row longer."""
    base, extra = divmod(num_classes, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def distributed_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherRows(torch.autograd.Function):
    """``(B, ...)`` on each of ``W`` ranks -> ``(W B, ...)``, rank order, on every rank. Backward: the
    gradient of the local rows is the sum over ranks of the gradients of those rows."""

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        world, ctx.rank, ctx.rows = dist.get_world_size(), dist.get_rank(), local.shape[0]
        parts = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # an all-reduce of the (W B, D) gradient, not a reduce-scatter: gloo has none, and it is a few MB
        # beside the backbone's gradients (64 ranks x 128 x 512 fp32 = 16 MB)
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def _all_reduce(tensor: torch.Tensor, op: Any, distributed: bool) -> torch.Tensor:
    if distributed:
        dist.all_reduce(tensor, op=op)
    return tensor


class _ShardedCrossEntropy(torch.autograd.Function):
    """Softmax cross-entropy of ``N`` rows whose columns (classes) are spread over the ranks.

    ``logits`` ``(N, K)``: this rank's columns; ``targets`` ``(N,)``: the target's column here, or ``-1``
    when another rank holds it. Returns the mean loss over the ``N`` rows and ``(N,)`` bool (the target
    has the largest logit), both the same on every rank."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, distributed: bool):
        top = _all_reduce(logits.max(dim=1).values, dist.ReduceOp.MAX, distributed)
        probs = (logits - top.unsqueeze(1)).exp_()
        total = _all_reduce(probs.sum(dim=1), dist.ReduceOp.SUM, distributed)
        target_logit = logits.gather(1, targets.clamp_min(0).unsqueeze(1)).squeeze(1)
        target_logit = _all_reduce(torch.where(targets >= 0, target_logit, torch.zeros_like(target_logit)),
                                   dist.ReduceOp.SUM, distributed)
        probs.div_(total.unsqueeze(1))
        ctx.save_for_backward(probs, targets)
        correct = target_logit >= top
        ctx.mark_non_differentiable(correct)
        # log-sum-exp minus the target logit, as F.cross_entropy computes it
        return (top + total.log() - target_logit).mean(), correct

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, _grad_correct: torch.Tensor | None):
        probs, targets = ctx.saved_tensors
        rows = (targets >= 0).nonzero().squeeze(1)
        grad = probs  # softmax minus one-hot, in place: the (N, K) probabilities are not needed again
        grad[rows, targets[rows]] -= 1.0
        return grad.mul_(grad_loss / probs.shape[0]), None, None


def sample_columns(local_targets: torch.Tensor, num_local: int, num_sample: int,
                   generator: torch.Generator) -> torch.Tensor:
    """Sorted centre indices ``(K,)`` of one rank's ``num_local``: every positive (``local_targets >= 0``)
    plus random others up to ``num_sample`` in all (only the positives when they are more)."""
    positives = torch.unique(local_targets[local_targets >= 0])
    if positives.numel() >= num_sample:
        return positives
    others = torch.ones(num_local, dtype=torch.bool, device=local_targets.device)
    others[positives] = False
    others = others.nonzero().squeeze(1)
    pick = torch.randperm(others.numel(), generator=generator, device=generator.device)
    return torch.cat([positives, others[pick[:num_sample - positives.numel()].to(others.device)]]).sort().values


def sum_gradients(process_group, bucket):
    """DDP communication hook: sum the bucket's gradients over the ranks (DDP's default averages).
    ``(ProcessGroup | None, GradBucket) -> Future[Tensor]``; no annotations, as DDP compares them with its
    own classes and this module's are strings (``from __future__ import annotations``)."""
    group = process_group if process_group is not None else dist.group.WORLD
    work = dist.all_reduce(bucket.buffer(), group=group, async_op=True)
    return work.get_future().then(lambda future: future.value()[0])


class PartialFCHead(HeadHooks, nn.Module):
    """Combined-margin head (the numbers of :class:`~stn_face.nn.heads.CombinedMarginHead`: ArcFace
    ``m2``, CosFace ``m3``, SphereFace-style ``m1``) with sharded centres and class-centre sampling.

    ``weight`` is ``(num_local, D)``: this rank's rows ``[start, stop)`` of the ``(num_classes, D)``
    centres. Calling the head: embeddings ``(B, D)`` and labels ``(B,)`` of this rank's batch (the same
    ``B`` on every rank) -> (loss of the global batch, ``(W B,)`` bool correct), the same on every rank.

    ``sample_rate``: the share of each rank's centres in every step's softmax (positives always; 1.0 = all).
    The sample depends only on ``seed``, the step and the rank, so a resumed run draws the same ones.
    ``weight_decay``: the centres' own weight decay (``None``: the optimiser's).

    The centres are drawn like a full head's (same random numbers), then :meth:`shard` keeps this rank's
    rows, so shards of any world size are rows of one initial matrix; under Lightning that happens in
    ``configure_model``, once the ranks are known (until then each process holds the full matrix: 4 GB
    of host memory for a moment at 2M x 512).
    """

    def __init__(self, embedding_size: int, num_classes: int, s: float = 64.0, m1: float = 1.0,
                 m2: float = 0.5, m3: float = 0.0, sample_rate: float = 1.0, weight_decay: float | None = None,
                 seed: int = 0, normalize: bool = True) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a classifier head needs at least 2 classes, got {num_classes}")
        if not 0.0 < float(sample_rate) <= 1.0:
            raise InputError(f"head.sample_rate={sample_rate}: the share of class centres per step must be in "
                             "(0, 1]; e.g. head.sample_rate=0.2 (insightface's WebFace42M setting) or 1.0 (all centres)")
        if not normalize:
            raise InputError("head=partial_fc is a normalised margin head: normalize=false is not supported "
                             "(use head=softmax for a plain linear classifier)")
        self.s, self.m1, self.m2, self.m3 = float(s), float(m1), float(m2), float(m3)
        self.sample_rate = float(sample_rate)
        self.weight_decay = weight_decay
        self.seed = int(seed)
        self.num_classes = int(num_classes)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, std=0.01)
        self.rank, self.world_size = 0, 1
        self.shard()

    # ---------------------------------------------------------------------------------------- shards
    @property
    def start(self) -> int:
        return shard_range(self.num_classes, self.rank, self.world_size)[0]

    @property
    def num_local(self) -> int:
        return self.weight.shape[0]

    @property
    def num_sample(self) -> int:
        """How many of this rank's centres each step uses (at least the positives)."""
        return max(1, int(self.sample_rate * self.num_local))

    def shard(self, rank: int | None = None, world_size: int | None = None) -> None:
        """Keep only ``rank``'s rows (default: the default process group's rank and size). Call before
        the optimiser is built: the weight becomes a new parameter."""
        if rank is None or world_size is None:
            rank, world_size = distributed_world()
        if (rank, world_size) == (self.rank, self.world_size):
            return
        if self.world_size != 1:
            raise RuntimeError(f"the head is already rank {self.rank} of {self.world_size}; shard the full head")
        if world_size > self.num_classes:
            raise InputError(f"head=partial_fc shards {self.num_classes} classes over {world_size} ranks: each rank "
                             "needs at least one class; use fewer devices or another head")
        start, stop = shard_range(self.num_classes, rank, world_size)
        self.weight = nn.Parameter(self.weight.detach()[start:stop].clone())
        self.rank, self.world_size = rank, world_size

    def gather_rows(self, shard: torch.Tensor) -> torch.Tensor:
        """The ``(num_classes, ...)`` tensor whose row blocks are every rank's ``shard`` (``(num_local, ...)``),
        on rank 0 (a collective: every rank calls it); the other ranks get their ``shard`` back."""
        if self.world_size == 1:
            return shard
        longest = shard_range(self.num_classes, 0, self.world_size)[1]
        padded = shard.new_zeros((longest, *shard.shape[1:]))
        padded[:shard.shape[0]] = shard  # dist.gather needs equal sizes on every rank
        parts = [torch.empty_like(padded) for _ in range(self.world_size)] if self.rank == 0 else None
        dist.gather(padded, parts, dst=0)
        if self.rank != 0:
            return shard
        sizes = [b - a for a, b in (shard_range(self.num_classes, r, self.world_size) for r in range(self.world_size))]
        return torch.cat([part[:size] for part, size in zip(parts, sizes)]).cpu()

    def local_rows(self, full: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a ``(num_classes, ...)`` tensor (a copy, so the full one can be freed)."""
        start, stop = shard_range(self.num_classes, self.rank, self.world_size)
        return full[start:stop].clone()

    # -------------------------------------------------------------------------------------- training
    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, margin_factor: float = 1.0,
                step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        embeddings, labels = embeddings.float(), labels.long()
        distributed = self.world_size > 1
        if distributed:
            sizes = [torch.zeros(1, dtype=torch.long, device=labels.device) for _ in range(self.world_size)]
            dist.all_gather(sizes, torch.tensor([labels.shape[0]], device=labels.device))
            if len({int(size) for size in sizes}) != 1:
                raise ValueError(f"head=partial_fc needs the same batch size on every rank, got "
                                 f"{[int(size) for size in sizes]} (train with drop_last=True)")
            embeddings = _GatherRows.apply(embeddings)
            parts = [torch.empty_like(labels) for _ in range(self.world_size)]
            dist.all_gather(parts, labels.contiguous())
            labels = torch.cat(parts)
        local = labels - self.start
        local = torch.where((local >= 0) & (local < self.num_local), local, torch.full_like(local, -1))
        weight = self.weight
        if self.num_sample < self.num_local:
            columns = sample_columns(local, self.num_local, self.num_sample, self._generator(step))
            local = torch.where(local >= 0, torch.searchsorted(columns, local.clamp_min(0)), local)
            weight = weight[columns]
        # float32 from here on: under autocast the matmul runs in bf16/fp16, the softmax must not
        cosine = F.linear(F.normalize(embeddings), F.normalize(weight)).float().clamp(-1.0, 1.0)
        logits = margin_logits(cosine, local, self.s, self.m1, self.m2, self.m3, margin_factor)
        return _ShardedCrossEntropy.apply(logits, local, distributed)

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor, margin_factor: float = 1.0,
             step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The same as calling the head (the interface of :meth:`CombinedMarginHead.loss`)."""
        return self(embeddings, labels, margin_factor=margin_factor, step=step)

    # ------------------------------------------------------------------ trainer hooks (HeadHooks)
    def optimizer_groups(self) -> list[dict[str, Any]]:
        """The centres (this rank's rows) in their own group, with the head's ``weight_decay``."""
        decay = {} if self.weight_decay is None else {"weight_decay": self.weight_decay}
        return [{"params": list(self.parameters()), "name": SHARDED_GROUP, **decay}]

    def configure_distributed(self) -> list[str]:
        """Under DDP keep this rank's centres, which DDP must neither broadcast nor average."""
        if distributed_world()[1] <= 1:
            return []
        self.shard()
        return [name for name, _ in self.named_parameters()]

    def ddp_comm_hook(self):
        # every rank's loss is the global batch's: DDP must sum the other gradients, not average them
        return sum_gradients if self.world_size > 1 else None

    def votes_on_skipped_steps(self) -> bool:
        return self.world_size > 1  # each rank's centres have their own gradients: all skip if one must

    def save_to_checkpoint(self, checkpoint: dict[str, Any], prefix: str) -> None:
        gather_shards_into_checkpoint(checkpoint, self, prefix)  # the whole (C, D) centres, as a full head's

    def load_from_checkpoint(self, checkpoint: dict[str, Any], prefix: str) -> None:
        take_shard_from_checkpoint(checkpoint, self, prefix)

    def _generator(self, step: int) -> torch.Generator:
        seed = int(np.random.SeedSequence([self.seed, int(step), self.rank]).generate_state(1, np.uint64)[0])
        return torch.Generator(device=self.weight.device).manual_seed(seed & (2**63 - 1))


# ------------------------------------------------------------------------------------------ checkpoints
def _sharded_states(checkpoint: dict[str, Any], head: PartialFCHead):
    """``(state, index, key)`` of every optimiser state tensor of the head's centres in a Lightning checkpoint
    (momentum for SGD), found by the name of their parameter group."""
    for optimizer in checkpoint.get("optimizer_states") or []:
        for group in optimizer.get("param_groups", []):
            if group.get("name") != SHARDED_GROUP:
                continue
            for index, param in zip(group["params"], head.parameters()):
                entry = optimizer["state"].get(index) or {}
                for key in sorted(entry):
                    if torch.is_tensor(entry[key]) and entry[key].dim() == param.dim():  # not e.g. Adam's step
                        yield optimizer["state"], index, key


def _replace_rows(checkpoint: dict[str, Any], head: PartialFCHead, prefix: str, change, only_rows: int | None) -> None:
    state = checkpoint["state_dict"]
    for name, _ in head.named_parameters():
        if state.get(prefix + name) is not None and only_rows in (None, state[prefix + name].shape[0]):
            state[prefix + name] = change(state[prefix + name])
    for states, index, key in list(_sharded_states(checkpoint, head)):
        if only_rows in (None, states[index][key].shape[0]):
            # a new entry: optimizer.state_dict() hands out the optimiser's own state dicts
            states[index] = {**states[index], key: change(states[index][key])}


def gather_shards_into_checkpoint(checkpoint: dict[str, Any], head: PartialFCHead, prefix: str) -> None:
    """Put the whole ``(C, D)`` centres and their optimiser state into a checkpoint being saved (every
    rank calls it; rank 0, which writes the file, receives the shards)."""
    if head.world_size > 1:
        _replace_rows(checkpoint, head, prefix, head.gather_rows, None)


def take_shard_from_checkpoint(checkpoint: dict[str, Any], head: PartialFCHead, prefix: str) -> None:
    """Replace the whole centres and their optimiser state in a loaded checkpoint by this rank's rows."""
    if head.world_size > 1:
        _replace_rows(checkpoint, head, prefix, head.local_rows, head.num_classes)
