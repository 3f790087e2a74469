"""Fixtures of the command tests: real CelebA-subset crops and their .rec pack (tests/packed_helpers.py)."""

from tests.packed_helpers import celeba_crops, celeba_pack  # noqa: F401 - fixtures
