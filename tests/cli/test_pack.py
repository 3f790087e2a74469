"""``stn-face-pack`` on real data, and what its files are for: training from a packed .rec gives the very
weights training from the folder gives, and an LFW .bin scores exactly like ``eval=lfw`` on the same crops."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from stn_face.cli import eval as evaluate_cli
from stn_face.cli import pack as pack_cli
from tests.helpers import compose_cli, compose_train, expect_input_error

pytestmark = [pytest.mark.data, pytest.mark.usefixtures("one_thread")]

STEPS = 20
PER_FOLD = 15  # 15 same + 15 different View 2 pairs of every fold: 300 pairs
# a tiny network: what is tested is that both inputs train it identically
MODEL = ["backbone=tiny", "localization=conv1_fc1", "model.margin_warmup_steps=0", "scheduler.warmup_steps=0",
         "data.batch_size=16", "logger=csv"]


def _fit(cfg, out: Path) -> tuple[L.LightningModule, L.Trainer]:
    from stn_face.checkpoint import model_config

    L.seed_everything(0)
    datamodule = instantiate(cfg.data, _partial_=True)(eval_sets=[])
    datamodule.setup("fit")
    model = instantiate(cfg.model, num_classes=datamodule.num_classes)
    model.model_config = model_config(cfg)
    trainer = L.Trainer(max_steps=STEPS, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, default_root_dir=out)
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == STEPS
    return model, trainer


@pytest.fixture(scope="module")
def rec_training(celeba_crops, tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor], Path]:
    """``stn-face-pack rec`` of the CelebA crops, trained on for 20 steps (2 DataLoader workers, flips):
    the pack, the weights and a checkpoint of them."""
    out = tmp_path_factory.mktemp("rec-training")
    assert pack_cli.main(["rec", str(celeba_crops), str(out / "pack")]) == 0
    cfg = compose_train(["data=rec", f"data.path={out / 'pack'}", "data.num_workers=2", *MODEL], out)
    model, trainer = _fit(cfg, out)
    ckpt = out / "rec.ckpt"
    trainer.save_checkpoint(ckpt)
    return out / "pack", {k: v.detach().clone() for k, v in model.state_dict().items()}, ckpt


@pytest.mark.slow
def test_rec_and_folder_train_to_identical_weights(rec_training, celeba_crops, tmp_path):
    _, rec_weights, _ = rec_training
    cfg = compose_train(["data=folder", f"data.root={celeba_crops}", "data.image_size=112",
                         "data.min_images_per_identity=1", "data.num_workers=0", *MODEL], tmp_path)
    model, _ = _fit(cfg, tmp_path)
    folder_weights = model.state_dict()
    assert folder_weights.keys() == rec_weights.keys()
    assert all(torch.equal(folder_weights[k], rec_weights[k]) for k in rec_weights)
    L.seed_everything(0)
    start = instantiate(cfg.model, num_classes=len(rec_weights["head.weight"])).state_dict()
    moved = [k for k in start if start[k].is_floating_point() and not torch.equal(start[k], rec_weights[k])]
    assert "head.weight" in moved and len(moved) > len(start) // 2  # 20 steps trained both the same way


@pytest.mark.slow
def test_lfw_bin_scores_exactly_like_eval_lfw(rec_training, data_dir, tmp_path):
    """The checkpoint (trained on CelebA people, none of them in LFW) on the View 2 subset: ``eval=lfw`` from
    the prepared crops, then those crops packed with the official pairs.txt into lfw.bin and ``eval=bin``."""
    _, _, ckpt = rec_training

    def evaluate(out: Path, *overrides: str) -> dict:
        cfg = compose_cli("evaluate", [f"paths.output_dir={out}", "progress=false", f"ckpt={ckpt}", *overrides])
        return evaluate_cli.main(cfg)

    lfw = evaluate(tmp_path / "lfw", "eval=lfw", f"eval.max_pairs_per_fold={PER_FOLD}")
    crops = compose_cli("evaluate", ["eval=lfw"]).eval.prepared_root  # what eval=lfw just embedded
    lfw_bin = tmp_path / "lfw.bin"
    assert pack_cli.main(["bin", f"{data_dir}/lfw/pairs.txt", str(crops), str(lfw_bin),
                          "--max-pairs-per-fold", str(PER_FOLD)]) == 0
    packed = evaluate(tmp_path / "bin", "eval=bin", f"eval.path={lfw_bin}", f"eval.prepared_root={tmp_path / 'x'}")
    assert lfw["n_pairs"] == packed["n_pairs"] == 20 * PER_FOLD and packed["n_folds"] == 10
    assert lfw["pairs_with_training_identities"] == 0 and packed["pairs_with_training_identities"] is None
    about_the_set = {"pairs_file", "max_pairs_per_fold", "pairs_with_training_identities"}
    # every number is the same; only what names the set differs (and the per-set copy under "sets")
    assert {k for k in lfw if lfw[k] != packed.get(k)} == about_the_set | {"sets"}
    assert {k for k, v in lfw["sets"]["lfw"].items() if v != packed["sets"]["lfw"][k]} == about_the_set
    assert packed["eval"] == "lfw" and packed["accuracy_mean"] == lfw["accuracy_mean"]
    assert json.loads((tmp_path / "bin" / "metrics.json").read_text())["fold_accuracies"] == lfw["fold_accuracies"]


@pytest.mark.slow
def test_training_validates_on_every_bin_of_a_folder(rec_training, data_dir, tmp_path, capsys):
    """``eval=bin eval.bin_dir=DIR``: every .bin is validated and logged as val/<name>_acc, the best checkpoint
    follows the first, and stn-face-report shows each set."""
    from stn_face.cli import report as report_cli
    from stn_face.training import train

    pack, _, _ = rec_training
    bins = tmp_path / "bins"
    for name, per_fold in (("lfw", 3), ("lfw_small", 2)):  # raw deep-funneled faces: 250x250, resized to 112
        assert pack_cli.main(["bin", f"{data_dir}/lfw/pairs.txt", f"{data_dir}/lfw/lfw-deepfunneled",
                              str(bins / f"{name}.bin"), "--max-pairs-per-fold", str(per_fold)]) == 0
    out = tmp_path / "run"
    cfg = compose_train(["data=rec", f"data.path={pack}", "data.num_workers=0", *MODEL, "trainer.max_steps=4",
                         "trainer.val_check_interval=4", "eval=bin", f"eval.bin_dir={bins}",
                         f"eval.prepared_root={tmp_path / 'x'}"], out)
    record = train(cfg)
    assert record["eval"] == "lfw" and set(record["sets"]) == {"lfw", "lfw_small"}
    assert record["sets"]["lfw"]["n_pairs"] == 60 and record["sets"]["lfw_small"]["n_pairs"] == 40
    logged = next(out.rglob("metrics.csv")).read_text().splitlines()[0].split(",")
    assert {"val/lfw_acc", "val/lfw_small_acc", "val/lfw_small_auc"} <= set(logged)
    assert (out / "checkpoints" / "step000004.ckpt").is_file()  # monitored val/lfw_acc
    assert report_cli.main([str(out)]) == 0
    table = (out / "table.md").read_text()
    assert "lfw_small acc (%)" in table
    assert f"{100 * record['sets']['lfw_small']['accuracy_mean']:.2f}" in table
    # bad input on the command line: one error line
    message = expect_input_error(capsys, pack_cli.main, ["bin", str(tmp_path / "none.txt"), str(bins), "x.bin"])
    assert "none.txt does not exist" in message


def test_eval_bin_without_its_file_is_one_clear_error(tmp_path, capsys):
    for path, expected in ((None, "eval=bin needs eval.path=FILE.bin"), (tmp_path / "none.bin", "none.bin does not exist")):
        overrides = [f"paths.output_dir={tmp_path}", "ckpt=x.ckpt", "eval=bin"] + ([f"eval.path={path}"] if path else [])
        message = expect_input_error(capsys, evaluate_cli.main, compose_cli("evaluate", overrides))
        assert expected in message and "stn-face-pack bin" in message
