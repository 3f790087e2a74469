"""Verification sets and the protocol registry: a protocol registered from a test is built from its
config, fed embeddings and scored, with nothing outside its own class naming it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from stn_face.data import eval_sets
from stn_face.data.eval_sets import (
    LFWPairsSet,
    MissingEmbeddingsError,
    VerificationSet,
    first_per_fold,
    protocol_class,
    register_protocol,
    registered_protocols,
)
from stn_face.data.protocols import Pair
from stn_face.evaluation.scoring import build_eval_set, score_embeddings
from stn_face.evaluation.verification import evaluate_verification, l2_normalize

TEMPLATES = {"t0": ["A/a0.jpg", "A/a1.jpg"], "t1": ["A/a2.jpg"], "t2": ["B/b0.jpg", "B/b1.jpg"],
             "t3": ["B/b2.jpg"], "t4": ["C/c0.jpg"], "t5": ["C/c1.jpg", "C/c2.jpg"]}
PAIRS = [("t0", "t1", 1, 0), ("t0", "t2", 0, 0), ("t2", "t3", 1, 1), ("t1", "t4", 0, 1),
         ("t4", "t5", 1, 2), ("t3", "t5", 0, 2)]


@pytest.fixture
def template_protocol(monkeypatch):
    """A small template protocol (like IJB: a template is a group of images, pairs compare templates),
    registered for this test only."""
    monkeypatch.setattr(eval_sets, "_PROTOCOLS", dict(eval_sets._PROTOCOLS))

    @register_protocol("templates")
    @dataclass
    class TemplateSet(VerificationSet):
        group_noun = "templates"

        def _templates(self) -> dict[str, list[str]]:
            lines = Path(self.pairs_file).with_suffix(".templates").read_text().splitlines()
            return {name: images.split() for name, images in (line.split(":") for line in lines)}

        def read_pairs(self) -> list[Pair]:
            rows = [line.split() for line in Path(self.pairs_file).read_text().splitlines()]
            return [Pair(left, right, same == "1", int(fold)) for left, right, same, fold in rows]

        def members(self, template: str) -> list[str]:
            return self._templates()[template]

        def embedding_groups(self, name: str) -> list[str]:  # an image counts for every template holding it
            return [t for t, images in self._templates().items() if name in images]

    return TemplateSet


def _write_protocol(folder: Path) -> Path:
    pairs = folder / "tiny.txt"
    pairs.write_text("".join(f"{a} {b} {s} {f}\n" for a, b, s, f in PAIRS))
    pairs.with_suffix(".templates").write_text("".join(f"{t}: {' '.join(i)}\n" for t, i in TEMPLATES.items()))
    return pairs


def test_a_protocol_registered_by_a_test_is_built_and_scored(template_protocol, tmp_path: Path) -> None:
    assert "templates" in registered_protocols() and protocol_class("templates") is template_protocol
    pairs_file = _write_protocol(tmp_path)
    config = {"_target_": "stn_face.data.eval_sets.VerificationSet", "name": "tiny", "protocol": "templates",
              "pairs_file": str(pairs_file), "image_root": str(tmp_path), "prepared_root": str(tmp_path / "crops")}
    eval_set = build_eval_set(config)
    assert type(eval_set) is template_protocol

    images = sorted({image for members in TEMPLATES.values() for image in members})
    embeddings = np.random.default_rng(0).normal(size=(len(images), 8))
    np.savez(tmp_path / "emb.npz", names=np.array(images), embeddings=embeddings)
    metrics, scored = score_embeddings(eval_set, tmp_path / "emb.npz")

    row = {name: l2_normalize(e) for name, e in zip(images, embeddings)}
    feature = {t: l2_normalize(np.mean([row[i] for i in members], axis=0)) for t, members in TEMPLATES.items()}
    expected = np.round([feature[a] @ feature[b] for a, b, _, _ in PAIRS], 6)
    assert np.allclose(scored.scores, expected)
    labels, folds = np.array([p[2] for p in PAIRS], bool), np.array([p[3] for p in PAIRS])
    assert metrics["accuracy_mean"] == evaluate_verification(expected, labels, folds)["accuracy_mean"]
    assert metrics["n_pairs"] == 6 and metrics["skipped_pairs"] == 0 and metrics["eval"] == "tiny"

    # a template without any embedded image: an error naming templates, or its pairs skipped and counted
    keep = [i for i, name in enumerate(images) if name not in TEMPLATES["t4"]]
    np.savez(tmp_path / "part.npz", names=np.array(images)[keep], embeddings=embeddings[keep])
    with pytest.raises(MissingEmbeddingsError, match="1 of 6 templates"):
        score_embeddings(build_eval_set(config), tmp_path / "part.npz")
    metrics, _ = score_embeddings(build_eval_set(dict(config, allow_missing=True)), tmp_path / "part.npz")
    assert (metrics["n_pairs"], metrics["skipped_pairs"]) == (4, 2)


def test_the_protocol_name_chooses_the_class(lfw_dir: Path, tmp_path: Path) -> None:
    common = {"pairs_file": str(lfw_dir / "pairsDevTest.txt"), "image_root": str(lfw_dir), "prepared_root": str(tmp_path)}
    assert type(VerificationSet(name="v1", protocol="lfw", **common)) is LFWPairsSet
    assert type(VerificationSet("v1", "lfw", **common)) is LFWPairsSet  # positional, as before
    assert protocol_class("ytf").__name__ == "YTFVideoSet" and protocol_class("bin").__name__ == "BinVerificationSet"
    assert protocol_class("ijb").__name__ == "IJBTemplateSet"
    with pytest.raises(ValueError, match=r"unknown verification protocol 'megaface'.*bin, ijb, lfw, ytf"):
        VerificationSet(name="x", protocol="megaface", **common)
    with pytest.raises(ValueError, match="not LFWPairsSet's"):
        LFWPairsSet(name="x", protocol="ytf", **common)


def test_first_per_fold_keeps_file_order() -> None:
    pairs = [Pair(f"l{i}", f"r{i}", i % 2 == 0, i // 4) for i in range(12)]
    kept = first_per_fold(pairs, 1)
    assert [(p.fold, p.same) for p in kept] == [(0, True), (0, False), (1, True), (1, False), (2, True), (2, False)]
    assert kept == sorted(kept, key=pairs.index)
