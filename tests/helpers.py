"""Test helpers: small real datasets prepared once into the writable cache, and CLI runners."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from stn_face.paths import REPO_ROOT, cache_dir

LFW_TRAIN_PEOPLE = ["Ariel_Sharon", "Colin_Powell", "Donald_Rumsfeld", "George_W_Bush", "Gerhard_Schroeder",
                    "Hugo_Chavez", "Jean_Chretien", "John_Ashcroft", "Junichiro_Koizumi", "Tony_Blair"]


def prepare_small_lfw(lfw_dir: Path, per_identity: int = 6, people=LFW_TRAIN_PEOPLE) -> Path:
    """MTCNN crops of ``per_identity`` images of each of ``people`` (cached, resumable)."""
    from stn_face.data.prepare import prepare_collection

    files = [f"{name}/{name}_{i:04d}.jpg" for name in people for i in range(1, per_identity + 1)]
    out = cache_dir() / "prepared" / "lfw-crop128"
    # a cache, like the training data's: crops of another detector or settings are made again
    prepare_collection(lfw_dir / "lfw-deepfunneled", out, files=files, workers=2, progress=False, replace_stale=True)
    return out


def run_cli(args: list[str], timeout: float = 600, env: dict | None = None, cwd: Path | None = None):
    """Run ``python -m <module> args`` with the test environment; returns the CompletedProcess."""
    full_env = dict(os.environ)
    full_env.update({"NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONUNBUFFERED": "1"})
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd or REPO_ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
