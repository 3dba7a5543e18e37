"""coupled-GRPO and GDPO end to end: two steps change the LoRA weights with a finite loss (tiny random LLaDA,
< 1M parameters); the loop scores old, reference and current log-probs on one shared mask plan; and
`rl-dlm train algo=coupled_grpo|gdpo` runs on the embedded model.

Run: .venv/bin/python -m pytest tests/trainers/test_coupled_gdpo_e2e.py -q      (≈ 15 s on 2 CPU cores)
"""
from __future__ import annotations

import math

import pytest
import torch

from rl_dlm import CoupledGRPOConfig, CoupledGRPOTrainer, GDPOConfig, GDPOTrainer
from rl_dlm.data.tasks import make_split
from tests.conftest import make_tiny_policy

SMALL = dict(max_steps=2, num_generations=2, per_device_train_batch_size=4, num_iterations=1,
             learning_rate=1e-2, max_completion_length=16, block_length=16, diffusion_steps=4, report_to=["none"])


def noisy_length_reward(completions, **kw):
    """Varies within a group so advantages are non-zero."""
    text = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [float(len(t) % 7) for t in text]


def lora_state(trainer):
    return {n: p.detach().clone() for n, p in trainer.policy.model.named_parameters() if "lora_" in n}


def train_two_steps(trainer) -> list[dict]:
    """Train: two logged steps with a finite loss that change the LoRA weights. Returns the history."""
    before = lora_state(trainer)
    history = trainer.train()
    after = lora_state(trainer)
    assert [h["step"] for h in history] == [1, 2]
    assert all(math.isfinite(h["loss"]) for h in history)
    assert any(not torch.equal(before[n], after[n]) for n in before)
    return history


CASES = [
    (CoupledGRPOTrainer, CoupledGRPOConfig, {}),
    (CoupledGRPOTrainer, CoupledGRPOConfig, {"leave_one_out": True, "mask_ratio_min": 0.5, "mask_ratio_max": 0.5}),
    (GDPOTrainer, GDPOConfig, {}),
    (GDPOTrainer, GDPOConfig, {"beta": 0.04, "full_canvas": True, "elbo_nodes": 2}),
    (GDPOTrainer, GDPOConfig, {"elbo_sampler": "monte_carlo"}),
]


@pytest.mark.parametrize("trainer_cls,config_cls,kw", CASES)
def test_two_steps_change_lora_weights_with_finite_loss(tmp_path, tokenizer, trainer_cls, config_cls, kw):
    policy = make_tiny_policy(tokenizer, lora=True)
    assert sum(p.numel() for p in policy.model.parameters()) < 1_000_000
    args = config_cls(output_dir=str(tmp_path), **{**SMALL, **kw})
    trainer = trainer_cls(policy, noisy_length_reward, args=args, train_dataset=make_split("countdown", "train", 8))
    history = train_two_steps(trainer)
    # μ = 1, no dropout: the first inner step scores the old policy on the old plan.
    assert history[0]["ratio_mean"] == 1.0 and history[0]["clip_fraction"] == 0.0
    assert ("kl" in history[0]) == (args.beta > 0)


class PlanSpy:
    """Wraps an estimator and records every plan the loop scores (each scoring asks for the plan's view groups
    first), with whether grad was on."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def view_groups(self, plan):
        self.seen.append((plan.input_ids.clone(), plan.weights.clone(), torch.is_grad_enabled()))
        return self.inner.view_groups(plan)


@pytest.mark.parametrize("trainer_cls,config_cls", [(CoupledGRPOTrainer, CoupledGRPOConfig), (GDPOTrainer, GDPOConfig)])
def test_old_reference_and_current_share_one_plan_per_inner_iteration(tmp_path, tokenizer, trainer_cls, config_cls):
    """μ = 2 inner iterations, 2 micro-batches each, β > 0: the loop scores, in order, old(it0), old(it1),
    ref(it0), ref(it1), then current(it0, mb0), current(it0, mb1), current(it1, mb0), current(it1, mb1)."""
    args = config_cls(output_dir=str(tmp_path), **{**SMALL, "max_steps": 2, "num_iterations": 2, "beta": 0.04,
                                                    "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2})
    trainer = trainer_cls(make_tiny_policy(tokenizer, lora=True), noisy_length_reward, args=args,
                          train_dataset=make_split("countdown", "train", 8))
    spy = PlanSpy(trainer.components.estimator)
    trainer.components.estimator = spy
    trainer.train()
    ids = [s[0] for s in spy.seen]
    weights = [s[1] for s in spy.seen]
    assert len(ids) == 8 and [s[2] for s in spy.seen] == [False] * 4 + [True] * 4
    for it in (0, 1):
        old, ref = ids[it], ids[2 + it]
        current = torch.cat(ids[4 + 2 * it: 6 + 2 * it])
        assert torch.equal(old, ref) and torch.equal(old, current)
        assert torch.equal(weights[it], weights[2 + it]) and torch.equal(weights[it], torch.cat(weights[4 + 2 * it: 6 + 2 * it]))
    assert not torch.equal(ids[0], ids[1]), "each inner iteration draws its own plan"


@pytest.mark.parametrize("algo", ["coupled_grpo", "gdpo"])
def test_cli_runs_two_steps_on_the_embedded_model(tmp_path, capsys, algo):
    from rl_dlm.hydra_app import train_main

    train_main([f"algo={algo}", "max_steps=2", "eval.before=false", "eval.after=false", "num_generations=2",
                "per_device_train_batch_size=4", "max_completion_length=16", "block_length=16", "diffusion_steps=4",
                "task.train_size=8", "task.eval_size=4", f"output_dir={tmp_path}", "report_to=[none]"])
    out = capsys.readouterr().out
    assert f"algo={algo} " in out  # the banner names the algorithm as algo= does
    assert (tmp_path / "final" / "adapter_config.json").exists()


def test_bad_configs_fail_naming_the_key():
    assert CoupledGRPOConfig().num_generations == 10 and GDPOConfig().elbo_nodes == 3  # paper defaults are valid
    with pytest.raises(TypeError, match="p_mask_prompt"):  # not a knob of coupled-GRPO's components
        CoupledGRPOConfig(p_mask_prompt=0.15)
    with pytest.raises(ValueError, match="mask_ratio"):
        CoupledGRPOConfig(mask_ratio_min=0.9)
    with pytest.raises(ValueError, match="elbo_sampler"):
        GDPOConfig(elbo_sampler="simpson")
    with pytest.raises(ValueError, match="elbo_nodes"):
        GDPOConfig(elbo_nodes=0)
    with pytest.raises(ValueError, match="elbo_mask_count"):
        GDPOConfig(elbo_sampler="monte_carlo", elbo_mask_count="floor")
