"""The LightningModule: spatial transformer -> backbone -> margin head, trained end to end."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from stn_face.checkpoint import drop_aliases
from stn_face.geometry import decompose
from stn_face.nn.compile import compile_networks
from stn_face.nn.embedding import flip_sum
from stn_face.nn.head_hooks import hooks_of
from stn_face.nn.pretrained import load_pretrained
from stn_face.nn.transformer import SpatialTransformer
from stn_face.schedules import margin_schedule


class StnFaceModule(L.LightningModule):
    """Composes a :class:`SpatialTransformer`, a backbone and a margin head (all built by Hydra).

    Optimisation follows the paper: one SGD optimiser with two parameter groups, the localization
    net at ``localization_lr_mult`` times the base rate (the paper: 10 to 100 times smaller) and its
    gradient norm clipped at ``localization_grad_clip``. The margin is switched on after
    ``margin_warmup_steps`` plain-softmax steps, at once or (``margin_ramp_steps > 0``) growing
    linearly to its full size over that many steps. Steps whose gradients are not finite are skipped and
    counted (``train/skipped_steps``).

    A pretrained backbone (``backbone.weights``) is loaded here (:func:`stn_face.nn.pretrained.load_pretrained`).
    ``freeze_backbone``: its weights and BatchNorm statistics stay fixed (no weight gradients, eval mode
    even in training) and only the transformer and the head learn; ``backbone_lr_mult``: else the
    backbone learns at this multiple of the base rate (its own parameter group, ``backbone``).

    ``validation_step`` returns flip-summed features for the verification callback.

    ``model_config`` (set by ``stn-face-train``) holds the resolved configs of the network parts
    (``transform`` with its localization net, ``localization``, ``backbone``, ``head``) and the data's
    ``image_size`` and ``crop``; it is saved in every checkpoint under ``"model_config"`` so a checkpoint
    rebuilds without Hydra's run folder (:class:`stn_face.embedder.FaceEmbedder`).
    """

    model_config: dict[str, Any] | None = None
    loaded_step: int | None = None  # the step of the last checkpoint loaded (train=false evaluation)

    def __init__(
        self,
        transformer: SpatialTransformer,
        backbone: nn.Module,
        head: Callable[..., nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        num_classes: int,
        scheduler: Callable[..., Any] | None = None,
        localization_lr_mult: float = 0.01,
        localization_grad_clip: float | None = 1.0,
        margin_warmup_steps: int = 0,
        margin_ramp_steps: int = 0,
        channels_last: bool = False,
        compile: bool = False,
        collapse_scale: float = 0.2,
        freeze_backbone: bool = False,
        backbone_lr_mult: float = 1.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["transformer", "backbone", "head", "optimizer", "scheduler"],
                                  logger=False)
        self.transformer = transformer
        self.backbone = load_pretrained(backbone)  # backbone.weights, when the config names a file
        self.freeze_backbone = freeze_backbone
        self.backbone_lr_mult = backbone_lr_mult
        if freeze_backbone:  # weights and BatchNorm statistics fixed; gradients still reach the transformer
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        embedding_size = getattr(backbone, "embedding_size", None)
        if embedding_size is None:
            raise ValueError("the backbone must expose `embedding_size`")
        self.head = head(embedding_size=embedding_size, num_classes=num_classes)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.localization_lr_mult = localization_lr_mult
        self.localization_grad_clip = localization_grad_clip
        self.margin_warmup_steps = margin_warmup_steps
        self.margin_ramp_steps = margin_ramp_steps
        self.channels_last = channels_last
        self.collapse_scale = collapse_scale
        self.skipped_steps = 0
        self._last_step_time: float | None = None
        if channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        self.compiled = compile and compile_networks(self.backbone, self.transformer.localization)
        if self.compiled:
            self.transformer.compile_sampling_grid()

    # ----------------------------------------------------------------------------------------- model
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images ``(B, 3, H, W)`` -> embeddings ``(B, D)`` (float32), aligned faces and matrices."""
        aligned, matrix = self.transformer(images)
        x = aligned.contiguous(memory_format=torch.channels_last) if self.channels_last else aligned
        return self.backbone(x).float(), aligned, matrix

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)[0]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The paper's test feature: normalised embedding of the image plus that of its mirror image,
        re-normalised. ``(B, 3, H, W)`` -> ``(B, D)``."""
        return flip_sum(self.forward, images)

    # ------------------------------------------------------------------ optimisation (public pieces)
    # The training step, the optimiser hook and configure_optimizers are built from these; a plain
    # PyTorch loop (benchmarks/) calls the same ones, so the two differ only by Lightning.
    def margin_factor(self, step: int | None = None) -> float:
        """The fraction of the head's margin in use at optimiser ``step`` (default: ``global_step``):
        0 during ``margin_warmup_steps``, then ramping to 1 over ``margin_ramp_steps``."""
        step = self.global_step if step is None else step
        return margin_schedule(step, self.margin_warmup_steps, self.margin_ramp_steps)

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor, margin_factor: float,
                      step: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images ``(B, 3, H, W)``, labels ``(B,)`` -> (cross-entropy loss, ``(N,)`` bool: the label has the top
        logit, aligned faces, matrices) with the head's margin scaled by ``margin_factor``. ``N`` is ``B``, or
        the global batch for a sharded head (``head=partial_fc``, which samples centres by ``step``, default
        ``global_step``)."""
        embeddings, aligned, matrix = self.embed(images)
        step = self.global_step if step is None else step
        loss, correct = self.head.loss(embeddings, labels, margin_factor=margin_factor, step=step)
        return loss, correct, aligned, matrix

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimiser's parameter groups: ``main`` (everything outside the transformer and a sharded head),
        when the transformer has parameters ``localization`` at ``localization_lr_mult`` times the base rate,
        and last the head's own groups (:meth:`~stn_face.nn.head_hooks.HeadHooks.optimizer_groups`; ``head=partial_fc``:
        its centres, one row block per rank, with the head's ``weight_decay``)."""
        # lists, not sets: the parameter order must be the same in every process for resuming
        localization = list(self.transformer.parameters())
        head_groups = hooks_of(self.head).optimizer_groups()  # e.g. a sharded head's centres
        sharded = [p for group in head_groups for p in group["params"]]
        backbone = [p for p in self.backbone.parameters() if p.requires_grad] if self.backbone_lr_mult != 1 else []
        ids = {id(p) for p in localization + sharded + backbone}
        rest = [p for p in self.parameters() if id(p) not in ids and p.requires_grad]
        groups: list[dict[str, Any]] = [{"params": rest, "name": "main"}]
        base_lr = self.base_learning_rate()
        if localization:
            groups.append({"params": localization, "name": "localization",
                           "lr": base_lr * self.localization_lr_mult})
        if backbone:  # model.backbone_lr_mult: fine-tune a pretrained backbone at a fraction of the rate
            groups.append({"params": backbone, "name": "backbone", "lr": base_lr * self.backbone_lr_mult})
        groups += head_groups  # last, so the groups of other heads keep their places in older checkpoints
        return groups

    def base_learning_rate(self) -> float:
        """The optimiser config's ``lr`` (the optimiser's own default when the config leaves it out)."""
        keywords = getattr(self.optimizer_factory, "keywords", {}) or {}
        if "lr" in keywords:
            return float(keywords["lr"])
        factory = getattr(self.optimizer_factory, "func", self.optimizer_factory)
        default = inspect.signature(factory).parameters.get("lr")
        if default is None or not isinstance(default.default, (int, float)):
            raise ValueError(f"the optimizer config must set lr: {factory!r} has no default learning rate")
        return float(default.default)

    def drop_non_finite_gradients(self, optimizer: torch.optim.Optimizer) -> bool:
        """When any gradient of ``optimizer``'s parameters holds NaN/Inf, set them all to None (the
        optimiser then leaves the weights untouched), count the step in ``skipped_steps`` and return
        True; else return False."""
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        grads = [p.grad for p in params]
        # One fused norm over all gradients is 5-15x cheaper than isfinite on each (measured: 2-6 ms vs 31 ms
        # a step for the small backbone on one CPU thread). A NaN/Inf anywhere makes the norm non-finite;
        # a non-finite norm is re-checked element-wise, so huge-but-finite gradients are not skipped.
        finite = not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads))) or all(
            torch.isfinite(g).all() for g in grads)
        if hooks_of(self.head).votes_on_skipped_steps():  # e.g. a sharded head: all skip if one must
            verdict = torch.tensor([float(finite)], device=self.device)
            torch.distributed.all_reduce(verdict, op=torch.distributed.ReduceOp.MIN)
            finite = bool(verdict.item())
        if finite:
            return False
        # Under DDP the other gradients are already reduced, so every rank sees the same verdict.
        for p in params:
            p.grad = None
        self.skipped_steps += 1
        return True

    def clip_localization_gradients(self) -> torch.Tensor | None:
        """Clip the localization net's gradient norm at ``localization_grad_clip``; returns the norm
        before clipping, or None when there is no localization net or no clipping."""
        if self.transformer.localization is None or not self.localization_grad_clip:
            return None
        return torch.nn.utils.clip_grad_norm_(self.transformer.localization.parameters(),
                                              self.localization_grad_clip)

    # -------------------------------------------------------------------------------------- training
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch[0], batch[1]
        margin = self.margin_factor()
        loss, correct, aligned, matrix = self.training_loss(images, labels, margin)
        accuracy = correct.float().mean()
        batch_size = images.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train/acc", accuracy, prog_bar=True, batch_size=batch_size)
        self.log("train/margin_factor", margin, batch_size=batch_size)
        self._log_throughput(batch_size)
        if self.transformer.localization is not None and self._should_log():
            self._log_transform(matrix.detach(), aligned.detach(), batch_size)
        return loss

    def _should_log(self) -> bool:
        trainer = self._trainer
        every = trainer.log_every_n_steps if trainer is not None else 50
        return (self.global_step % max(1, every)) == 0

    def _log_throughput(self, batch_size: int) -> None:
        now = time.perf_counter()
        if self._last_step_time is not None:
            world = self.trainer.world_size if self._trainer is not None else 1
            self.log("train/images_per_second", batch_size * world / max(now - self._last_step_time, 1e-9),
                     batch_size=batch_size)
        self._last_step_time = now

    def _log_transform(self, matrix: torch.Tensor, aligned: torch.Tensor, batch_size: int) -> None:
        stats = {}
        if self.transformer.has_matrix:  # tps returns its control points: no matrix statistics
            stats = {name: value.float().mean() for name, value in decompose(matrix.float()).items()}
            stats["rotation"] = stats["rotation"] * (180.0 / torch.pi)
            stats["shear"] = decompose(matrix.float())["shear"].abs().mean()
        stats["output_std"] = aligned.float().std()
        self.log_dict({f"transform/{k}": v for k, v in stats.items()}, batch_size=batch_size)

    # ------------------------------------------------------- distributed training (the head's hooks)
    def configure_model(self) -> None:
        """Once the processes are known the head may take its share (a sharded head keeps its rank's
        centres, which DDP must then neither broadcast nor average)."""
        ignored = hooks_of(self.head).configure_distributed()
        if ignored:
            self._ddp_params_and_buffers_to_ignore = [f"head.{name}" for name in ignored]

    def on_fit_start(self) -> None:
        # e.g. a sharded head: every rank's loss is the global batch's, so DDP must sum, not average
        hook = hooks_of(self.head).ddp_comm_hook()
        ddp = self._trainer.strategy.model if self._trainer is not None else None
        if hook is not None and isinstance(ddp, torch.nn.parallel.DistributedDataParallel):
            ddp.register_comm_hook(None, hook)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_backbone:  # a frozen backbone stays in eval mode: its BatchNorm statistics do not move
            self.backbone.eval()
        return self

    def on_train_epoch_start(self) -> None:
        self._last_step_time = None

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if not self.drop_non_finite_gradients(optimizer):
            norm = self.clip_localization_gradients()
            if norm is not None:
                self.log("train/localization_grad_norm", norm, batch_size=1)
        self.log("train/skipped_steps", float(self.skipped_steps), batch_size=1)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameter_groups())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.model_config is not None:
            checkpoint["model_config"] = self.model_config
        hooks_of(self.head).save_to_checkpoint(checkpoint, prefix="head.")  # e.g. gather a sharded head's rows

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        drop_aliases(checkpoint["state_dict"])  # checkpoints of earlier versions hold the backbone twice
        self.loaded_step = int(checkpoint.get("global_step", 0))  # the step of evaluated weights
        hooks_of(self.head).load_from_checkpoint(checkpoint, prefix="head.")
        if self.model_config is None and checkpoint.get("model_config") is not None:
            self.model_config = checkpoint["model_config"]

    # ------------------------------------------------------------------------------------ evaluation
    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        images, indices = batch[0], batch[1]
        return {"features": self.features(images).float(), "indices": indices}

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        return self.validation_step(batch, batch_idx, dataloader_idx)
