"""Turn input problems into one clear message and exit code 2 instead of a Python traceback.

Every exception that means "the user gave us something we cannot use" derives from :class:`InputError`;
its message names the input and the fix. This module imports nothing heavy, so a quick ``error:`` exit
never pays for torch.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any


class InputError(Exception):
    """Something the user passed (an option, a file, a folder) cannot be used; the message says why and
    what to do."""


class MissingInputError(InputError, FileNotFoundError):
    """A file or folder the user named (or that a config names) does not exist."""


class CheckpointError(InputError):
    """A checkpoint that cannot be used: not a checkpoint, or its weights do not fit its architecture."""


class UntrustedFileError(CheckpointError):
    """A checkpoint or weights file that needs more than tensors and plain data to load: it names code to
    import (which unpickling would run), so it is refused unless the user opts in (``trust_checkpoint=true``
    on the command line, ``trust=True`` in Python)."""


class HostileInputError(InputError):
    """A data file (``.rec``/``.idx``, ``.bin``, ``.npz``, manifest, pair file) that is damaged or claims
    more than it holds: one message naming the file and the problem, nothing allocated for the claim."""


def require_input(value: Any, message: str) -> Any:
    """``value``, or an :class:`InputError` with ``message`` when it is missing / empty."""
    if value is None or value == "" or value == "???":
        raise InputError(message)
    return value


def require_image_file(path: str | os.PathLike, label: str) -> Path:
    """An existing file, or an input error naming the option (``a=...``)."""
    file = Path(path).expanduser()
    if not file.exists():
        raise MissingInputError(f"{label}={path}: image not found")
    if file.is_dir():
        raise InputError(f"{label}={path} is a folder; pass one image file")
    return file


def _config_error_types() -> tuple[type[BaseException], ...]:
    # Hydra / OmegaConf errors inside a command (a missing `???` value, a bad interpolation) are config
    # input errors too; they are only looked up when their package is already loaded.
    module = sys.modules.get("omegaconf.errors")
    return (module.OmegaConfBaseException,) if module is not None else ()


def input_error_in(error: BaseException) -> BaseException | None:
    """``error`` itself when it is an input error, or the input error it wraps (Hydra's instantiate
    re-raises a constructor's errors inside its own exception), else None."""
    kinds = (InputError, *_config_error_types())
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, InputError):
            return current
        seen.add(id(current))
        current = current.__cause__
    return error if isinstance(error, kinds) else None


@contextlib.contextmanager
def friendly_errors():
    """Print ``error: <message>`` for input problems and exit 2; ``STN_FACE_DEBUG=1`` re-raises."""
    try:
        yield
    except Exception as raised:
        error = input_error_in(raised)
        if error is None or os.environ.get("STN_FACE_DEBUG"):
            raise
        message = str(error).strip() or type(error).__name__
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)
