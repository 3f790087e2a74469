"""The resumable sampler: order a pure function of (seed, epoch, position), ranks disjoint, resumes exact."""

from __future__ import annotations

import pytest

from stn_face.data.sampling import ResumableShuffleSampler


def test_same_seed_same_order_and_a_new_one_each_epoch() -> None:
    a, b = ResumableShuffleSampler(10, 2, seed=3), ResumableShuffleSampler(10, 2, seed=3)
    assert list(a) == list(b) and len(a) == 10
    first = list(a)
    a.set_epoch(1)
    assert sorted(i for i, _ in a) == list(range(10)) and list(a) != first


def test_ranks_share_one_permutation_without_padding() -> None:
    ranks = [ResumableShuffleSampler(11, 2, seed=0, rank=r, world_size=2) for r in range(2)]
    parts = [[i for i, _ in sampler] for sampler in ranks]
    assert [len(p) for p in parts] == [4, 4]  # 11 images: 2 whole batches of 2 on each rank, 3 left out
    assert not set(parts[0]) & set(parts[1])


def test_a_resumed_epoch_skips_the_batches_already_trained() -> None:
    whole = list(ResumableShuffleSampler(12, 3, seed=5, start_epoch=2))
    resumed = ResumableShuffleSampler(12, 3, seed=5, start_epoch=2, start_batch=2)
    assert list(resumed) == whole[6:]
    resumed.set_epoch(3)  # the next epoch is whole again
    assert len(list(resumed)) == 12


def test_too_few_images_for_one_batch() -> None:
    with pytest.raises(ValueError, match=r"lower data\.batch_size"):
        ResumableShuffleSampler(3, 2, world_size=2)
