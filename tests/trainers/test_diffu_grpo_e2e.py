"""diffu-GRPO end to end on the embedded model: two steps change the LoRA weights with a finite loss;
μ = 1 with β > 0 works and the first inner step has ratio ≡ 1; a TRL reward function plugs in unchanged."""
from __future__ import annotations

import math

import pytest
import torch

from rl_dlm import DiffuGRPOConfig, DiffuGRPOTrainer
from rl_dlm.data.tasks import make_split

from tests.conftest import EMBEDDED
from tests.trainers.test_coupled_gdpo_e2e import train_two_steps


def small_config(tmp_path, **kw) -> DiffuGRPOConfig:
    base = dict(output_dir=str(tmp_path), max_steps=2, num_generations=2, per_device_train_batch_size=4,
                num_iterations=1, beta=0.04, learning_rate=1e-2, max_completion_length=16, block_length=16,
                diffusion_steps=4, lora_r=4, lora_alpha=8, lora_dropout=0.0, report_to=["none"])
    return DiffuGRPOConfig(**{**base, **kw})


def lora_state(trainer):
    return {n: p.detach().clone() for n, p in trainer.policy.model.named_parameters() if "lora_" in n}


def noisy_length_reward(completions, **kw):
    """Varies within a group so advantages are non-zero."""
    text = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [float(len(t) % 7) for t in text]


def test_two_steps_change_lora_weights_with_finite_loss(tmp_path):
    rows = make_split("countdown", "train", 8)
    trainer = DiffuGRPOTrainer(str(EMBEDDED), noisy_length_reward, args=small_config(tmp_path), train_dataset=rows)
    history = train_two_steps(trainer)
    # μ = 1, no dropout: the policy *is* the old policy at the first inner step.
    assert history[0]["ratio_mean"] == 1.0 and history[0]["clip_fraction"] == 0.0
    assert all(k in history[0] for k in ("kl", "time/rollout", "time/old_logp", "time/update",
                                          "frac_reward_zero_std", "reward/noisy_length_reward"))


def test_trl_reward_function_plugs_in_unchanged(tmp_path):
    from trl.rewards import accuracy_reward

    rows = [dict(r, solution=r["answer"]) for r in make_split("arithmetic", "train", 4)]
    trainer = DiffuGRPOTrainer(str(EMBEDDED), [accuracy_reward, noisy_length_reward],
                               args=small_config(tmp_path, max_steps=1), train_dataset=rows,
                               correct_reward="accuracy_reward")
    history = trainer.train()
    assert "reward/accuracy_reward" in history[0] and "accuracy" in history[0]
    assert history[0]["reward/accuracy_reward"] >= 0.0


def test_batch_must_be_a_multiple_of_the_group():
    with pytest.raises(ValueError, match="num_generations"):
        DiffuGRPOConfig(per_device_train_batch_size=5, num_generations=2)


def test_bf16_loads_bf16_base_weights_and_keeps_fp32_adapters(tmp_path):
    """bf16=True halves the base model's memory (what lets an 8B model train on one GPU); the trained LoRA
    weights stay fp32 and one step still changes them with a finite loss."""
    rows = make_split("countdown", "train", 4)
    args = small_config(tmp_path, bf16=True, max_steps=1)
    trainer = DiffuGRPOTrainer(str(EMBEDDED), noisy_length_reward, args=args, train_dataset=rows)
    dtypes = {n: p.dtype for n, p in trainer.policy.model.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" not in n} == {torch.bfloat16}
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}
    before = lora_state(trainer)
    history = trainer.train()
    assert math.isfinite(history[0]["loss"])
    assert any(not torch.equal(before[n], p) for n, p in lora_state(trainer).items())


def test_bf16_updates_reach_the_next_forward(tmp_path):
    """Under bf16 autocast the fp32 adapters are cast to bf16 at each forward. Autocast caches those casts
    until its outermost context exits, and the whole of `train()` runs in one: with the cache on, every
    forward after the first would reuse the first step's adapter weights, so the run would train nothing (and
    the ratio would stay exactly 1). At the second inner step of a rollout the policy has moved: ρ ≠ 1."""
    def alternating_reward(completions, **kw):  # 0, 1 within every group: non-zero advantages
        return [float(i % 2) for i in range(len(completions))]

    rows = make_split("countdown", "train", 4)
    args = small_config(tmp_path, bf16=True, max_steps=2, num_iterations=2, per_device_train_batch_size=2)
    trainer = DiffuGRPOTrainer(str(EMBEDDED), alternating_reward, args=args, train_dataset=rows)
    history = trainer.train()
    assert history[0]["ratio_mean"] == 1.0 and history[0]["frac_reward_zero_std"] == 0.0
    assert history[1]["ratio_mean"] != 1.0
