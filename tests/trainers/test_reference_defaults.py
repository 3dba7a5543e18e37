"""Defaults that follow the reference code: coupled-GRPO's sampler follows the model family (a Dream model gets
the Dream sampler, as DiffuCoder's recipe), a sampler made for another family is refused at start-up naming
both, and CJ-GRPO samples at the reference scripts' T = 1.0."""
from __future__ import annotations

import pytest

from rl_dlm.models.families import Family
from rl_dlm.models.policy import Policy
from rl_dlm.sampling.cached import CachedSemiARSampler
from rl_dlm.sampling.dream import DreamSampler
from rl_dlm.sampling.full_diffusion import FullDiffusionSampler
from rl_dlm.sampling.maskgit import MaskGITSampler
from rl_dlm.sampling.semi_ar import SemiARSampler
from rl_dlm.tracking import Tracker
from rl_dlm.trainers.cj_grpo import CJGRPOConfig, CJGRPOTrainer
from rl_dlm.trainers.coupled_grpo import CoupledGRPOConfig, CoupledGRPOTrainer
from rl_dlm.trainers.diffu_grpo import DiffuGRPOConfig, DiffuGRPOTrainer
from tests.conftest import make_tiny_policy
from tests.models.golden import tiny_dream

ARGS = dict(per_device_train_batch_size=4, gradient_accumulation_steps=1, num_generations=4,
            max_completion_length=16, block_length=8, diffusion_steps=8)


def reward(completions, **kw):
    return [0.0] * len(completions)


def dream_policy():
    return Policy(tiny_dream(), tokenizer=None, family=Family("dream", 260, 258, 256, shift_logits=True))


def build(trainer_cls, config_cls, policy, tmp_path, sampler=None, **kw):
    return trainer_cls(policy, {"r": reward}, args=config_cls(output_dir=str(tmp_path), **ARGS, **kw),
                       sampler=sampler, tracker=Tracker(tmp_path, ["none"]))


def test_coupled_grpo_gives_a_dream_model_the_dream_sampler(tmp_path):
    sampler = build(CoupledGRPOTrainer, CoupledGRPOConfig, dream_policy(), tmp_path).components.sampler
    assert isinstance(sampler, DreamSampler)
    assert (sampler.gen_length, sampler.steps, sampler.temperature, sampler.top_p, sampler.alg) == \
        (16, 8, 1.2, 0.95, "entropy")


def test_coupled_grpo_keeps_llada_on_the_semi_ar_sampler_and_a_given_sampler(tokenizer, tmp_path):
    llada = make_tiny_policy(tokenizer)
    assert isinstance(build(CoupledGRPOTrainer, CoupledGRPOConfig, llada, tmp_path).components.sampler,
                      SemiARSampler)
    given = CachedSemiARSampler(gen_length=16, block_length=8, steps=8)
    assert build(CoupledGRPOTrainer, CoupledGRPOConfig, dream_policy(), tmp_path, sampler=given).components.sampler \
        is given  # a sampler the user sets wins when it is made for the model's family


@pytest.mark.parametrize("sampler", [SemiARSampler(gen_length=16, block_length=8, steps=8),
                                     FullDiffusionSampler(gen_length=16, steps=8)])
def test_a_llada_only_sampler_on_a_dream_model_fails_at_start_up_naming_both(sampler, tmp_path):
    name = type(sampler).__name__
    for trainer_cls, config_cls in ((CoupledGRPOTrainer, CoupledGRPOConfig), (DiffuGRPOTrainer, DiffuGRPOConfig)):
        with pytest.raises(ValueError, match=rf"sampler {name} is made for llada models, but the model is a "
                                             r"dream model.*sampler=dream"):
            build(trainer_cls, config_cls, dream_policy(), tmp_path, sampler=sampler)


def test_every_sampler_declares_its_families():
    for cls in (SemiARSampler, CachedSemiARSampler, FullDiffusionSampler, MaskGITSampler, DreamSampler):
        assert cls.families and cls.families <= {"llada", "dream"}, cls.__name__


def test_cj_grpo_samples_at_the_reference_scripts_temperature(tokenizer, tmp_path):
    # yjyddq/EOSER-ASS-RL cj-grpo/slurm_scripts/train.yaml: temperature 1.0 (its config class's 0.9 is d1's).
    assert CJGRPOConfig().temperature == 1.0
    trainer = build(CJGRPOTrainer, CJGRPOConfig, make_tiny_policy(tokenizer), tmp_path)
    assert isinstance(trainer.components.sampler, FullDiffusionSampler)
    assert trainer.components.sampler.temperature == 1.0
