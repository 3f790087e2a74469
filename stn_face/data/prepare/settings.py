"""What shapes a crop: :class:`CropSettings` (mode, size, margin, ...) and the record of the detector.

Both are written to ``prepare_settings.json`` and checked on every later run, so one output folder
never mixes two kinds of crops. The defaults of the crop settings live here only: ``conf/prepare.yaml``
takes them through :func:`register_config`, the data configs and the embedder through ``CropSettings()``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import Any

from stn_face.data.images import DEFAULT_MAX_PIXELS
from stn_face.errors import InputError

# This module imports no detector (nor torch, nor OpenCV): the stn-face-prepare command registers the
# defaults below before Hydra composes its config, and an `error:` exit should stay quick.

MODES = ("crop", "landmarks")
BORDERS = ("constant", "replicate")  # OpenCV's border modes of the same names (stn_face.data.prepare.crop)
#: Settings that decide what a photo may be (how large) rather than what its crop looks like: left out of
#: ``prepare_settings.json``, so raising ``max_pixels`` for one huge photo does not invalidate a folder.
UNRECORDED_FIELDS = ("max_pixels", "downscale_large")
#: Detector arguments that say where and how fast it runs, not which faces it finds: left out of the
#: detector record, so a folder prepared on a GPU can be resumed on the CPU. ``describe()`` keeps
#: them under ``runtime``, which is left out too.
RUN_ONLY_DETECTOR_KEYS = ("device", "batch_size", "num_threads", "pnet_pixels")
RUNTIME_KEY = "runtime"
#: The name under which :func:`register_config` stores the defaults for ``conf/prepare.yaml``.
CONFIG_NAME = "crop_settings"


class PrepareError(InputError):
    """Bad input for the preparation (paths, settings): the message names the problem and the fix."""


# Config files and command lines give ints where floats are meant (margin=1) or strings: one type per
# field, so the settings compare equal to the ones read back from prepare_settings.json.
_NUMBERS = {"size": int, "margin": float, "fallback_fraction": float, "fallback_size": int, "jpeg_quality": int,
            "max_pixels": int}


@dataclass(frozen=True)
class CropSettings:
    """Everything that decides what a crop looks like (saved in ``prepare_settings.json``).

    Built valid or not at all: the constructor converts numbers to their field's type and raises
    :class:`PrepareError` naming the bad value and the fix. ``max_pixels`` of 0 or None means no limit.
    """

    mode: str = "crop"
    size: int = 128
    margin: float = 1.3
    border: str = "constant"
    fallback_fraction: float = 0.6
    fallback_size: int | None = None
    face_selection: str = "largest"
    jpeg_quality: int = 95
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    downscale_large: bool = True

    def __post_init__(self) -> None:
        for name, kind in _NUMBERS.items():
            value = getattr(self, name)
            if value is None or (name == "max_pixels" and not value):
                object.__setattr__(self, name, None)
                continue
            try:
                object.__setattr__(self, name, kind(value))
            except (TypeError, ValueError):
                raise PrepareError(f"{name}={value!r} must be a number") from None
        object.__setattr__(self, "downscale_large", bool(self.downscale_large))
        self.validate()

    def validate(self) -> None:
        from stn_face.data.detect import SELECTION_POLICIES

        if self.mode not in MODES:
            raise PrepareError(f"mode={self.mode!r} is unknown; use mode=crop or mode=landmarks")
        if self.size <= 0:
            raise PrepareError(f"size={self.size} must be a positive number of pixels")
        if self.mode == "landmarks" and self.size % 112 and self.size % 128:
            raise PrepareError(f"mode=landmarks needs size to be a multiple of 112 or 128 (ArcFace template), "
                               f"got size={self.size}; e.g. size=112")
        if self.margin <= 0:
            raise PrepareError(f"margin={self.margin} must be positive (1.3 = 30% larger than the face box)")
        if self.border not in BORDERS:
            raise PrepareError(f"border={self.border!r} is unknown; use border=constant or border=replicate")
        if not 0 < self.fallback_fraction <= 1:
            raise PrepareError(f"fallback_fraction={self.fallback_fraction} must lie in (0, 1]")
        if self.fallback_size is not None and self.fallback_size <= 0:
            raise PrepareError(f"fallback_size={self.fallback_size} must be a positive number of pixels or null")
        if self.face_selection not in SELECTION_POLICIES:
            raise PrepareError(f"face_selection={self.face_selection!r} is unknown; use one of "
                               f"{', '.join(SELECTION_POLICIES)}")
        if not 1 <= self.jpeg_quality <= 100:
            raise PrepareError(f"jpeg_quality={self.jpeg_quality} must lie in 1..100")

    @classmethod
    def split(cls, options: Mapping[str, Any] | None) -> tuple[CropSettings, dict[str, Any]]:
        """The settings named in ``options`` (the others at their defaults) and the options left over.

        A data config's ``crop:`` block may hold other preparation options beside the crop settings
        (``exclude_identities``); they come back for :func:`prepare_collection`'s keywords.
        """
        options = dict(options or {})
        names = {f.name for f in fields(cls)}
        return cls(**{k: options.pop(k) for k in list(options) if k in names}), options

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def recorded(self) -> dict[str, Any]:
        """The fields that shape the crops, as ``prepare_settings.json`` records them."""
        return {k: v for k, v in asdict(self).items() if k not in UNRECORDED_FIELDS}


def register_config() -> None:
    """Store the defaults of :class:`CropSettings` in Hydra's config store as ``crop_settings``.

    ``conf/prepare.yaml`` lists it first in its defaults, so its top-level ``mode``, ``size``, ...
    keys are these fields with these defaults (a plain mapping, not the dataclass: a dataclass node
    would refuse the other keys of that file). Call before Hydra composes that config.
    """
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=CONFIG_NAME, node={f.name: f.default for f in fields(CropSettings)})


def detector_record(spec: Any, detector: Any = None) -> dict[str, Any]:
    """The JSON record of a detector in ``prepare_settings.json``: what decides which faces it finds.

    ``spec`` is what :func:`prepare_collection` was given: MTCNN keyword arguments (completed with
    their defaults, so ``detector=None`` and the config's explicit defaults record the same thing), a
    mapping with a ``_target_`` (as given) or a factory (by name). ``detector``, the built detector,
    adds its ``describe()`` (backend, weights digest) when it has one, so crops from another backend or
    other weights are never mixed into a folder. Arguments in :data:`RUN_ONLY_DETECTOR_KEYS` and
    ``describe()``'s ``runtime`` are left out.
    """
    if spec is None or (isinstance(spec, Mapping) and "_target_" not in spec):
        from stn_face.data.detect import MTCNNDetector

        defaults = {name: p.default for name, p in inspect.signature(MTCNNDetector).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        record = dict(sorted({**defaults, **dict(spec or {})}.items()))
    elif isinstance(spec, Mapping):
        record = dict(spec)
    elif isinstance(spec, partial):
        record = {"factory": getattr(spec.func, "__qualname__", repr(spec.func)), **spec.keywords}
    else:
        record = {"factory": getattr(spec, "__qualname__", repr(spec))}
    record = {k: v for k, v in record.items() if k not in RUN_ONLY_DETECTOR_KEYS}
    describe = getattr(detector, "describe", None)
    if callable(describe):
        record["describe"] = {k: v for k, v in describe().items() if k != RUNTIME_KEY}
    # through JSON: tuples become lists, as in the record read back from the file
    return json.loads(json.dumps(record, default=repr))
