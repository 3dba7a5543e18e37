"""ESPO (arXiv 2512.03759): semi-AR rollouts, the stratified coupled sequence ELBO (K draws, each a mask and
its complement), GDPO's clipped sequence ratio exp((ELBO − ELBO_old)/L), a k2 KL on the sequence ELBOs, and
leave-one-out advantages. The estimator and objective, and every difference from the reference code, are in
`rl_dlm/likelihood/espo.py`.

Defaults are the reference's LLaDA recipes (ML-GSAI/ESPO@b5f2dac `recipes/run_*_llada.sh`, `train.yaml`):
K = 2, μ = 8, G = 6, ε = 0.2, β = 1e-3 (GSM8K/MATH), lr 3e-6, T = 1.0, block 32; the prompt is never masked.

    from rl_dlm.trainers.espo import ESPOConfig, ESPOTrainer
    trainer = ESPOTrainer(model=path, reward_funcs=[f], args=ESPOConfig(), train_dataset=rows)
    trainer.train()
"""
from __future__ import annotations

from dataclasses import dataclass

from rl_dlm.advantages import get_advantage
from rl_dlm.likelihood.espo import ESPOEstimator, ESPOObjective
from rl_dlm.components import Components
from rl_dlm.trainers.base import RLConfig, RLTrainer


@dataclass
class ESPOConfig(RLConfig):
    num_iterations: int = 8
    beta: float = 1e-3  # k2 on the sequence ELBOs: β·½(ELBO − ELBO_ref)²/L
    epsilon: float = 0.2
    temperature: float = 1.0
    leave_one_out: bool = True  # A = r − mean of the other G − 1
    p_mask_prompt: float = 0.0  # the prompt is never masked
    espo_draws: int = 2  # K coupled draws per row (2K forwards per likelihood)
    full_canvas: bool = False
    mask_tail: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.p_mask_prompt != 0.0:
            raise ValueError(f"p_mask_prompt={self.p_mask_prompt}: ESPO never masks the prompt; "
                             "leave p_mask_prompt at 0")
        self.estimator()  # validates espo_draws, full_canvas and mask_tail

    def estimator(self, mask_id: int = -1) -> ESPOEstimator:
        return ESPOEstimator(mask_id=mask_id, draws=self.espo_draws, full_canvas=self.full_canvas,
                             mask_tail=self.mask_tail)

    def objective(self) -> ESPOObjective:
        return ESPOObjective(epsilon=self.epsilon, epsilon_high=self.epsilon_high, beta=self.beta,
                             full_canvas=self.full_canvas)


class ESPOTrainer(RLTrainer):
    config_class = ESPOConfig

    def build_components(self, sampler) -> Components:
        a = self.args
        return Components(sampler=sampler or self.default_sampler(),
                          estimator=a.estimator(mask_id=self.policy.mask_id),
                          objective=a.objective(), advantage=get_advantage(a.advantage_name))
