"""Callbacks that show and watch the learned alignment.

* :class:`AlignmentGridCallback` draws a fixed set of input crops with the outline of where the
  transformer samples on each (a quadrilateral for the linear families; for ``tps`` a curved outline and
  the warped grid lines), beside the aligned faces the backbone sees (``alignment/stepNNNNNN.png`` in
  the run folder, also sent to W&B / TensorBoard).
* :class:`TransformCollapseMonitor` warns when the transform degenerates: the mean scale falls
  below ``min_scale`` (the transformer zooms onto a few pixels) or the aligned output becomes
  blank (``transform/output_std`` near 0, e.g. sampling entirely outside the image).
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch

from stn_face.data.images import MEAN, STD
from stn_face.geometry import grid_lines, square_outline, to_pixel_points

log = logging.getLogger(__name__)


def corners_to_pixels(points: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Normalised corner points ``(..., 2)`` (``align_corners=False``) -> pixel coordinates.

    The normalised edge ``-1`` is the outer edge of pixel 0, i.e. ``-0.5`` when pixel centres sit at
    integers (matplotlib's ``imshow`` and OpenCV): ``u = (x + 1) W / 2 - 0.5``.
    """
    return to_pixel_points(points.detach().double().cpu(), height, width).numpy()


def denormalise(images: torch.Tensor) -> np.ndarray:
    """Normalised ``(B, 3, H, W)`` tensors -> ``(B, H, W, 3)`` floats in [0, 1]."""
    mean = torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1)
    out = images.detach().float().cpu() * std + mean
    return out.clamp(0, 1).permute(0, 2, 3, 1).numpy()


