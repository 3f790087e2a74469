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

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from stn_face.config import CONF_DIR

# Keys of conf/prepare.yaml that are not arguments of prepare_collection.
_CLI_ONLY = ("input", "output")


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def _read_file_list(path: str) -> list[str]:
    """Relative image paths, one per line (blank lines and ``#`` comments ignored)."""
    file = Path(path).expanduser()
    if not file.is_file():
        _fail(f"files={path}: no such file; pass a text file with one path per line relative to input "
              "(e.g. Person/Person_0001.jpg), or a list files=[a/1.jpg,b/2.jpg]")
    lines = (line.split("#", 1)[0].strip() for line in file.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def run(cfg: DictConfig):
    """Validate the two paths and call :func:`stn_face.data.prepare.prepare_collection`."""
    from stn_face.data.prepare import PrepareError, prepare_collection

    for key in _CLI_ONLY:
        if OmegaConf.is_missing(cfg, key) or not cfg.get(key):
            _fail(f"missing {key}=DIR; usage: stn-face-prepare input=RAW_DIR output=PREPARED_DIR "
                  "(RAW_DIR holds <identity>/<image> folders)")
    options = OmegaConf.to_container(cfg, resolve=True)
    input_dir, output_dir = options.pop("input"), options.pop("output")
    if isinstance(options.get("files"), str):
        options["files"] = _read_file_list(options["files"])
    try:
        summary = prepare_collection(input_dir, output_dir, **options)
        if not options.get("progress", True):  # with progress on, prepare_collection printed it
            print(summary.format(), flush=True)
        return summary
    except PrepareError as error:
        if os.environ.get("STN_FACE_DEBUG"):
            raise
        _fail(str(error))
    except OSError as error:  # e.g. an output folder we may not write to
        if os.environ.get("STN_FACE_DEBUG"):
            raise
        _fail(str(error))
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished files are recorded in {output_dir}/manifest.csv; run the same "
              "command again to resume", file=sys.stderr, flush=True)
        sys.exit(130)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="prepare")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
