"""``stn-face-eval``: a checkpoint or precomputed embeddings, scored on real LFW View 2 and YTF pairs."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from stn_face.cli import eval as evaluate_cli
from stn_face.evaluation import scoring
from tests.helpers import CLI_ENV, compose_cli, expect_input_error, run_cli

pytestmark = [pytest.mark.data, pytest.mark.usefixtures("one_thread")]

PER_FOLD = 15  # the view2_crops fixture: 15 same + 15 different pairs per fold = 300 pairs


def eval_cfg(tmp_path, *overrides):
    return compose_cli("evaluate", [f"paths.output_dir={tmp_path}", "progress=false", *overrides])


@pytest.mark.slow
def test_embed_npz_eval_round_trip_matches_checkpoint_evaluation(checkpoints, view2_crops, data_dir, tmp_path):
    root, names = view2_crops
    ckpt = checkpoints["projective"]
    npz = tmp_path / "lfw.npz"
    # flip=false halves the work here; flip-summing is tested in test_embedder
    result = run_cli(["stn_face.cli.embed", f"ckpt={ckpt}", f"input={root}", f"output={npz}", "cropped=true",
                      "flip=false", "progress=false"], env=CLI_ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    with np.load(npz) as data:
        assert sorted(data["names"].tolist()) == sorted(names)  # relative to the image root
        assert data["embeddings"].shape == (len(names), 128) and data["embeddings"].dtype == np.float32
    run_dir = tmp_path / "eval-npz"
    result = run_cli(["stn_face.cli.eval", f"embeddings={npz}", "eval=lfw", f"eval.pairs={data_dir}/lfw/pairs.txt",
                      f"eval.max_pairs_per_fold={PER_FOLD}", f"hydra.run.dir={run_dir}"], env=CLI_ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n_pairs"] == 20 * PER_FOLD and metrics["n_folds"] == 10
    for key in ("accuracy_mean", "accuracy_std", "auc", "eer", "tar_at_far"):
        assert key in metrics
    assert (run_dir / "roc_lfw.png").stat().st_size > 20_000  # with the published curves
    assert "accuracy" in result.stdout and "AUC" in result.stdout
    # ckpt= (crops from the shared cache, embedded in process) scores the first pairs like the .npz does
    few = "eval.max_pairs_per_fold=2"
    # the tiny checkpoints are trained on four LFW people: scoring them on View 2 is knowingly allowed here
    direct = evaluate_cli.main(eval_cfg(tmp_path / "eval-ckpt", f"ckpt={ckpt}", "eval=lfw", few, "flip=false",
                                        "eval.allow_identity_overlap=true"))
    from_npz = evaluate_cli.main(eval_cfg(tmp_path / "eval-npz-few", f"embeddings={npz}", "eval=lfw", few))
    assert direct["n_pairs"] == from_npz["n_pairs"] == 40
    assert direct["accuracy_mean"] == pytest.approx(from_npz["accuracy_mean"], abs=0.02)
    assert direct["auc"] == pytest.approx(from_npz["auc"], abs=1e-3)


def test_raw_pixels_of_another_model_score_like_a_weak_baseline(view2_crops, data_dir, tmp_path, capsys):
    """Embeddings of any model: 32x32 grayscale pixels of the crops, no STN, reach roughly 60-70 %."""
    root, names = view2_crops
    pixels = [cv2.resize(cv2.imread(str(root / n), cv2.IMREAD_GRAYSCALE), (32, 32), interpolation=cv2.INTER_AREA)
              for n in names]
    npz = tmp_path / "pixels.npz"
    np.savez(npz, names=np.asarray(names), embeddings=np.stack(pixels).reshape(len(names), -1).astype(np.float32))
    metrics = evaluate_cli.main(eval_cfg(tmp_path, f"embeddings={npz}", "eval=lfw",
                                         f"eval.pairs={data_dir}/lfw/pairs.txt", f"eval.max_pairs_per_fold={PER_FOLD}"))
    assert 0.58 <= metrics["accuracy_mean"] <= 0.72, metrics["accuracy_mean"]
    assert 0.55 <= metrics["auc"] <= 0.8
    assert json.loads((tmp_path / "metrics.json").read_text())["accuracy_mean"] == metrics["accuracy_mean"]
    assert "accuracy" in capsys.readouterr().out


def test_missing_embeddings_are_one_clear_error(view2_crops, tmp_path, capsys):
    _, names = view2_crops
    npz = tmp_path / "partial.npz"
    random = np.random.default_rng(0).normal(size=(len(names) - 10, 4)).astype(np.float32)
    np.savez(npz, names=np.asarray(names[10:]), embeddings=random)
    cfg = eval_cfg(tmp_path, f"embeddings={npz}", "eval=lfw", f"eval.max_pairs_per_fold={PER_FOLD}")
    message = expect_input_error(capsys, evaluate_cli.main, cfg)
    assert f"10 of {len(names)} images" in message and names[0] in message and "allow_missing" in message
    bad = tmp_path / "bad.npz"
    np.savez(bad, features=np.ones((2, 2)))
    message = expect_input_error(capsys, evaluate_cli.main, eval_cfg(tmp_path, f"embeddings={bad}", "eval=lfw"))
    assert "`names`" in message and "`embeddings`" in message
    # with the opt-in, the pairs that can be scored are
    metrics = evaluate_cli.main(eval_cfg(tmp_path, f"embeddings={npz}", "eval=lfw", "eval.allow_missing=true",
                                         f"eval.max_pairs_per_fold={PER_FOLD}"))
    assert metrics["skipped_pairs"] > 0 and metrics["n_pairs"] + metrics["skipped_pairs"] == 20 * PER_FOLD


def test_eval_pairs_is_the_pair_file_option(data_dir, tmp_path):
    cfg = eval_cfg(tmp_path, "embeddings=x.npz", "eval=lfw_view1", f"eval.pairs={data_dir}/lfw/pairs.txt")
    eval_set = scoring.build_eval_set(cfg.eval)
    assert eval_set.pairs_file.endswith("pairs.txt") and eval_set.name == "lfw_view1"
    assert scoring.build_eval_set(eval_cfg(tmp_path, "eval=ytf").eval).pairs_file.endswith("splits.txt")


@pytest.mark.slow
def test_ytf_scores_the_available_pair_only_with_the_opt_in(checkpoints, tmp_path, capsys):
    ckpt = checkpoints["similarity"]
    cfg = eval_cfg(tmp_path, f"ckpt={ckpt}", "eval=ytf", "eval.max_frames=3")
    message = expect_input_error(capsys, evaluate_cli.main, cfg)
    assert "missing" in message and "eval.allow_missing=true" in message
    metrics = evaluate_cli.main(eval_cfg(tmp_path, f"ckpt={ckpt}", "eval=ytf", "eval.allow_missing=true",
                                         "eval.max_frames=3"))
    assert metrics["n_pairs"] == 1 and metrics["skipped_pairs"] == 4999 and metrics["n_same"] == 1
    assert metrics["auc"] is None and metrics["eer"] is None
    out = capsys.readouterr().out
    assert "skipped pairs" in out and "4999 of 5000" in out
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["n_pairs"] == 1 and saved["auc"] is None
    # precomputed frame embeddings group into their videos the same way
    npz = tmp_path / "ytf.npz"
    frames = ["Alek_Wek/1/1.10.jpg", "Alek_Wek/1/1.20.jpg", "Alek_Wek/4/4.5.jpg"]
    np.savez(npz, names=np.asarray(frames), embeddings=np.eye(3, 4, dtype=np.float32))
    metrics = evaluate_cli.main(eval_cfg(tmp_path, f"embeddings={npz}", "eval=ytf", "eval.allow_missing=true"))
    assert metrics["n_pairs"] == 1 and metrics["skipped_pairs"] == 4999


def test_a_second_evaluation_reads_the_pixel_pack_and_scores_the_same(checkpoints, tmp_path):
    ckpt, packs = checkpoints["affine"], tmp_path / "packs"
    common = (f"ckpt={ckpt}", "eval=lfw", "eval.max_pairs_per_fold=3", "eval.allow_identity_overlap=true")
    first = evaluate_cli.main(eval_cfg(tmp_path / "first", *common, f"pixel_cache={packs}"))
    [array_file] = packs.glob("pixels-128-*.npy")
    written = array_file.stat().st_mtime_ns
    shape = np.load(array_file, mmap_mode="r").shape  # one row per image the 60 pairs name
    assert shape[1:] == (128, 128, 3) and first["n_pairs"] < shape[0] <= 2 * first["n_pairs"]
    second = evaluate_cli.main(eval_cfg(tmp_path / "second", *common, f"pixel_cache={packs}"))
    plain = evaluate_cli.main(eval_cfg(tmp_path / "plain", *common, "pixel_cache=false"))
    assert array_file.stat().st_mtime_ns == written and len(list(packs.iterdir())) == 2  # read, not rewritten
    for key in ("accuracy_mean", "auc", "eer", "best_threshold"):
        assert first[key] == second[key] == plain[key], key
