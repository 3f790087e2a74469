"""Settings checked before any work: every rule of :data:`stn_face.training.settings_check.RULES` rejects an
out-of-range value with one message naming the key, the value and the allowed range; every shipped config
passes; ``stn-face-train`` with a bad value prints one ``error:`` line, exits 2 within 5 seconds and makes
no run folder."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from stn_face.config import CONF_DIR
from stn_face.training.settings_check import RULES, Rule, check_settings, settings_errors
from tests.helpers import compose_train, run_cli

#: a config that has each rule's key (the default one has most)
_GROUP_FOR = {"head.sample_rate": ["head=partial_fc"], "head.weight_decay": ["head=partial_fc"],
              "head.m": ["head=adaface"], "head.h": ["head=adaface"], "head.t_alpha": ["head=adaface"],
              "head.m1": [], "scheduler.gamma": ["scheduler=multistep"],
              "scheduler.milestones[]": ["scheduler=multistep"], "localization.fc_dims[]": ["localization=conv2_fc2"], "transform.grid_size": ["transform=tps"],
              "trainer.strategy.timeout_s": ["trainer=ddp_cpu"], "data.check_records": ["data=rec"],
              "{eval}.n_folds": ["eval=bin"], "{eval}.max_frames": ["eval=ytf"]}

#: Lightning settings no config sets; users add them (``+trainer.accumulate_grad_batches=4``)
_ONLY_ON_THE_COMMAND_LINE = {"trainer.accumulate_grad_batches", "trainer.num_nodes", "trainer.gradient_clip_val"}


def _bad_values(rule: Rule) -> list:
    """Values the rule must refuse: just outside each bound, a fraction for a whole number, a word."""
    values = []
    step = 1 if rule.integer else 1e-3
    if rule.low is not None:
        values.append(rule.low if rule.open_low else rule.low - step)
    if rule.high is not None:
        values.append(rule.high if rule.open_high else rule.high + step)
    if rule.integer:
        values.append(2.5)
    values.append("many")
    if not rule.nullable:
        values.append(None)
    return [v for v in values if v not in rule.also and v not in rule.words]


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    cache: dict[tuple[str, ...], object] = {}
    folder = tmp_path_factory.mktemp("run")

    def compose(overrides: list[str]):
        key = tuple(overrides)
        if key not in cache:
            cache[key] = compose_train(overrides, folder)
        return OmegaConf.create(OmegaConf.to_container(cache[key]))  # a copy each time

    return compose


@pytest.mark.parametrize("rule", RULES, ids=[r.key for r in RULES])
def test_every_rule_refuses_values_out_of_its_range_with_one_message(rule, configs):
    overrides = _GROUP_FOR.get(rule.key, [])
    cfg = configs(overrides)
    key = rule.key.replace("{eval}", "eval").replace("[]", "[0]")
    if rule.key not in _ONLY_ON_THE_COMMAND_LINE:
        assert OmegaConf.select(cfg, key, default="<absent>") != "<absent>", f"{key} is in no shipped config"
    assert settings_errors(cfg) == [], "the shipped config itself is refused"
    for value in _bad_values(rule):
        with open_dict(cfg):
            OmegaConf.update(cfg, key, value, force_add=True)
        errors = settings_errors(cfg)
        shown = "null" if value is None else str(value)
        assert errors and errors[0].startswith(f"{key}={shown} "), (value, errors)
        assert rule.allowed() in errors[0]


def test_the_allowed_range_is_written_as_a_range():
    rules = {r.key: r for r in RULES}
    assert rules["data.batch_size"].allowed() == "an integer >= 1"
    assert rules["head.sample_rate"].allowed() == "a number in (0, 1]"
    assert rules["data.max_identities"].allowed() == "an integer >= 1 (or null)"
    assert rules["trainer.devices"].allowed() == "an integer in [1, 1024] (or -1 or auto)"
    assert math.isclose(rules["head.m2"].high, math.pi / 2)


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("[!_]*.yaml")))
def test_every_shipped_experiment_passes(experiment, configs):
    assert settings_errors(configs([f"experiment={experiment}"])) == []


_GROUPS = ("head", "backbone", "transform", "localization", "scheduler", "trainer", "data", "eval", "logger",
           "optimizer")


@pytest.mark.parametrize("option", sorted(f"{group}={p.stem}" for group in _GROUPS
                                          for p in (Path(CONF_DIR) / group).glob("[!_]*.yaml")))
def test_every_option_of_every_group_passes(option, configs):
    assert settings_errors(configs([option])) == []


def test_settings_that_contradict_each_other_and_extra_eval_sets(configs):
    cfg = configs(["data.min_images_per_identity=5", "data.max_images_per_identity=3"])
    assert settings_errors(cfg) == ["data.max_images_per_identity=3 is below data.min_images_per_identity=5: "
                                    "no identity could be used"]
    cfg = configs(["+eval@extra_eval.ytf=ytf", "extra_eval.ytf.max_frames=0"])
    assert settings_errors(cfg)[0].startswith("extra_eval.ytf.max_frames=0 is out of range")
    from stn_face.errors import InputError

    with pytest.raises(InputError, match=r"^data\.max_images_per_identity=3"):
        check_settings(configs(["data.min_images_per_identity=5", "data.max_images_per_identity=3"]))


BAD = ["data.batch_size=0", "trainer.max_steps=-5", "optimizer.lr=0", "data.num_workers=-1",
       "trainer.val_check_interval=0", "head=partial_fc head.sample_rate=1.5", "data.eval_batch_size=0",
       "callbacks.alignment_grid.every_n_steps=0", "head.m2=2", "data.image_size=0", "scheduler.warmup_steps=-1"]


@pytest.mark.parametrize("setting", BAD[:2])
def test_a_bad_setting_is_one_line_exit_2_at_once_without_a_run_folder(setting, tmp_path):
    _check_command(setting, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("setting", BAD[2:])
def test_more_bad_settings_on_the_command_line(setting, tmp_path):
    _check_command(setting, tmp_path)


def _check_command(setting: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    started = time.monotonic()
    result = run_cli(["stn_face.cli.train", *setting.split(), f"hydra.run.dir={run}", f"paths.log_dir={tmp_path}"])
    seconds = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    key, value = setting.split()[-1].split("=")
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}={value} "), lines
    assert seconds < 5, f"{seconds:.1f} s"
    assert not run.exists() and list(tmp_path.iterdir()) == [], list(tmp_path.rglob("*"))


@pytest.mark.slow
def test_a_bad_value_in_a_sweep_stops_before_any_training(tmp_path):
    result = run_cli(["stn_face.cli.train", "-m", "data.batch_size=0", f"paths.log_dir={tmp_path}"])
    assert result.returncode == 2
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        "error: data.batch_size=0 is out of range: an integer >= 1 (training images in one step, per process)"]
