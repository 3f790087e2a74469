"""The YouTube Faces protocol: ``splits.txt`` pairs of videos, a video a group of its frames."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stn_face.data.eval_sets import VerificationSet, register_protocol
from stn_face.data.protocols import Pair, read_ytf_splits
from stn_face.errors import MissingInputError

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")


@register_protocol("ytf")
@dataclass
class YTFVideoSet(VerificationSet):
    """YouTube Faces: pairs of ``Name/video`` folders in 10 splits; a video's items are its frames
    (evenly subsampled to ``max_frames``), and an embeddings row of a frame counts for its video."""

    group_noun = "videos"
    group_path = "video"

    def read_pairs(self) -> list[Pair]:
        return read_ytf_splits(self.pairs_file)

    def members(self, video: str) -> list[str]:
        folder = Path(self.image_root) / video
        frames = sorted((p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS),
                        key=lambda p: _frame_number(p.name))
        if not frames:
            raise MissingInputError(f"YTF video folder {folder} holds no frames")
        if self.max_frames is not None and len(frames) > self.max_frames:
            picks = np.linspace(0, len(frames) - 1, self.max_frames).round().astype(int)
            frames = [frames[i] for i in picks]
        return [f"{video}/{p.name}" for p in frames]

    def embedding_groups(self, name: str) -> list[str]:
        # a frame ``Person/1/1.2.jpg`` also counts for its video folder ``Person/1``
        return [name, name.rsplit("/", 1)[0]] if "/" in name else [name]


def _frame_number(name: str) -> tuple[int, str]:
    parts = name.split(".")
    try:
        return int(parts[1]), name
    except (IndexError, ValueError):
        return 0, name
