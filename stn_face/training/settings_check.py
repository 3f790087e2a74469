"""Settings checked before any work: the numbers users get wrong (batch sizes, steps, intervals, rates,
sizes, worker counts, sample rates, margins) are checked on the composed config, so ``data.batch_size=0``
or ``trainer.max_steps=-5`` ends in one ``error:`` line naming the key, the value and the allowed range
(exit 2) within a second or two, before data is prepared, a model built or a run folder made.

:class:`CheckSettings` is a Hydra callback (``hydra.callbacks`` of ``conf/train.yaml``): Hydra calls
``on_run_start`` with the composed config before it creates the run folder. :func:`check_settings` is also
called by :func:`stn_face.training.train` itself, for configs composed in Python.

This module imports neither torch nor Lightning: an ``error:`` exit must not wait for them.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from stn_face.errors import InputError

_ABSENT = object()


@dataclass(frozen=True)
class Rule:
    """``key`` must be a number in [``low``, ``high``] (``open_low``/``open_high``: the bound excluded);
    ``integer``: a whole number; ``nullable``: null is allowed too; ``what`` says what the number is."""

    key: str
    low: float | None = None
    high: float | None = None
    integer: bool = True
    nullable: bool = False
    open_low: bool = False
    open_high: bool = False
    what: str = ""
    also: tuple[int, ...] = ()  # further allowed integers outside the range (e.g. -1: all devices)
    words: tuple[str, ...] = ()  # allowed words (``auto``); a list is left to its consumer when words are

    def allowed(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
            text = f"{kind} in {left}{_fmt(self.low)}, {_fmt(self.high)}{right}"
        elif self.low is not None:
            text = f"{kind} {'>' if self.open_low else '>='} {_fmt(self.low)}"
        elif self.high is not None:
            text = f"{kind} {'<' if self.open_high else '<='} {_fmt(self.high)}"
        else:
            text = kind
        extras = [_fmt(v) for v in self.also] + list(self.words) + (["null"] if self.nullable else [])
        return text + (f" (or {' or '.join(extras)})" if extras else "")

    def violation(self, value: Any) -> str | None:
        """None when ``value`` is allowed, else why not."""
        if value is None:
            return None if self.nullable else "must be set"
        if self.words and (value in self.words or isinstance(value, (list, tuple, ListConfig))):
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "is not a number"
        if isinstance(value, float) and not math.isfinite(value):
            return "is not a finite number"
        if self.integer and value != int(value):
            return "is not a whole number"
        if value in self.also:
            return None
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            return "is out of range"
        if self.high is not None and (value > self.high or (self.open_high and value == self.high)):
            return "is out of range"
        return None


def _fmt(value: float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _int(key, low=None, high=None, **kw) -> Rule:
    return Rule(key, low, high, integer=True, **kw)


def _num(key, low=None, high=None, **kw) -> Rule:
    return Rule(key, low, high, integer=False, **kw)


_BIG = 2**31 - 1

#: every numeric setting of ``stn-face-train`` a user may get wrong; a key absent from the composed config
#: (another head, another scheduler) is skipped. ``{eval}`` rules apply to ``eval`` and every ``extra_eval``.
RULES: tuple[Rule, ...] = (
    # data
    _int("data.batch_size", 1, what="training images in one step, per process"),
    _int("data.eval_batch_size", 1, what="images embedded at once during validation"),
    _int("data.num_workers", 0, 256, what="DataLoader worker processes; 0 loads in the main process"),
    _int("data.prepare_workers", 0, 256, what="MTCNN preparation processes"),
    _int("data.image_size", 16, 4096, what="pixels of the loaded crop's side"),
    _int("data.min_images_per_identity", 1, what="the fewest images an identity needs to be used"),
    _int("data.max_images_per_identity", 1, nullable=True, what="images used per identity"),
    _int("data.max_identities", 1, nullable=True, what="identities used"),
    _int("data.check_records", 0, what="records checked when a .rec file is opened"),
    _int("data.crop.size", 16, 4096, what="pixels of the prepared crop's side"),
    _num("data.crop.margin", 0, 10, open_low=True, what="crop side / face box side; 1.3 is 30 % larger"),
    _num("data.augment.hflip", 0, 1, what="probability of a horizontal flip"),
    # evaluation sets
    _int("{eval}.max_pairs_per_fold", 1, nullable=True, what="pairs scored per fold"),
    _int("{eval}.max_frames", 1, nullable=True, what="video frames used per YTF video"),
    _int("{eval}.n_folds", 2, what="cross-validation folds"),
    # trainer
    _int("trainer.max_steps", 1, what="optimiser steps of the run"),
    _int("trainer.val_check_interval", 1, what="steps between validations"),
    _int("trainer.log_every_n_steps", 1, what="steps between logged training values"),
    _int("trainer.num_sanity_val_steps", 0, also=(-1,), what="validation batches before training"),
    _int("trainer.accumulate_grad_batches", 1, what="batches per optimiser step"),
    _num("trainer.gradient_clip_val", 0, open_low=True, nullable=True, what="gradient norm clip"),
    _int("trainer.devices", 1, 1024, also=(-1,), words=("auto",),
         what="devices, one process each, per node"),
    _int("trainer.num_nodes", 1, 100000, what="nodes"),
    _num("trainer.strategy.timeout_s", 0, open_low=True, what="seconds a collective waits for a lost rank"),
    # optimiser and schedule
    _num("optimizer.lr", 0, 10, open_low=True, what="learning rate"),
    _num("optimizer.momentum", 0, 1, open_high=True, what="SGD momentum"),
    _num("optimizer.weight_decay", 0, 1, open_high=True, what="weight decay"),
    _int("scheduler.warmup_steps", 0, what="steps of linear learning-rate warm-up"),
    _int("scheduler.total_steps", 1, what="steps of the whole schedule"),
    _num("scheduler.final_factor", 0, 1, what="final learning rate / base learning rate"),
    _num("scheduler.gamma", 0, 1, open_low=True, what="learning-rate factor at each milestone"),
    # model
    _num("model.localization_lr_mult", 0, 100, what="localization net's learning rate / the base rate"),
    _num("model.backbone_lr_mult", 0, 100, what="backbone's learning rate / the base rate"),
    _num("model.localization_grad_clip", 0, open_low=True, nullable=True, what="localization gradient clip"),
    _int("model.margin_warmup_steps", 0, what="steps trained without the margin"),
    _int("model.margin_ramp_steps", 0, what="steps over which the margin grows to its value"),
    # margin heads
    _num("head.s", 0, 1024, open_low=True, what="logit scale"),
    _num("head.m1", 0, 10, open_low=True, what="SphereFace's multiplicative angular margin; 1 is none"),
    _num("head.m2", 0, math.pi / 2, open_high=True, what="ArcFace's additive angular margin, in radians"),
    _num("head.m3", 0, 1, open_high=True, what="CosFace's additive cosine margin"),
    _num("head.m", 0, math.pi / 2, open_high=True, what="margin"),
    _num("head.h", 0, 1, what="AdaFace's image-quality concentration"),
    _num("head.t_alpha", 0, 1, what="AdaFace's running-statistics momentum"),
    _num("head.sample_rate", 0, 1, open_low=True, what="Partial FC's share of the class centres sampled each step"),
    _num("head.weight_decay", 0, 1, open_high=True, nullable=True, what="the head's weight decay"),
    # alignment
    _int("transform.grid_size", 2, 64, what="TPS control points per side"),
    _int("localization.input_size", 8, 1024, what="pixels of the localization net's input side"),
    _int("localization.conv_channels[]", 1, 4096, what="channels of a localization conv layer"),
    _int("localization.fc_dims[]", 1, 65536, what="units of a localization hidden layer"),
    _int("transform.output_size[]", 8, 4096, what="pixels of the aligned face's height and width"),
    _int("scheduler.milestones[]", 1, what="steps at which the learning rate drops"),
    # callbacks
    _int("callbacks.periodic_checkpoint.every_n_train_steps", 0, nullable=True,
         what="steps between periodic checkpoints; 0 or null: only at the end"),
    _int("callbacks.model_checkpoint.save_top_k", 0, also=(-1,), what="best checkpoints kept"),
    _int("callbacks.alignment_grid.every_n_steps", 1, what="steps between alignment pictures"),
    _int("callbacks.alignment_grid.num_images", 1, 256, what="faces in the alignment picture"),
    _num("callbacks.transform_collapse.min_scale", 0, 1, what="smallest transform scale before a warning"),
    _num("callbacks.transform_collapse.min_output_std", 0, what="smallest output spread before a warning"),
    _num("callbacks.transform_collapse.max_perspective", 0, open_low=True, what="largest perspective term"),
    # the run
    _int("seed", 0, 2**32 - 1, nullable=True, what="random seed"),
)


def _select(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_resolution_failure=False,
                                throw_on_missing=False)
    except Exception:  # noqa: BLE001 - an interpolation only a running job can resolve (hydra:runtime...)
        return _ABSENT


def _keys(cfg: DictConfig, rule: Rule) -> Iterator[str]:
    if rule.key.endswith("[]"):  # every element of a list
        items = _select(cfg, rule.key[:-2])
        if isinstance(items, ListConfig):
            yield from (f"{rule.key[:-2]}[{i}]" for i in range(len(items)))
        return
    if not rule.key.startswith("{eval}."):
        yield rule.key
        return
    tail = rule.key[len("{eval}."):]
    yield f"eval.{tail}"
    extra = _select(cfg, "extra_eval")
    if isinstance(extra, DictConfig):
        for name in extra:
            yield f"extra_eval.{name}.{tail}"


def _value_text(value: Any) -> str:
    return "null" if value is None else str(value)


def settings_errors(cfg: DictConfig) -> list[str]:
    """One message per setting outside its range, in :data:`RULES` order, then the settings that
    contradict each other."""
    errors = []
    for rule in RULES:
        for key in _keys(cfg, rule):
            value = _select(cfg, key)
            if value is _ABSENT or (isinstance(value, str) and value == "???"):
                continue
            why = rule.violation(value)
            if why:
                errors.append(f"{key}={_value_text(value)} {why}: {rule.allowed()}"
                              + (f" ({rule.what})" if rule.what else ""))
    errors += _contradictions(cfg)
    return errors


def _contradictions(cfg: DictConfig) -> list[str]:
    def number(key: str) -> Any:
        value = _select(cfg, key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    errors = []
    low, high = number("data.min_images_per_identity"), number("data.max_images_per_identity")
    if low is not None and high is not None and high < low:
        errors.append(f"data.max_images_per_identity={high} is below data.min_images_per_identity={low}: "
                      "no identity could be used")
    return errors


def check_settings(cfg: DictConfig) -> None:
    """An :class:`~stn_face.errors.InputError` naming the first setting outside its allowed range."""
    errors = settings_errors(cfg)
    if errors:
        raise InputError(errors[0])


def exit_on_bad_settings(cfg: DictConfig) -> None:
    """``error: <the first bad setting>`` and exit 2 (what :func:`stn_face.errors.friendly_errors` does)."""
    errors = settings_errors(cfg)
    if errors:
        print(f"error: {errors[0]}", file=sys.stderr, flush=True)
        sys.exit(2)


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - Hydra always has it since 1.1
    _HydraCallback = object  # type: ignore[assignment,misc]


class CheckSettings(_HydraCallback):
    """Hydra callback: checks the composed config before Hydra makes the run folder (single runs) and
    before a sweep starts (its base settings; each job's own values are checked when it starts)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        exit_on_bad_settings(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        exit_on_bad_settings(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        exit_on_bad_settings(config)
