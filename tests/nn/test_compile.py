"""``model.compile``: the backbone and localization net compiled in place (stn_face/nn/compile.py), its
``auto`` default, and checkpoints of the earlier module that held the backbone under a second name."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from stn_face.checkpoint import check_compatible, drop_aliases
from stn_face.errors import InputError
from stn_face.nn.compile import AUTO_COMPILE_MIN_STEPS, compile_networks, compiler_missing
from tests.helpers import compose_train

HAS_COMPILER = compiler_missing() is None


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from stn_face.config import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def test_auto_compile_is_on_for_the_main_job_and_off_for_short_runs():
    main_job = _compose([])
    assert int(main_job.trainer.max_steps) >= AUTO_COMPILE_MIN_STEPS
    assert main_job.model.compile is HAS_COMPILER
    assert _compose([f"trainer.max_steps={AUTO_COMPILE_MIN_STEPS - 1}"]).model.compile is False
    assert _compose([f"trainer.max_steps={AUTO_COMPILE_MIN_STEPS}"]).model.compile is HAS_COMPILER
    assert _compose(["experiment=smoke"]).model.compile is False
    assert _compose(["model.compile=false"]).model.compile is False


def test_no_compiler_is_one_error_naming_the_fix(monkeypatch, tmp_path):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no g++, c++ or clang++
    assert "no C++ compiler" in compiler_missing()
    with pytest.raises(InputError, match=r"model\.compile=false"):
        compile_networks(torch.nn.Linear(2, 2))
    assert _compose([]).model.compile is False  # auto stays eager instead


def _tiny(compile: bool, tmp_path):
    cfg = compose_train(["backbone=tiny", "transform=projective", "localization=conv1_fc1",
                         f"model.compile={str(compile).lower()}"], tmp_path)
    torch.manual_seed(0)
    return instantiate(cfg.model, num_classes=5)


def test_alias_keys_of_earlier_checkpoints_are_dropped(tmp_path):
    model = _tiny(False, tmp_path)
    state = model.state_dict()
    assert not any(k.startswith("_backbone_forward.") for k in state)
    old = dict(state) | {f"_backbone_forward.{k[len('backbone.'):]}": v for k, v in state.items()
                         if k.startswith("backbone.")}
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": old, "global_step": 3, "epoch": 0}, path)
    check_compatible(model, path)  # would list the _backbone_forward.* tensors as unexpected
    checkpoint = {"state_dict": dict(old), "global_step": 3}
    model.on_load_checkpoint(checkpoint)
    assert set(checkpoint["state_dict"]) == set(state)
    model.load_state_dict(checkpoint["state_dict"])  # strict
    assert drop_aliases({"_backbone_forward.x": 1, "backbone.x": 2}) == {"backbone.x": 2}


@pytest.mark.slow
@pytest.mark.skipif(not HAS_COMPILER, reason="Inductor needs a C++ compiler and the Python headers")
def test_compiled_model_equals_eager_and_keeps_its_parameter_names(tmp_path):
    eager, compiled = _tiny(False, tmp_path), _tiny(True, tmp_path)
    compiled.load_state_dict(eager.state_dict())
    assert compiled.compiled is True and eager.compiled is False
    # the sampling grid is compiled with the networks (bitwise the same grid, half the time at batch 128)
    assert compiled.transformer._sampling_grid != compiled.transformer.family.sampling_grid
    assert eager.transformer._sampling_grid == eager.transformer.family.sampling_grid
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints read either way
    images = torch.rand(8, 3, 128, 128) * 2 - 1
    labels = torch.arange(8) % 5
    losses = []
    for model in (eager, compiled):
        model.train()
        loss, *_ = model.training_loss(images, labels, margin_factor=1.0, step=0)
        loss.backward()
        losses.append(float(loss))
        model.eval()
        with torch.no_grad():
            losses.append(model.embed(images)[0])
    assert losses[0] == pytest.approx(losses[2], rel=1e-4, abs=1e-5)
    torch.testing.assert_close(losses[3], losses[1], rtol=1e-4, atol=1e-5)
    grads = [dict((n, p.grad) for n, p in m.named_parameters() if p.grad is not None) for m in (eager, compiled)]
    assert set(grads[0]) == set(grads[1]) and grads[0]
    for name in grads[0]:  # fused kernels sum in another order: compare each gradient as a whole
        difference, size = float((grads[1][name] - grads[0][name]).norm()), float(grads[0][name].norm())
        assert difference <= 1e-2 * size + 1e-4, (name, difference, size)
