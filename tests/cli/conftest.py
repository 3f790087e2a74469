"""Fixtures of the command tests: real LFW photos, real CelebA-subset crops and their .rec pack
(tests/packed_helpers.py)."""

import pytest

from tests.packed_helpers import celeba_crops, celeba_pack  # noqa: F401 - fixtures


@pytest.fixture(scope="module")
def photos(lfw_dir):
    """The raw deep-funneled LFW photos (identity folders)."""
    return lfw_dir / "lfw-deepfunneled"
