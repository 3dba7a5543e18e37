"""ESPO end to end through the Python API: two steps on a tiny random LLaDA change the LoRA weights with a
finite loss; μ = 1 with β > 0 gives ρ ≡ 1 and KL 0 at the first inner step; the old, reference and current
ELBOs share one plan per inner iteration.

Run: .venv/bin/python -m pytest tests/trainers/test_espo_e2e.py -q      (≈ 15 s on 2 CPU cores)
"""
from __future__ import annotations

import pytest
import torch

from rl_dlm.data.tasks import make_split
from rl_dlm.trainers.espo import ESPOConfig, ESPOTrainer
from tests.conftest import make_tiny_policy
from tests.trainers.test_coupled_gdpo_e2e import SMALL, PlanSpy, noisy_length_reward
from tests.trainers.test_spg_e2e import train_two_steps


@pytest.mark.parametrize("kw", [{}, {"full_canvas": True, "espo_draws": 1}, {"mask_tail": True, "beta": 0.0}])
def test_two_steps_change_lora_weights_with_finite_loss(tmp_path, tokenizer, kw):
    args = ESPOConfig(output_dir=str(tmp_path), **{**SMALL, **kw})
    trainer = ESPOTrainer(make_tiny_policy(tokenizer, lora=True), noisy_length_reward, args=args,
                          train_dataset=make_split("countdown", "train", 8))
    history = train_two_steps(trainer)
    assert history[0]["ratio_mean"] == 1.0 and history[0]["clip_fraction"] == 0.0
    assert (history[0].get("kl") == 0.0) == (args.beta > 0)


def test_old_reference_and_current_share_one_plan_per_inner_iteration(tmp_path, tokenizer):
    args = ESPOConfig(output_dir=str(tmp_path), **{**SMALL, "num_iterations": 2, "per_device_train_batch_size": 2,
                                                   "gradient_accumulation_steps": 2})
    trainer = ESPOTrainer(make_tiny_policy(tokenizer, lora=True), noisy_length_reward, args=args,
                          train_dataset=make_split("countdown", "train", 8))
    spy = PlanSpy(trainer.components.estimator)
    trainer.components.estimator = spy
    trainer.train()
    ids = [s[0] for s in spy.seen]
    assert len(ids) == 8
    for it in (0, 1):
        assert torch.equal(ids[it], ids[2 + it]) and torch.equal(ids[it], torch.cat(ids[4 + 2 * it: 6 + 2 * it]))


def test_bad_configs_fail_naming_the_key():
    assert ESPOConfig().espo_draws == 2 and ESPOConfig().leave_one_out
    for kw, key in [({"p_mask_prompt": 0.15}, "p_mask_prompt"), ({"espo_draws": 0}, "espo_draws"),
                    ({"mask_tail": True, "full_canvas": True}, "mask_tail")]:
        with pytest.raises(ValueError, match=key):
            ESPOConfig(**kw)
