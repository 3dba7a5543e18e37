"""diffu-GRPO (d1, arXiv 2504.12216): semi-AR rollouts, the one-step estimator, the clipped token ratio with
k3 KL, and mean-centred advantages. Defaults are the paper's (G = 6, ε = 0.5, β = 0.04, lr 3e-6, T = 0.9,
p_mask_prompt = 0.15; μ = 12 for math, 8 for planning tasks).

    from rl_dlm import DiffuGRPOTrainer, DiffuGRPOConfig
    trainer = DiffuGRPOTrainer(model=path, reward_funcs=[f], args=DiffuGRPOConfig(), train_dataset=rows)
    trainer.train()
    # rl-dlm train algo=diffu_grpo likelihood.p_mask_prompt=0.15 objective.beta=0.04
"""
from __future__ import annotations

from dataclasses import dataclass

from rl_dlm.advantages import get_advantage
from rl_dlm.components import Components
from rl_dlm.likelihood.one_step import OneStepEstimator
from rl_dlm.objectives import ClippedTokenObjective
from rl_dlm.trainers.base import PresetConfig, RLTrainer


@dataclass
class DiffuGRPOConfig(PresetConfig):
    num_iterations: int = 12
    beta: float = 0.04
    epsilon: float = 0.5
    learning_rate: float = 3e-6
    temperature: float = 0.9
    p_mask_prompt: float = OneStepEstimator.p_mask_prompt  # d1's 0.15, the estimator's default


class DiffuGRPOTrainer(RLTrainer):
    config_class = DiffuGRPOConfig

    def build_components(self, sampler) -> Components:
        a = self.args
        return Components(
            sampler=sampler or self.default_sampler(),
            estimator=OneStepEstimator(p_mask_prompt=a.p_mask_prompt, mask_id=self.policy.mask_id),
            objective=ClippedTokenObjective(epsilon=a.epsilon, epsilon_high=a.epsilon_high, beta=a.beta),
            advantage=get_advantage(a.advantage_name),
        )
