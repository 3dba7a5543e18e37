"""GDSD and TLC end to end through the Python API: two steps on a tiny random LLaDA change the LoRA weights with
a finite loss; at the first inner step Δ ≡ 0 (every row inside the clamp window, KL 0); the loop hands the
objective per-draw scores [n, K, L], for the current, old and reference policy alike.

Run: .venv/bin/python -m pytest tests/trainers/test_gdsd_e2e.py -q      (≈ 15 s on 2 CPU cores)
"""
from __future__ import annotations

import pytest
import torch

from rl_dlm.data.tasks import make_split
from rl_dlm.trainers.gdsd import GDSDConfig, GDSDTrainer
from tests.conftest import make_tiny_policy
from tests.trainers.test_coupled_gdpo_e2e import SMALL, noisy_length_reward
from tests.trainers.test_spg_e2e import train_two_steps


@pytest.mark.parametrize("kw", [{}, {"tlc": True, "num_iterations": 2}, {"gdsd_clamp": "sum", "full_canvas": True}])
def test_two_steps_change_lora_weights_with_finite_loss(tmp_path, tokenizer, kw):
    args = GDSDConfig(output_dir=str(tmp_path), **{**SMALL, "psi": 1.0, **kw})
    trainer = GDSDTrainer(make_tiny_policy(tokenizer, lora=True), noisy_length_reward, args=args,
                          train_dataset=make_split("countdown", "train", 8))
    history = train_two_steps(trainer)
    assert history[0]["log_ratio_per_token"] == 0.0 and history[0]["in_window_fraction"] == 1.0
    assert history[0]["kl"] == 0.0


def test_the_objective_gets_per_draw_scores_from_the_loop(tmp_path, tokenizer):
    args = GDSDConfig(output_dir=str(tmp_path), **{**SMALL, "max_steps": 2, "num_iterations": 2, "gdsd_draws": 3})
    trainer = GDSDTrainer(make_tiny_policy(tokenizer, lora=True), noisy_length_reward, args=args,
                          train_dataset=make_split("countdown", "train", 8))
    inner, shapes = trainer.components.objective, []

    def spy(terms, old, ref, adv, mask):
        shapes.append((tuple(terms.shape), tuple(old.shape), tuple(ref.shape), tuple(mask.shape)))
        return inner(terms, old, ref, adv, mask)

    spy.needs_reference = inner.needs_reference
    trainer.components.objective = spy
    trainer.train()
    assert shapes and all(s[0] == s[1] == s[2] == (4, 3, 16) and s[3] == (4, 16) for s in shapes)


def test_bad_configs_fail_naming_the_key():
    assert GDSDConfig().psi == 10.0 and GDSDConfig().leave_one_out and not GDSDConfig().tlc
    for kw, key in [({"p_mask_prompt": 0.15}, "p_mask_prompt"), ({"gdsd_clamp": "x"}, "gdsd_clamp"),
                    ({"gdsd_draws": 0}, "gdsd_draws"), ({"epsilon": 1.5}, "epsilon")]:
        with pytest.raises(ValueError, match=key):
            GDSDConfig(**kw)
