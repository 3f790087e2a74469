"""Turn input problems into one clear message and exit code 2 instead of a Python traceback."""

from __future__ import annotations

import contextlib
import os
import sys

from stn_face.paths import DataNotFoundError


class InputError(Exception):
    """Something the user passed (an option, a file, a folder) cannot be used; the message says why and
    what to do."""


class CheckpointError(InputError):
    """A checkpoint that cannot be used: not a checkpoint, or its weights do not fit its architecture."""


# Exceptions that mean "the user gave us something wrong" (paths, configs, data) rather than a bug.
INPUT_ERRORS: tuple[type[BaseException], ...] = (DataNotFoundError, FileNotFoundError, NotADirectoryError,
                                                 InputError)


# (module, class name) of the other input errors. They are looked up only in modules already imported:
# an exception can only come from a module that was loaded, and importing e.g. the checkpoint code
# here would pull torch into every quick `error:` exit.
_INPUT_ERROR_NAMES = (
    ("stn_face.checkpoint", "CheckpointMismatchError"),
    ("stn_face.data.datasets", "EmptyDatasetError"),
    ("stn_face.data.images", "ImageReadError"),
    ("stn_face.data.prepare", "PrepareError"),
    ("stn_face.data.protocols", "MissingImagesError"),
    ("stn_face.data.protocols", "ProtocolFormatError"),
    ("stn_face.data.recordio", "RecordIOError"),
    ("omegaconf.errors", "OmegaConfBaseException"),
    ("hydra.errors", "HydraException"),
)


def input_error_types() -> tuple[type[BaseException], ...]:
    """The exception classes that mean a user input problem (of the modules loaded so far)."""
    extra = []
    for module_name, class_name in _INPUT_ERROR_NAMES:
        module = sys.modules.get(module_name)
        if module is not None and isinstance(getattr(module, class_name, None), type):
            extra.append(getattr(module, class_name))
    return INPUT_ERRORS + tuple(extra)


@contextlib.contextmanager
def friendly_errors():
    """Print ``error: <message>`` for input problems and exit 2; ``STN_FACE_DEBUG=1`` re-raises."""
    try:
        yield
    except input_error_types() as error:
        if os.environ.get("STN_FACE_DEBUG"):
            raise
        message = str(error).strip() or type(error).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
