"""Writing files so that a killed process leaves the old file or the new one, never half of one.

One helper for every result file the project replaces (metrics.json, ROC files, checkpoints, manifests,
crops, ``.bin`` sets): the data goes to a temporary file beside the target (same file system), is
flushed to disk, then ``os.replace`` puts it in place. The temporary file is created with the usual
permissions (``0o666`` less the umask, like ``open(path, "w")``), so results stay readable by the
group on a shared machine (``tempfile.mkstemp`` would make them owner-only). Torch-free.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", fsync: bool = True,
                 **open_kwargs: Any) -> Iterator[IO[Any]]:
    """``with atomic_write(path, "w" | "wb") as handle:`` write to ``handle``; ``path`` appears complete on exit.

    On an exception (or a kill) the temporary file is removed and ``path`` is left as it was. The
    parent folder is created. ``fsync=False`` skips the flush to disk (thousands of small crops: a
    power cut may then lose the newest files, never leave half of one under its name). ``open_kwargs``
    go to :func:`open` (``newline=""``, ``encoding=...``).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes whole files: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        if "b" not in mode:
            open_kwargs.setdefault("encoding", "utf-8")
        with open(descriptor, mode, **open_kwargs) as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
