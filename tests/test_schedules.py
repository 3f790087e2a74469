"""Learning-rate and margin schedules: exact values at the boundaries."""

import pytest
import torch

from stn_face.schedules import margin_schedule, warmup_cosine


def test_margin_switches_on_at_once_after_the_warmup():
    assert [margin_schedule(s, warmup_steps=3) for s in range(5)] == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert margin_schedule(0) == 1.0


def test_margin_ramps_linearly_after_the_warmup():
    values = [margin_schedule(s, warmup_steps=100, ramp_steps=200) for s in (0, 99, 100, 199, 299, 300, 1000)]
    assert values == pytest.approx([0.0, 0.0, 1 / 200, 100 / 200, 1.0, 1.0, 1.0])


def test_warmup_cosine_reaches_the_peak_then_decays_to_the_floor():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = warmup_cosine(opt, total_steps=300, warmup_steps=100, final_factor=0.0)
    factor = sched.lr_lambdas[0]
    assert factor(0) == pytest.approx(0.01)
    assert factor(99) == pytest.approx(1.0)
    assert factor(200) == pytest.approx(0.5, abs=0.01)
    assert factor(300) == pytest.approx(0.0, abs=1e-9)
