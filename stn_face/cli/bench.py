"""``stn-face-bench``: the CPU benchmark suite (``make bench``). The benchmarks live outside the package, in
the source checkout's ``benchmarks/`` (as timm keeps its benchmark script outside ``timm/``); from an
installed wheel, where that folder does not exist, the command says so and exits 2."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from stn_face.cli.entry import argparse_command, run_module
from stn_face.errors import InputError
from stn_face.paths import REPO_ROOT


@argparse_command
def main(argv: Sequence[str] | None = None) -> int:
    if not (REPO_ROOT / "benchmarks" / "cpu.py").is_file():
        raise InputError(
            "stn-face-bench runs from a source checkout (its benchmarks/ folder is not part of the "
            "installed package): clone the repository and run `make bench` there"
        )
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from benchmarks import cpu

    return cpu.main(argv)


if __name__ == "__main__":
    run_module(main)
