"""A real offline W&B sweep: one run per Hydra job, with metrics, the ROC picture and the alignment grid."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # subprocess commands, DDP, sweeps, kill-and-resume

BLOCK = 32768  # the .wandb file is a LevelDB-style log: 32 KiB blocks of (crc, length, type) records


def read_wandb_records(path: Path):
    """Yield the protobuf ``Record``s of an offline run's ``run-<id>.wandb`` file (wandb >= 0.2x has no
    Python reader any more; the format is ``:W&B`` + magic 0xBEE1 + version, then LevelDB log records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1, (ident, magic)
    pos, chunks = 7, []
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunks.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


def read_offline_run(run_dir: Path) -> tuple[dict, dict[str, list]]:
    """``({"id", "name", "group"}, history key -> list of values)`` of one offline run folder."""
    (wandb_file,) = run_dir.glob("run-*.wandb")
    info, history = {}, {}
    for record in read_wandb_records(wandb_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            info = {"id": record.run.run_id, "name": record.run.display_name, "group": record.run.run_group}
        elif kind == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                history.setdefault(key, []).append(json.loads(item.value_json))
    return info, history


def test_wandb_offline_sweep_one_run_per_job(lfw_dir, tmp_path):
    result = run_cli(["stn_face.cli.train", "-m", "experiment=smoke", "logger=wandb", "transform=identity,projective,tps",
                      "trainer.max_steps=4", "trainer.val_check_interval=4", "trainer.log_every_n_steps=2",
                      "eval.max_pairs_per_fold=20", "trainer.enable_progress_bar=false",
                      f"paths.log_dir={tmp_path}"],
                     env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(tmp_path.glob("smoke/multiruns/*/*/wandb/offline-run-*"))
    assert [r.parents[1].name for r in runs] == ["0", "1", "2"], runs  # one offline run per Hydra job
    infos = []
    for run, transform in zip(runs, ["identity", "projective", "tps"]):
        info, history = read_offline_run(run)
        infos.append(info)
        assert f"transform={transform}" in info["name"]
        losses = history["train/loss"]
        assert len(losses) >= 2 and all(math.isfinite(v) and 0 < v < 50 for v in losses)
        (accuracy,) = history["val/lfw_view1_acc"]
        metrics = json.loads((run.parents[1] / "metrics.json").read_text())
        assert metrics["n_pairs"] == 40 and abs(accuracy - metrics["accuracy_mean"]) < 1e-6
        assert 0.0 <= history["val/lfw_view1_auc"][0] <= 1.0
        # the ROC picture and the alignment grid are media of this run, and the history points at them
        for key, folder in [("val/roc_lfw_view1", "val"), ("alignment/grid", "alignment")]:
            (names,) = history[f"{key}/filenames"]
            assert all((run / "files" / name).stat().st_size > 5000 for name in names)
            assert list((run / "files" / "media" / "images" / folder).glob("*.png"))
        assert (run.parents[1] / "alignment" / "step000004.png").exists()
        if transform == "projective":
            assert "transform/scale" in history and 0.5 < history["transform/scale"][-1] < 1.2
        if transform == "tps":  # no matrix statistics, but the aligned output is watched
            assert "transform/scale" not in history and history["transform/output_std"][-1] > 0.05
    assert len({info["id"] for info in infos}) == 3 and len({info["group"] for info in infos}) == 1
    assert infos[0]["group"] != ""
