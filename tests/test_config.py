"""Every option of every config group composes and instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from stn_face.config import CONF_DIR
from stn_face.training import eval_set_configs
from tests.helpers import compose_train, run_cli

GROUPS = ["transform", "localization", "backbone", "head", "optimizer", "scheduler", "model", "data", "eval",
          "trainer", "logger", "callbacks", "paths", "experiment"]
BUILDABLE = {"transform", "localization", "head", "optimizer", "eval", "logger", "callbacks"}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def test_help_lists_options_only_not_the_bases():
    """The bases the options share (``conf/_data_base.yaml``, ``_trainer_base``, ``_transform_learned``,
    ``_experiment_insightface_rec``) sit at the top of conf/, where ``--help`` does not list them."""
    assert not [f"{g}/{o}" for g in GROUPS for o in options(g) if o.startswith("_")]
    result = run_cli(["stn_face.cli.train", "--help"], timeout=120)
    assert result.returncode == 0, result.stderr
    groups = result.stdout.split("== Config ==")[0]
    assert "data: casia_webface" in groups and "transform: affine" in groups and "trainer: cpu" in groups
    assert "_base" not in groups and "_learned" not in groups and "_insightface" not in groups


def test_groups_have_the_documented_options():
    assert options("transform") == ["affine", "identity", "projective", "similarity", "tps"]
    assert options("localization") == [
        "conv1_fc1", "conv2_fc1", "conv2_fc2", "conv3_fc1", "conv3_fc1_small", "conv3_fc2"]
    assert {"paper_resnet", "iresnet50", "small"} <= set(options("backbone"))
    assert {"arcface", "cosface", "sphereface", "softmax"} <= set(options("head"))
    assert {"cpu", "gpu", "ddp", "ddp_cpu"} <= set(options("trainer"))
    assert {"wandb", "csv", "tensorboard"} <= set(options("logger"))
    assert {"casia_webface", "celeba_subset", "lfw_view1", "folder"} <= set(options("data"))
    assert {"lfw", "lfw_view1", "ytf"} <= set(options("eval"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes(group, option, tmp_path, monkeypatch):
    monkeypatch.setenv("STN_FACE_DATA", str(tmp_path))
    monkeypatch.setenv("CASIA_WEBFACE", str(tmp_path / "casia"))
    monkeypatch.setenv("CASIA_LFW_OVERLAP", str(tmp_path / "overlap.txt"))
    cfg = compose_train([f"{group}={option}"], tmp_path)
    # every value resolves (no missing key, no broken interpolation) once the run dir is known
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=group != "data" or option != "folder")
    assert container["transform"]["_target_"].endswith("SpatialTransformer")
    if group in BUILDABLE:
        node = cfg[group]
        built = [instantiate(c) for c in node.values()] if group in ("logger", "callbacks") and node else (
            instantiate(node) if node else None)
        assert built is not None or group == "logger"


def test_model_instantiates_for_every_transform_and_backbone(monkeypatch, tmp_path):
    monkeypatch.setenv("STN_FACE_DATA", str(tmp_path))
    for transform in options("transform"):
        cfg = compose_train([f"transform={transform}", "backbone=tiny"], tmp_path)
        model = instantiate(cfg.model, num_classes=7)
        assert model.head.num_classes == 7
        assert (model.transformer.localization is None) == (transform == "identity")
        # every family starts from the same view: the centre 112 pixels of the data's 128 crops
        assert model.transformer.init_scale == 112 / cfg.data.image_size == 0.875


def test_start_view_follows_the_data_crop(monkeypatch, tmp_path):
    """The paper-scale data config has 144-pixel crops: every family starts from their centre 112."""
    monkeypatch.setenv("STN_FACE_DATA", str(tmp_path))
    for transform in options("transform"):
        cfg = compose_train([f"transform={transform}", "data.image_size=144", "backbone=tiny"], tmp_path)
        assert instantiate(cfg.transform).init_scale == pytest.approx(112 / 144)
    cfg = compose_train(["transform=tps", "transform.grid_size=3", "transform.init_scale=1.0"], tmp_path)
    stn = instantiate(cfg.transform)
    assert stn.init_scale == 1.0 and stn.family.num_params == 18


def test_eval_sets_include_extra(monkeypatch, tmp_path):
    monkeypatch.setenv("STN_FACE_DATA", str(tmp_path))
    cfg = compose_train(["+eval@extra_eval.ytf=ytf"], tmp_path)
    assert [c.name for c in eval_set_configs(cfg)] == ["lfw_view1", "ytf"]


def test_unknown_option_lists_valid_ones():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as error:
        compose_train(["transform=perspective"])
    message = str(error.value)
    assert "perspective" in message and "projective" in message and "similarity" in message


def test_cpu_study_composes_with_its_measured_settings(monkeypatch, tmp_path):
    """experiments/cpu_celeba's settings (s=16, margin ramp, half-width localization) reach the model."""
    monkeypatch.setenv("STN_FACE_DATA", str(tmp_path))
    cfg = compose_train(["experiment=cpu_celeba_misaligned", "transform=projective"], tmp_path)
    assert (cfg.trainer.max_steps, cfg.head.s, cfg.model.margin_warmup_steps, cfg.model.margin_ramp_steps) == (
        300, 16.0, 100, 200)
    assert list(cfg.localization.conv_channels) == [16, 32, 64]
    assert cfg.data.eval_jitter.rotate_limit == cfg.data.augment.rotate_limit == 30
    model = instantiate(cfg.model, num_classes=299)
    assert model.head.s == 16.0 and model.margin_ramp_steps == 200 and model.channels_last
    assert model.transformer.localization.features[0].out_channels == 16
    # the study was run without dropout; the main job's small backbone now has 0.4 (benchmarks/README.md)
    assert model.backbone.head.dropout.p == 0.0
    main_job = instantiate(compose_train([], tmp_path).model, num_classes=1184)
    assert main_job.backbone.head.dropout.p == 0.4