def sampled_outline(transformer, transform: torch.Tensor, lines: int = 5,
                    points_per_side: int = 16) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Where a :class:`~stn_face.nn.SpatialTransformer` samples, for its ``transform`` output: the outline
    ``(B, M, 2)`` (normalised input points, a closed polygon starting at the top-left corner: the four
    corners for the linear families, ``points_per_side`` points a side otherwise) and, for a non-linear
    family, ``lines`` warped horizontal and vertical grid lines ``(B, 2 lines, P, 2)`` (else None)."""
    if transformer.has_matrix:  # straight edges: the quadrilateral of the four corners
        return transformer.map_points(transform, square_outline(1)), None
    outline = transformer.map_points(transform, square_outline(points_per_side))
    straight = grid_lines(lines, 4 * points_per_side)
    warped = transformer.map_points(transform, straight.reshape(-1, 2))
    return outline, warped.reshape(transform.shape[0], *straight.shape)


def draw_alignment_grid(images: torch.Tensor, aligned: torch.Tensor, outline: torch.Tensor, path: str | Path,
                        title: str = "", pairs_per_row: int = 4, lines: torch.Tensor | None = None) -> Path:
    """Save the alignment picture (:func:`stn_face.evaluation.drawing.draw_alignment`) of normalised
    ``images`` ``(B, 3, H, W)`` and their ``aligned`` outputs, with the outline ``(B, M, 2)`` of where each
    is sampled and optional warped grid ``lines`` ``(B, L, P, 2)`` (normalised input points, see
    :func:`sampled_outline`)."""
    from PIL import Image

    from stn_face.evaluation.drawing import draw_alignment, to_pixels

    tile = int(images.shape[-1])
    to_uint8 = lambda batch: (denormalise(batch) * 255).round().astype(np.uint8)  # noqa: E731
    picture = draw_alignment(to_uint8(images), to_uint8(aligned), to_pixels(outline.detach().cpu(), tile),
                             None if lines is None else to_pixels(lines.detach().cpu(), tile), title=title,
                             columns=pairs_per_row, tile=tile)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(path)
    return path


class AlignmentGridCallback(L.Callback):
    """Every ``every_n_steps`` optimiser steps (and at the end of training) draw the alignment of a fixed
    set of ``num_images`` faces chosen at fit start (evenly spaced over the first evaluation set, or
    the training set when there is none), so successive grids are comparable."""

    def __init__(self, every_n_steps: int = 500, num_images: int = 16, output_dir: str | None = None,
                 source: str = "val", pairs_per_row: int = 4, grid_lines: int = 5) -> None:
        self.grid_lines = int(grid_lines)  # warped grid lines each way, for a non-linear family (tps)
        self.every_n_steps = int(every_n_steps)
        self.num_images = int(num_images)
        self.output_dir = output_dir
        self.source = source
        self.pairs_per_row = pairs_per_row
        self.images: torch.Tensor | None = None
        self.last_step: int | None = None
        self.written: list[Path] = []

    def _dataset(self, trainer: L.Trainer):
        datamodule = trainer.datamodule
        eval_datasets = list(getattr(datamodule, "eval_datasets", []) or [])
        train_set = getattr(datamodule, "train_set", None)
        if self.source == "val" and eval_datasets:
            return eval_datasets[0]
        return train_set or (eval_datasets[0] if eval_datasets else None)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or self.num_images <= 0:
            return
        dataset = self._dataset(trainer)
        if dataset is None or len(dataset) == 0:
            log.warning("alignment grid: no dataset to draw from; disabled")
            return
        picks = np.linspace(0, len(dataset) - 1, min(self.num_images, len(dataset))).round().astype(int)
        self.images = torch.stack([dataset[int(i)][0] for i in picks])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0:
            self.draw(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self.draw(trainer, pl_module)

    @torch.no_grad()
    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Path | None:
        if self.images is None or not trainer.is_global_zero or self.last_step == trainer.global_step:
            return None
        self.last_step = trainer.global_step
        transformer = pl_module.transformer
        was_training = transformer.training
        transformer.eval()
        try:
            with torch.autocast(device_type=pl_module.device.type, enabled=False):
                aligned, transform = transformer(self.images.to(pl_module.device))
                outline, lines = sampled_outline(transformer, transform, self.grid_lines)
        finally:
            transformer.train(was_training)
        out = Path(self.output_dir or trainer.default_root_dir) / "alignment"
        path = draw_alignment_grid(self.images, aligned, outline, out / f"step{trainer.global_step:06d}.png",
                                   title=f"{transformer.transform_name} transform, step {trainer.global_step}",
                                   pairs_per_row=self.pairs_per_row, lines=lines)
        self.written.append(path)
        from stn_face.evaluation.image_log import log_image_file

        log_image_file(trainer, "alignment/grid", path)
        return path


class TransformCollapseMonitor(L.Callback):
    """Warn when the learned transform collapses (reads the module's logged ``transform/*`` statistics).

    An event starts when ``transform/scale < min_scale``, ``transform/output_std < min_output_std`` or
    ``transform/perspective > max_perspective`` (a homography folding the face towards its horizon:
    seen at lr 0.1 with a 20-step warm-up, experiments/cpu_celeba) and ends when all are healthy again; each event gives one ``log.warning`` and increments the
    logged metric ``transform/collapse_warnings``. Nothing is checked without a localization net; a
    family without a matrix (``tps``) logs no scale or perspective, so only its output is checked.
    """

    def __init__(self, min_scale: float = 0.3, min_output_std: float = 0.05, max_perspective: float = 0.5) -> None:
        self.min_scale = float(min_scale)
        self.min_output_std = float(min_output_std)
        self.max_perspective = float(max_perspective)
        self.warnings = 0
        self.collapsed = False
        self._seen: int | None = None

    def check(self, scale: float | None, output_std: float | None, step: int,
              perspective: float | None = None) -> bool:
        """Update the state from one observation; returns True when a new event starts."""
        reasons = []
        if scale is not None and scale < self.min_scale:
            reasons.append(f"mean scale {scale:.3f} < {self.min_scale}")
        if output_std is not None and output_std < self.min_output_std:
            reasons.append(f"aligned output std {output_std:.4f} < {self.min_output_std} (blank faces)")
        if perspective is not None and perspective > self.max_perspective:
            reasons.append(f"perspective {perspective:.3f} > {self.max_perspective} (folded homography)")
        if reasons and not self.collapsed:
            self.collapsed = True
            self.warnings += 1
            log.warning("spatial transformer collapsing at step %d: %s. Lower model.localization_lr_mult, "
                        "keep model.localization_grad_clip, or check the augmentation.", step, "; ".join(reasons))
            return True
        if not reasons:
            self.collapsed = False
        return False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if getattr(pl_module.transformer, "localization", None) is None:
            return
        metrics = trainer.callback_metrics
        if "transform/output_std" not in metrics:
            return
        step = trainer.global_step
        scale = float(metrics["transform/scale"]) if "transform/scale" in metrics else None
        output_std = float(metrics["transform/output_std"]) if "transform/output_std" in metrics else None
        perspective = float(metrics["transform/perspective"]) if "transform/perspective" in metrics else None
        key = (scale, output_std, perspective)
        if key == self._seen:  # the module logs these every log_every_n_steps only
            return
        self._seen = key
        self.check(scale, output_std, step, perspective)
        pl_module.log("transform/collapse_warnings", float(self.warnings), batch_size=1)

    def state_dict(self):
        return {"warnings": self.warnings}

    def load_state_dict(self, state_dict) -> None:
        self.warnings = int(state_dict.get("warnings", 0))
