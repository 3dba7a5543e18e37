"""SPG end to end through the Python API (`algo_trainer("spg", ...)`, conf/algo/spg.yaml): two steps on a tiny random LLaDA change the LoRA weights with a
finite loss, for the mix (default), EUBO-only and uniform-mask variants, with μ = 2 reusing one rollout.

Run: .venv/bin/python -m pytest tests/trainers/test_spg_e2e.py -q      (≈ 10 s on 2 CPU cores)
"""
from __future__ import annotations

import math

import pytest

from rl_dlm.data.tasks import make_split
from rl_dlm.hydra_app import algo_trainer
from tests.conftest import EMBEDDED, make_tiny_policy
from tests.trainers.test_coupled_gdpo_e2e import SMALL, noisy_length_reward, train_two_steps  # noqa: F401  (shared)


def as_overrides(values: dict) -> list[str]:
    """{key: value} → command-line overrides (lists as [a,b], None as null, booleans in lower case)."""
    def text(v):
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(text(x) for x in v) + "]"
        return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
    return [f"{k}={text(v)}" for k, v in values.items()]


def small_trainer(algo: str, tokenizer, tmp_path, **overrides):
    """`algo` at its own settings, shrunk by SMALL and `overrides`, on a tiny random LLaDA."""
    return algo_trainer(algo, make_tiny_policy(tokenizer, lora=True), noisy_length_reward,
                        train_dataset=make_split("countdown", "train", 8),
                        overrides=as_overrides({"output_dir": str(tmp_path), **SMALL, **overrides}))


VARIANTS = [{}, {"objective.eubo_weight": 1.0, "num_iterations": 2},
            {"likelihood.masking": "uniform", "likelihood.views": 3}]


@pytest.mark.parametrize("kw", VARIANTS)
def test_two_steps_change_lora_weights_with_finite_loss(tmp_path, tokenizer, kw):
    trainer = small_trainer("spg", tokenizer, tmp_path, block_length=8, gradient_accumulation_steps=1, **kw)
    history = train_two_steps(trainer)
    assert all(math.isfinite(h[k]) for h in history for k in ("elbo_per_token", "eubo_per_token"))


def assert_refused_naming_the_knob(algo: str, tmp_path, cases: list[tuple[dict, str]]) -> None:
    """Each bad setting fails at start-up (the trainer checks its components before the model loads)."""
    for kw, key in cases:
        with pytest.raises(ValueError, match=key):
            algo_trainer(algo, str(EMBEDDED), noisy_length_reward, train_dataset=make_split("countdown", "train", 8),
                         overrides=as_overrides({"output_dir": str(tmp_path), **kw}))


def test_bad_settings_fail_before_the_model_loads_naming_the_knob(tmp_path):
    assert_refused_naming_the_knob("spg", tmp_path, [
        ({"objective.eubo_weight": 2.0}, "eubo_weight"), ({"likelihood.masking": "x"}, "masking"),
        ({"likelihood.eubo_beta": 0.0}, "eubo_beta"), ({"likelihood.views": 0}, "views")])
