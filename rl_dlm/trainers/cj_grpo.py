"""CJ-GRPO (arXiv 2509.23924): rollouts that record each token's commit step (EOSER + ASS by default, or
semi-AR / EOSER / ASS), the trajectory-replay estimator (every step's state rebuilt from the commit map,
back-propagated step by step), the clipped token ratio with k3 KL aggregated as a token mean within each
step then a mean over steps, and r − mean advantages.

Defaults are the reference's (yjyddq/EOSER-ASS-RL@5affb4e `cj-grpo/slurm_scripts/train.yaml` and `run.sh`):
G = 6, ε = 0.5, β = 0.04, μ = 8 (its scripts use 8 for countdown and sudoku, 12 for GSM8K and MATH),
lr 3e-6, T = 1.0. (The reference's config class says 0.9, d1's value, but every released script runs with the
train.yaml's 1.0.) The rollout sampler is a component: `sampler=eoser_ass` (the default of `algo=cj_grpo`),
`eoser`, `ass` or `semi_ar`; from Python pass `sampler=` (default: EOSER + ASS over `max_completion_length`).
The remaining differences from the reference code are listed in `rl_dlm/likelihood/trajectory_replay.py`,
`rl_dlm/sampling/full_diffusion.py` and `rl_dlm/sampling/ascending.py`.

    from rl_dlm import CJGRPOTrainer, CJGRPOConfig
    trainer = CJGRPOTrainer(model=path, reward_funcs=[f], args=CJGRPOConfig(), train_dataset=rows)
    trainer.train()
    # rl-dlm train algo=cj_grpo sampler=eoser_ass
"""
from __future__ import annotations

from dataclasses import dataclass

from rl_dlm.advantages import get_advantage
from rl_dlm.components import Components
from rl_dlm.likelihood.trajectory_replay import TrajectoryReplayEstimator
from rl_dlm.objectives import ClippedTokenObjective
from rl_dlm.sampling.full_diffusion import FullDiffusionSampler
from rl_dlm.trainers.base import PresetConfig, RLTrainer


@dataclass
class CJGRPOConfig(PresetConfig):
    num_generations: int = 6
    num_iterations: int = 8
    beta: float = 0.04
    epsilon: float = 0.5
    learning_rate: float = 3e-6
    temperature: float = 1.0  # the reference's train.yaml (its config class's 0.9 is overridden there)


class CJGRPOTrainer(RLTrainer):
    config_class = CJGRPOConfig

    def default_sampler(self):
        a = self.args
        return FullDiffusionSampler(gen_length=a.max_completion_length, step_schedule="ascending", eoser=True,
                                    temperature=a.temperature, remasking=a.remasking)

    def build_components(self, sampler) -> Components:
        a = self.args
        return Components(
            sampler=sampler or self.default_sampler(),
            estimator=TrajectoryReplayEstimator(mask_id=self.policy.mask_id),
            objective=ClippedTokenObjective(epsilon=a.epsilon, epsilon_high=a.epsilon_high, beta=a.beta),
            advantage=get_advantage(a.advantage_name),
        )
