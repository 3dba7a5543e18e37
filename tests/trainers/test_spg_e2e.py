"""SPG end to end through the Python API: two steps on a tiny random LLaDA change the LoRA weights with a
finite loss, for the mix (default), EUBO-only and uniform-mask variants, with μ = 2 reusing one rollout.

Run: .venv/bin/python -m pytest tests/trainers/test_spg_e2e.py -q      (≈ 10 s on 2 CPU cores)
"""
from __future__ import annotations

import math

import pytest
import torch

from rl_dlm.data.tasks import make_split
from rl_dlm.trainers.spg import SPGConfig, SPGTrainer
from tests.conftest import make_tiny_policy
from tests.trainers.test_coupled_gdpo_e2e import SMALL, lora_state, noisy_length_reward


def train_two_steps(trainer) -> list[dict]:
    """Train: two logged steps with a finite loss that change the LoRA weights. Returns the history."""
    before = lora_state(trainer)
    history = trainer.train()
    after = lora_state(trainer)
    assert [h["step"] for h in history] == [1, 2]
    assert all(math.isfinite(h["loss"]) for h in history)
    assert any(not torch.equal(before[n], after[n]) for n in before)
    return history


VARIANTS = [{}, {"eubo_weight": 1.0, "num_iterations": 2}, {"spg_masking": "uniform", "spg_views": 3}]


@pytest.mark.parametrize("kw", VARIANTS)
def test_two_steps_change_lora_weights_with_finite_loss(tmp_path, tokenizer, kw):
    args = SPGConfig(output_dir=str(tmp_path), **{**SMALL, "block_length": 8, "gradient_accumulation_steps": 1, **kw})
    trainer = SPGTrainer(make_tiny_policy(tokenizer, lora=True), noisy_length_reward, args=args,
                         train_dataset=make_split("countdown", "train", 8))
    history = train_two_steps(trainer)
    assert all(math.isfinite(h[k]) for h in history for k in ("elbo_per_token", "eubo_per_token"))


def test_bad_configs_fail_naming_the_key():
    assert SPGConfig().eubo_weight == 0.5 and SPGConfig().spg_views == 2
    for kw, key in [({"beta": 0.04}, "beta"), ({"p_mask_prompt": 0.15}, "p_mask_prompt"),
                    ({"eubo_weight": 2.0}, "eubo_weight"), ({"spg_masking": "x"}, "spg_masking"),
                    ({"eubo_beta": 0.0}, "eubo_beta"), ({"spg_views": 0}, "spg_views")]:
        with pytest.raises(ValueError, match=key):
            SPGConfig(**kw)
