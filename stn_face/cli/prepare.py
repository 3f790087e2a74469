"""``stn-face-prepare input=RAW_DIR output=PREPARED_DIR``: detect, crop and record every photo.

Examples::

    stn-face-prepare input=$STN_FACE_DATA/celeba-subset output=.cache/prepared/celeba-subset-crop128
    stn-face-prepare input=raw output=aligned mode=landmarks size=112 workers=4
    stn-face-prepare input=casia output=casia-crops exclude_identities=lfw-names.txt
    stn-face-prepare input=$STN_FACE_DATA/lfw/lfw-deepfunneled output=lfw-crops files=view2_files.txt

Settings live in ``conf/prepare.yaml``; see :mod:`stn_face.data.prepare` for the output layout.
Input problems (missing or empty input folder, output inside the input, bad settings) print one
``error:`` line naming the path and the fix, and exit with code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

from stn_face.cli.entry import hydra_command, run_module
from stn_face.data.prepare import register_config
from stn_face.errors import InputError, MissingInputError

register_config()  # conf/prepare.yaml's crop keys and their defaults are CropSettings's

# Keys of conf/prepare.yaml that are not arguments of prepare_collection.
_CLI_ONLY = ("input", "output")


def read_file_list(path: str) -> list[str]:
    """Relative image paths, one per line (blank lines and ``#`` comments ignored)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise MissingInputError(f"files={path}: no such file; pass a text file with one path per line relative to "
                                "input (e.g. Person/Person_0001.jpg), or a list files=[a/1.jpg,b/2.jpg]")
    lines = (line.split("#", 1)[0].strip() for line in file.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


@hydra_command("prepare")
def main(cfg):
    """Validate the two paths and call :func:`stn_face.data.prepare.prepare_collection`."""
    from omegaconf import OmegaConf

    for key in _CLI_ONLY:
        if OmegaConf.is_missing(cfg, key) or not cfg.get(key):
            raise InputError(f"missing {key}=DIR; usage: stn-face-prepare input=RAW_DIR output=PREPARED_DIR "
                             "(RAW_DIR holds <identity>/<image> folders)")
    from stn_face.data.prepare import CropSettings, prepare_collection  # the detector: torch (seconds)
    options = OmegaConf.to_container(cfg, resolve=True)
    input_dir, output_dir = options.pop("input"), options.pop("output")
    if isinstance(options.get("files"), str):
        options["files"] = read_file_list(options["files"])
    try:
        settings, options = CropSettings.split(options)
        summary = prepare_collection(input_dir, output_dir, settings, **options)
    except OSError as error:  # e.g. an output folder we may not write to
        if isinstance(error, InputError):
            raise
        raise InputError(f"{error}; choose an output folder you can write to") from None
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished files are recorded in {output_dir}/manifest.csv; run the same "
              "command again to resume", file=sys.stderr, flush=True)
        sys.exit(130)
    if not options.get("progress", True):  # with progress on, prepare_collection printed it
        print(summary.format(), flush=True)
    return summary


if __name__ == "__main__":
    run_module(main)
