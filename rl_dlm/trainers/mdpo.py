"""MDPO (arXiv 2508.13148): MaskGIT rollouts that record every step's predicted completion and confidences,
a reward for every step's prediction (one batched reward call), per-step advantages z-scored per step within
each group, the k steps with the most advantage mass per group, and a confidence- and λ-weighted loss on the
predictions at the masked positions of each kept state, with k2 KL. Components: `MaskGITSampler`,
`StepRewards` (stage 2b), `per_step_advantage`, `PredictionReplayEstimator`, `WeightedTokenObjective`
(see `rl_dlm/step_credit.py` for the formulas and the deviations from the reference).

Defaults are the paper's: T = 0.4, 128 steps, k = 8, β = 0.02, μ = 1 (on-policy, ratio ≡ 1), lr 7e-7;
the paper generates 512 tokens and fine-tunes fully (here: `max_completion_length` and LoRA, as every
trainer). The reference's released demo config (autonomousvision/mdpo@e6ae439
`recipes/LLaDA-Instruct/mdpo/config_demo.yaml`) differs from the paper: T = 0.1, 16 trained steps, β = 0,
lr 1e-5, G = 4; pass those keys to reproduce it. As in the reference, the temperature-T softmax gives the
commit order, the RCR confidences, the loss weights and the replayed log-probs. Running confidence remasking
is a sampler option: `sampler.rcr=true`, or `MaskGITSampler(rcr=True)`.

    from rl_dlm import MDPOTrainer, MDPOConfig
    trainer = MDPOTrainer(model=path, reward_funcs=[f], args=MDPOConfig(), train_dataset=rows)
    trainer.train()
    # rl-dlm train algo=mdpo sampler.rcr=true
"""
from __future__ import annotations

from dataclasses import dataclass

from rl_dlm.components import Components
from rl_dlm.likelihood.prediction_replay import PredictionReplayEstimator
from rl_dlm.objectives import WeightedTokenObjective
from rl_dlm.sampling.maskgit import MaskGITSampler
from rl_dlm.step_credit import StepRewards, per_step_advantage
from rl_dlm.trainers.base import PresetConfig, RLTrainer


@dataclass
class MDPOConfig(PresetConfig):
    num_iterations: int = 1
    beta: float = 0.02
    epsilon: float = 0.2
    learning_rate: float = 7e-7
    temperature: float = 0.4
    diffusion_steps: int = 128
    top_k_steps: int = 8  # denoising steps trained per rollout (most Σ_group |A_t|)

    def __post_init__(self):
        super().__post_init__()
        if self.top_k_steps < 1:
            raise ValueError(f"top_k_steps must be ≥ 1, got {self.top_k_steps}")


class MDPOTrainer(RLTrainer):
    config_class = MDPOConfig

    def default_sampler(self):
        a = self.args
        return MaskGITSampler(gen_length=a.max_completion_length, steps=a.diffusion_steps,
                              temperature=a.temperature)

    def build_components(self, sampler) -> Components:
        a = self.args
        sampler = sampler or self.default_sampler()
        temperature = getattr(sampler, "temperature", a.temperature) or 1.0  # log-probs of the sampled policy
        return Components(
            sampler=sampler,
            estimator=PredictionReplayEstimator(top_k_steps=a.top_k_steps,
                                                temperature=temperature,
                                                mask_id=self.policy.mask_id, stop_id=self.policy.stop_id),
            objective=WeightedTokenObjective(epsilon=a.epsilon, epsilon_high=a.epsilon_high, beta=a.beta,
                                             kl="k2"),
            advantage=per_step_advantage,
            refiners=[StepRewards()],
        )
