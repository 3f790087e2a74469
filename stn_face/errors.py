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


def input_error_types() -> tuple[type[BaseException], ...]:
    from stn_face.checkpoint import CheckpointMismatchError
    from stn_face.data.datasets import EmptyDatasetError
    from stn_face.data.images import ImageReadError
    from stn_face.data.prepare import PrepareError
    from stn_face.data.protocols import MissingImagesError, ProtocolFormatError

    extra: list[type[BaseException]] = [EmptyDatasetError, MissingImagesError, ProtocolFormatError, PrepareError,
                                        ImageReadError, CheckpointMismatchError]
    try:
        from omegaconf.errors import OmegaConfBaseException

        extra.append(OmegaConfBaseException)
    except ImportError:  # pragma: no cover
        pass
    try:
        from hydra.errors import HydraException

        extra.append(HydraException)
    except ImportError:  # pragma: no cover
        pass
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
