"""ESPO end to end through the Python API (`algo_trainer("espo", ...)`, conf/algo/espo.yaml): two steps on a tiny random LLaDA change the LoRA weights with a
finite loss; μ = 1 with β > 0 gives ρ ≡ 1 and KL 0 at the first inner step; the old, reference and current
ELBOs share one plan per inner iteration.

Run: .venv/bin/python -m pytest tests/trainers/test_espo_e2e.py -q      (≈ 15 s on 2 CPU cores)
"""
from __future__ import annotations

import pytest
import torch

from tests.trainers.test_coupled_gdpo_e2e import PlanSpy
from tests.trainers.test_spg_e2e import assert_refused_naming_the_knob, small_trainer, train_two_steps


@pytest.mark.parametrize("kw", [{}, {"likelihood.full_canvas": True, "likelihood.draws": 1},
                                {"likelihood.mask_tail": True, "objective.beta": 0.0}])
def test_two_steps_change_lora_weights_with_finite_loss(tmp_path, tokenizer, kw):
    trainer = small_trainer("espo", tokenizer, tmp_path, **kw)
    history = train_two_steps(trainer)
    assert history[0]["ratio_mean"] == 1.0 and history[0]["clip_fraction"] == 0.0
    assert (history[0].get("kl") == 0.0) == (trainer.components.objective.beta > 0)
    assert trainer.components.objective.full_canvas == trainer.components.estimator.full_canvas  # one knob


def test_old_reference_and_current_share_one_plan_per_inner_iteration(tmp_path, tokenizer):
    trainer = small_trainer("espo", tokenizer, tmp_path, num_iterations=2, per_device_train_batch_size=2,
                            gradient_accumulation_steps=2)
    spy = PlanSpy(trainer.components.estimator)
    trainer.components.estimator = spy
    trainer.train()
    ids = [s[0] for s in spy.seen]
    assert len(ids) == 8
    for it in (0, 1):
        assert torch.equal(ids[it], ids[2 + it]) and torch.equal(ids[it], torch.cat(ids[4 + 2 * it: 6 + 2 * it]))


def test_bad_settings_fail_before_the_model_loads_naming_the_knob(tmp_path):
    assert_refused_naming_the_knob("espo", tmp_path, [
        ({"likelihood.p_mask_prompt": 0.15}, "p_mask_prompt"), ({"likelihood.draws": 0}, "draws"),
        ({"likelihood.mask_tail": True, "likelihood.full_canvas": True}, "mask_tail")])
