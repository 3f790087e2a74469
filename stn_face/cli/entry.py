"""The one entry helper of every ``stn-face-*`` command.

It sets the process environment once, turns input problems into one ``error:`` line with exit code 2
(:func:`stn_face.errors.friendly_errors`) and hands the command's result back to the caller:

- :func:`hydra_command` makes a Hydra command from ``run(cfg) -> result``; the decorated function
  returns ``run``'s result when called with a config (tests, sweepers) and nothing from a console script;
  a config Hydra cannot compose exits with 2 too;
- :func:`argparse_command` does the same for commands with ordinary flags: ``run(argv) -> exit code``.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from stn_face.errors import friendly_errors

#: Set (unless the user set them) before any library is imported by a command.
ENVIRONMENT = {
    "NO_ALBUMENTATIONS_UPDATE": "1",  # albumentations would otherwise check for updates on import
}


def set_environment() -> None:
    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)


def hydra_command(config_name: str) -> Callable[[Callable[[Any], Any]], Callable[..., Any]]:
    """Decorator: ``run(cfg)`` becomes the ``main`` of a Hydra command composed from ``conf/<config_name>``."""
    set_environment()

    def decorate(run: Callable[[Any], Any]) -> Callable[..., Any]:
        import hydra

        from stn_face.config import CONF_DIR

        started = []

        @hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)
        def hydra_main(cfg):
            started.append(True)
            with friendly_errors():
                return run(cfg)

        @functools.wraps(run)
        def main(cfg=None):
            if cfg is not None:  # a composed config (tests, other programs): run it directly
                return hydra_main(cfg)
            try:
                return hydra_main()
            except SystemExit as exit_:
                # Hydra reports a config it cannot compose (an unknown option, a bad override) and exits
                # with 1; that is an input error like ours, so it gets the same exit code
                if exit_.code == 1 and not started:
                    sys.exit(2)
                raise

        return main

    return decorate


def argparse_command(run: Callable[[Sequence[str] | None], int | None]) -> Callable[..., int]:
    """Decorator: ``run(argv) -> exit code`` becomes a ``main`` with the same environment and errors."""

    @functools.wraps(run)
    def main(argv: Sequence[str] | None = None) -> int:
        set_environment()
        with friendly_errors():
            return int(run(argv) or 0)

    return main


def run_module(main: Callable[..., Any]) -> None:
    """``python -m stn_face.cli.<command>``: run ``main`` and exit with its code (Hydra commands exit 0)."""
    result = main()
    sys.exit(result if isinstance(result, int) else 0)
