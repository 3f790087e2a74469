"""Features gathered by index: padding duplicates dropped, order restored."""

from __future__ import annotations

import torch

from stn_face.evaluation.collect import FeatureCollector


def test_duplicates_are_dropped_and_rows_sorted_by_index() -> None:
    collector = FeatureCollector()
    features = torch.arange(12, dtype=torch.float32).view(6, 2)
    # two "ranks" of a DistributedSampler over 5 items: interleaved, the last one padded with item 0
    collector.update(torch.tensor([0, 2, 4]), features[[0, 2, 4]])
    collector.update(torch.tensor([1, 3, 0]), features[[1, 3, 0]])
    indices, gathered = collector.compute()
    assert indices.tolist() == [0, 1, 2, 3, 4]
    assert torch.equal(gathered, features[:5])
    collector.reset()
    collector.update(torch.tensor([3, 1]), features[[3, 1]])
    assert collector.compute()[0].tolist() == [1, 3]  # a fresh evaluation starts empty
