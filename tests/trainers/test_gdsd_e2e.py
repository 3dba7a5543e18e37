"""GDSD and TLC end to end through the Python API (`algo_trainer("gdsd", ...)`, conf/algo/gdsd.yaml): two steps on a tiny random LLaDA change the LoRA weights with
a finite loss; at the first inner step Δ ≡ 0 (every row inside the clamp window, KL 0); the loop hands the
objective per-draw scores [n, K, L], for the current, old and reference policy alike.

Run: .venv/bin/python -m pytest tests/trainers/test_gdsd_e2e.py -q      (≈ 15 s on 2 CPU cores)
"""
from __future__ import annotations

import pytest

from tests.trainers.test_spg_e2e import assert_refused_naming_the_knob, small_trainer, train_two_steps


@pytest.mark.parametrize("kw", [{}, {"likelihood.tlc": True, "num_iterations": 2},
                                {"objective.clamp": "sum", "likelihood.full_canvas": True}])
def test_two_steps_change_lora_weights_with_finite_loss(tmp_path, tokenizer, kw):
    trainer = small_trainer("gdsd", tokenizer, tmp_path, **{"objective.psi": 1.0, **kw})
    history = train_two_steps(trainer)
    assert history[0]["log_ratio_per_token"] == 0.0 and history[0]["in_window_fraction"] == 1.0
    assert history[0]["kl"] == 0.0


def test_the_objective_gets_per_draw_scores_from_the_loop(tmp_path, tokenizer):
    trainer = small_trainer("gdsd", tokenizer, tmp_path, max_steps=2, num_iterations=2, **{"likelihood.draws": 3})
    inner, shapes = trainer.components.objective, []

    def spy(terms, old, ref, adv, mask):
        shapes.append((tuple(terms.shape), tuple(old.shape), tuple(ref.shape), tuple(mask.shape)))
        return inner(terms, old, ref, adv, mask)

    spy.needs_reference = inner.needs_reference
    trainer.components.objective = spy
    trainer.train()
    assert shapes and all(s[0] == s[1] == s[2] == (4, 3, 16) and s[3] == (4, 16) for s in shapes)


def test_bad_settings_fail_before_the_model_loads_naming_the_knob(tmp_path):
    assert_refused_naming_the_knob("gdsd", tmp_path, [
        ({"likelihood.p_mask_prompt": 0.15}, "p_mask_prompt"), ({"objective.clamp": "x"}, "clamp"),
        ({"likelihood.draws": 0}, "draws"), ({"objective.epsilon": 1.5}, "epsilon")])
