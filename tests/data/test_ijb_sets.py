"""IJB-B/IJB-C template verification (eval=ijb) on IJB-format meta files built from real LFW photos:
the numbers equal an independent computation, the media weighting is checked by hand, and bad meta
files are one error line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from stn_face.data.detect import MTCNNDetector, select_face
from stn_face.data.eval_sets import VerificationSet
from stn_face.data.ijb_sets import IJB_FARS, IJBTemplateSet, read_template_pairs
from stn_face.data.images import read_rgb
from stn_face.embedder import FaceEmbedder
from stn_face.errors import InputError
from stn_face.evaluation.scoring import build_eval_set, score_checkpoint, score_embeddings
from stn_face.evaluation.verification import far_key
from tests.helpers import expect_input_error, run_cli

PEOPLE = ["Ariel_Sharon", "Colin_Powell", "Donald_Rumsfeld", "George_W_Bush", "Gerhard_Schroeder", "Hugo_Chavez",
          "Jean_Chretien", "John_Ashcroft", "Junichiro_Koizumi", "Tony_Blair", "Serena_Williams", "Laura_Bush"]
# two templates per person from photos 1-6: media {1, 2} + {3}, and {4} + {5, 6}
TEMPLATE_MEDIA = [[[1, 2], [3]], [[4], [5, 6]]]


def _make_release(lfw_dir: Path, root: Path) -> dict:
    """An IJBC/ folder in the release's layout from LFW photos (symlinked as 1.jpg, 2.jpg, ...), its 5-point
    file from MTCNN on each photo; pairs: each person's two templates (same) and every pair of templates of
    different people (different)."""
    base = root / "IJBC"
    (base / "loose_crop").mkdir(parents=True)
    (base / "meta").mkdir()
    detector = MTCNNDetector()
    rows, marks, templates = [], [], {}
    image_number, template_id, media_id = 0, 100, 5000
    for person in PEOPLE:
        for media_list in TEMPLATE_MEDIA:
            template_id += 1
            templates[template_id] = person
            for photos in media_list:
                media_id += 1
                for photo in photos:
                    image_number += 1
                    name = f"{image_number}.jpg"
                    source = lfw_dir / "lfw-deepfunneled" / person / f"{person}_{photo:04d}.jpg"
                    (base / "loose_crop" / name).symlink_to(source)
                    rows.append((name, template_id, media_id))
                    image = read_rgb(source)
                    face = select_face(detector.detect(image), image.shape, "largest")
                    points = " ".join(f"{v:.3f}" for v in face.landmarks.ravel())
                    marks.append(f"{name} {points} {face.score:.4f}")
    (base / "meta" / "ijbc_face_tid_mid.txt").write_text("".join(f"{n} {t} {m}\n" for n, t, m in rows))
    (base / "meta" / "ijbc_name_5pts_score.txt").write_text("\n".join(marks) + "\n")
    ids = sorted(templates)
    pairs = [(a, b, int(templates[a] == templates[b])) for i, a in enumerate(ids) for b in ids[i + 1:]]
    (base / "meta" / "ijbc_template_pair_label.txt").write_text("".join(f"{a} {b} {s}\n" for a, b, s in pairs))
    return {"rows": rows, "pairs": pairs}


@pytest.fixture(scope="module")
def release(lfw_dir, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("ijb_release")
    return root, _make_release(lfw_dir, root)


def _config(root: Path, prepared: Path, **extra) -> dict:
    return {"_target_": "stn_face.data.eval_sets.VerificationSet", "name": "ijbc", "protocol": "ijb",
            "root": str(root), "variant": "ijbc", "pairs_file": None, "image_root": None,
            "prepared_root": str(prepared), "align": "mtcnn", **extra}


def _independent(features_by_name: dict[str, np.ndarray], rows, pairs, weights_by_name=None):
    """Template features by explicit loops (mean per media, summed over media, normalised), cosine scores."""
    media: dict[int, dict[int, list[np.ndarray]]] = {}
    for name, tid, mid in rows:
        f = features_by_name[name] / np.linalg.norm(features_by_name[name])
        if weights_by_name is not None:
            f = f * weights_by_name[name]
        media.setdefault(tid, {}).setdefault(mid, []).append(f)
    template = {}
    for tid, by_media in media.items():
        total = sum(np.mean(fs, axis=0) for fs in by_media.values())
        template[tid] = total / np.linalg.norm(total)
    scores = np.array([float(template[a] @ template[b]) for a, b, _ in pairs])
    labels = np.array([bool(s) for _, _, s in pairs])
    return scores, labels


def _tar(scores, labels, far):
    """TAR at FAR without the project's ROC code: the genuine share above the (k+1)-th highest impostor
    score, k = floor(FAR x impostors) false accepts allowed."""
    negatives = np.sort(scores[~labels])[::-1]
    k = math.floor(far * len(negatives) + 1e-9)
    return 1.0 if k >= len(negatives) else float(np.mean(scores[labels] > negatives[k]))


def test_ijb_from_lfw_equals_an_independent_computation(release, checkpoints, tmp_path):
    root, made = release
    eval_set = build_eval_set(_config(root, tmp_path / "prepared"))
    assert isinstance(eval_set, IJBTemplateSet)
    assert eval_set.pairs_file == str(root / "IJBC" / "meta" / "ijbc_template_pair_label.txt")
    metrics, scored = score_checkpoint(eval_set, checkpoints["projective"], progress=False)
    n_templates = len(PEOPLE) * 2
    assert metrics["n_pairs"] == n_templates * (n_templates - 1) // 2 and metrics["n_same"] == len(PEOPLE)
    assert len(eval_set.groups) == n_templates and len(eval_set.items) == len(made["rows"])
    # the independent side: the same embedder on the same crops, aggregated and scored by loops
    embedder = FaceEmbedder.from_checkpoint(checkpoints["projective"])
    crops = dict(zip(eval_set.sources, eval_set.items))
    names = [n for n, _, _ in made["rows"]]
    features = dict(zip(names, embedder.embed_files([crops[n] for n in names], progress=False)))
    scores, labels = _independent(features, made["rows"], made["pairs"])
    order = {(a, b): i for i, (a, b, _) in enumerate(made["pairs"])}
    ours = np.empty(len(scored.scores))
    for (left, right), score in zip(eval_set.pair_indices()[0], scored.scores):
        ours[order[(int(eval_set.groups[left]), int(eval_set.groups[right]))]] = score
    np.testing.assert_allclose(ours, scores, atol=2e-6)
    assert metrics["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    reported = metrics["tar_at_far"]
    assert set(reported) == {far_key(f) for f in IJB_FARS}
    measurable = [f for f in IJB_FARS if f * (~labels).sum() >= 1]
    assert measurable == [1e-2, 1e-1]  # 264 impostor pairs
    for far in measurable:
        assert reported[far_key(far)] == pytest.approx(_tar(scores, labels, far), abs=1e-9), far
    assert metrics["pairs_with_training_identities"] is None and metrics["skipped_pairs"] == 0
    json.dumps(metrics)


def test_landmark_alignment_uses_the_release_points(release, checkpoints, tmp_path):
    root, _ = release
    eval_set = build_eval_set(_config(root, tmp_path / "prepared", align="landmarks", max_pairs_per_fold=6))
    metrics, _ = score_checkpoint(eval_set, checkpoints["identity"], progress=False)
    assert metrics["n_same"] == 6 and metrics["n_diff"] == 6
    crop = read_rgb(eval_set.items[0])
    assert crop.shape == (128, 128, 3)  # the model's crop size, insightface's 5-point template
    assert all(Path(p).parent.name == "landmarks128" for p in eval_set.items)


def test_media_and_detector_score_weighting_by_hand(release, tmp_path):
    """Template 1: media A = {x1, x2}, media B = {x3}; template 2 = {x1}. With media weighting the feature
    of template 1 is normalise(mean(x1, x2) + x3) = (0.5, 0.5, 1) / 1.2247, so the score is 0.4082 (a flat
    mean over images would give 0.5774)."""
    base = tmp_path / "IJBC"
    (base / "meta").mkdir(parents=True)
    (base / "meta" / "ijbc_face_tid_mid.txt").write_text("a.jpg 1 10\nb.jpg 1 10\nc.jpg 1 11\nd.jpg 2 20\n")
    (base / "meta" / "ijbc_template_pair_label.txt").write_text("1 2 1\n")
    (base / "meta" / "ijbc_name_5pts_score.txt").write_text(
        "".join(f"{n} 1 1 2 1 1.5 2 1 3 2 3 {s}\n" for n, s in [("a.jpg", 1.0), ("b.jpg", 1.0),
                                                               ("c.jpg", 3.0), ("d.jpg", 0.5)]))
    np.savez(tmp_path / "e.npz", names=np.array(["a.jpg", "b.jpg", "c.jpg", "d.jpg"]),
             embeddings=np.eye(3)[[0, 1, 2, 0]] * np.array([[2.0], [1.0], [5.0], [1.0]]))
    _, scored = score_embeddings(build_eval_set(_config(tmp_path, tmp_path / "p")), tmp_path / "e.npz")
    assert float(scored.scores[0]) == pytest.approx(0.5 / math.sqrt(1.5), abs=1e-6)
    # with detector scores: c counts 3x: normalise((0.5, 0.5, 0) + (0, 0, 3)) . (1, 0, 0)
    _, scored = score_embeddings(build_eval_set(_config(tmp_path, tmp_path / "p", detector_score_weighting=True)),
                                        tmp_path / "e.npz")
    assert float(scored.scores[0]) == pytest.approx(0.5 / math.sqrt(0.5 + 9), abs=1e-6)


@pytest.mark.parametrize("content, message", [
    ("1 2\n", "line 1: '1 2' is not `template template label`"),
    ("1 2 1\n3 x 0\n", "line 2: '3 x 0'"),
    ("1 2 7\n", "label 7 is neither 0 nor 1"),
    ("", "is empty"),
])
def test_a_malformed_pair_file_names_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "ijbc_template_pair_label.txt"
    path.write_text(content)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("`", "`")) as info:
        read_template_pairs(path)
    assert str(path) in str(info.value)


def test_a_missing_release_or_meta_file_is_one_line(capsys, tmp_path, release):
    err = expect_input_error(capsys, build_eval_set, _config(tmp_path / "nowhere", tmp_path / "p"))
    assert "IJB template pair file not found" in err and "eval.root=DIR" in err and err.count("\n") == 1
    root, _ = release
    broken = tmp_path / "broken" / "IJBC"
    (broken / "meta").mkdir(parents=True)
    (broken / "meta" / "ijbc_template_pair_label.txt").write_text("101 102 1\n")
    (broken / "loose_crop").symlink_to(root / "IJBC" / "loose_crop")
    eval_set = build_eval_set(_config(tmp_path / "broken", tmp_path / "p"))
    err = expect_input_error(capsys, eval_set.load)
    assert "ijbc_face_tid_mid.txt" in err and "not found" in err
    (broken / "meta" / "ijbc_face_tid_mid.txt").write_text("../escape.jpg 101 1\n")
    err = expect_input_error(capsys, eval_set.load)
    assert "unsafe image name" in err


def test_unknown_variant_is_refused(tmp_path):
    with pytest.raises(InputError, match=r"eval\.variant='ijba' is not an IJB variant"):
        VerificationSet(name="x", protocol="ijb", pairs_file="p", image_root="i", prepared_root="r", variant="ijba")


@pytest.mark.slow
def test_cli_eval_ijb_writes_metrics_and_its_missing_root_exits_2(release, checkpoints, tmp_path):
    root, _ = release
    result = run_cli(["stn_face.cli.eval", f"ckpt={checkpoints['similarity']}", "eval=ijb", f"eval.root={root}",
                      "eval.variant=ijbc", f"eval.prepared_root={tmp_path / 'prepared'}",
                      f"hydra.run.dir={tmp_path / 'run'}"])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["tar_at_far"]) == {far_key(f) for f in IJB_FARS} and metrics["n_pairs"] == 276
    assert list((tmp_path / "run").glob("roc_*.png"))
    missing = run_cli(["stn_face.cli.eval", f"ckpt={checkpoints['similarity']}", "eval=ijb",
                       f"eval.root={tmp_path / 'absent'}", f"hydra.run.dir={tmp_path / 'run2'}"])
    assert missing.returncode == 2
    lines = [line for line in missing.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: IJB template pair file not found") and "Traceback" not in missing.stderr
