"""coupled-GRPO (DiffuCoder, arXiv 2506.20639): complementary-mask likelihoods (three views per row, per-row
t ~ U[0.2, 0.8]), the clipped token ratio with k3 KL, and mean-centred advantages (the paper's headline;
`leave_one_out=True` gives the released code's RLOO baseline).

Defaults are the paper's and the released recipe's (recipes/config_coupled_code.yaml of apple/ml-diffucoder):
G = 10, μ = 2, ε = 0.5, β = 0.01, lr 1e-6, 5 rows per micro-batch × 2 accumulation steps, the prompt never
masked. The sampler follows the model family unless one is given: a Dream-family model (Dream, DiffuCoder)
gets the paper's Dream sampler (entropy confidence, top-p 0.95, `diffusion_steps` steps, T from
`temperature`, 1.2 by default); a LLaDA model gets LLaDA's semi-AR sampler. A given sampler made for another
family (the semi-AR sampler on a Dream model) is refused at start-up, naming both (`SemiARSampler.families`,
`rl_dlm.sampling.base.check_sampler_family`). From the command line pass `sampler=dream` with a Dream model,
as `recipes/diffucoder_coupled_grpo.yaml` does.

Differences from the reference code: the estimator's are in `rl_dlm/likelihood/coupled.py` (per-row t), the
Dream sampler's in `rl_dlm/sampling/dream.py`; the advantage is mean-centred by default (the released code
hard-codes leave-one-out: `leave_one_out=True`), and the DiffuCoder recipe trains LoRA adapters with a cosine
schedule (the reference tunes every weight and decays to 0.1 × lr).

    from rl_dlm import CoupledGRPOTrainer, CoupledGRPOConfig
    trainer = CoupledGRPOTrainer(model=path, reward_funcs=[f], args=CoupledGRPOConfig(), train_dataset=rows)
    trainer.train()
    # rl-dlm train algo=coupled_grpo advantage=leave_one_out likelihood.t_min=0.2 likelihood.t_max=0.8
"""
from __future__ import annotations

from dataclasses import dataclass

from rl_dlm.advantages import get_advantage
from rl_dlm.components import Components
from rl_dlm.likelihood.coupled import CoupledEstimator
from rl_dlm.objectives import ClippedTokenObjective
from rl_dlm.sampling.dream import DreamSampler
from rl_dlm.trainers.base import PresetConfig, RLTrainer


@dataclass
class CoupledGRPOConfig(PresetConfig):
    num_generations: int = 10
    per_device_train_batch_size: int = 5
    gradient_accumulation_steps: int = 2
    num_iterations: int = 2
    beta: float = 0.01
    epsilon: float = 0.5
    learning_rate: float = 1e-6
    temperature: float = 1.2
    leave_one_out: bool = False  # True: the released code's r − mean of the other G − 1
    mask_ratio_min: float = 0.2  # t ~ U[mask_ratio_min, mask_ratio_max] per row
    mask_ratio_max: float = 0.8

    def __post_init__(self):
        super().__post_init__()
        CoupledEstimator(self.mask_ratio_min, self.mask_ratio_max)  # validates the range


class CoupledGRPOTrainer(RLTrainer):
    config_class = CoupledGRPOConfig

    def default_sampler(self):
        if self.family_name != "dream":
            return super().default_sampler()
        a = self.args
        return DreamSampler(gen_length=a.max_completion_length, steps=a.diffusion_steps, temperature=a.temperature,
                            top_p=0.95, alg="entropy")

    def build_components(self, sampler) -> Components:
        a = self.args
        return Components(
            sampler=sampler or self.default_sampler(),
            estimator=CoupledEstimator(t_min=a.mask_ratio_min, t_max=a.mask_ratio_max, mask_id=self.policy.mask_id),
            objective=ClippedTokenObjective(epsilon=a.epsilon, epsilon_high=a.epsilon_high, beta=a.beta),
            advantage=get_advantage(a.advantage_name),
        )
