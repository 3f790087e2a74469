"""The YouTube Faces protocol: videos as groups of their frames, in frame order, subsampled evenly."""

from __future__ import annotations

from pathlib import Path

import pytest

from stn_face.data.eval_sets import VerificationSet
from stn_face.data.protocols import MissingImagesError
from stn_face.data.ytf_sets import YTFVideoSet


def _ytf(tmp_path: Path, videos: dict[str, int], **options) -> VerificationSet:
    for video, frames in videos.items():
        (tmp_path / video).mkdir(parents=True)
        for i in range(1, frames + 1):
            (tmp_path / video / f"{i}.{i}.jpg").write_bytes(b"")
    splits = tmp_path / "splits.txt"
    splits.write_text("split number, pair number, first name, second name, is same:\n"
                      "1, 1, A/1, A/2, 1\n1, 2, A/1, B/1, 0\n2, 3, B/1, B/2, 1\n2, 4, A/2, B/2, 0\n")
    return VerificationSet(name="ytf", protocol="ytf", pairs_file=str(splits), image_root=str(tmp_path),
                           prepared_root=str(tmp_path / "crops"), **options)


def test_frames_in_number_order_evenly_subsampled(tmp_path: Path) -> None:
    eval_set = _ytf(tmp_path, {"A/1": 12, "A/2": 3, "B/1": 2, "B/2": 2}, max_frames=4).load()
    assert isinstance(eval_set, YTFVideoSet) and eval_set.group_noun == "videos"
    assert eval_set.groups == ["A/1", "A/2", "B/1", "B/2"]
    assert eval_set.members("A/1") == ["A/1/1.1.jpg", "A/1/5.5.jpg", "A/1/8.8.jpg", "A/1/12.12.jpg"]
    assert len(eval_set.sources) == 4 + 3 + 2 + 2 and eval_set.item_group.tolist()[:5] == [0, 0, 0, 0, 1]
    assert [p.fold for p in eval_set.pairs] == [0, 0, 1, 1]
    assert eval_set.embedding_groups("A/1/3.3.jpg") == ["A/1/3.3.jpg", "A/1"]


def test_missing_videos_stop_or_are_skipped(tmp_path: Path) -> None:
    with pytest.raises(MissingImagesError, match="1 of 4 video folders"):
        _ytf(tmp_path, {"A/1": 2, "A/2": 2, "B/1": 2}).load()
    eval_set = _ytf(tmp_path / "again", {"A/1": 2, "A/2": 2, "B/1": 2}, allow_missing=True).load()
    assert eval_set.skipped_pairs == 2 and len(eval_set.pairs) == 2
