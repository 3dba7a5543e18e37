"""SPG (arXiv 2510.09541): semi-AR rollouts, the sandwich of an ELBO (A > 0) and an upper bound, by default
the "mix" ω·EUBO + (1 − ω)·ELBO (A ≤ 0), with no ratio, clip or KL, and r − mean advantages. The estimator
and objective, and every difference from the reference code, are in `rl_dlm/likelihood/spg.py`.

Defaults are the reference's mix recipe (facebookresearch/SPG@a1c7120
`spg/slurm_scripts/spg_mix/gsm_base_spg_mix_beta1.5_weight0.5.sbatch`): β_EUBO 1.5, ω 0.5, K = 2 views,
μ = 4, G = 6, 6 rows per device × 2 accumulation steps, lr 3e-6, T 0.9, block 32, KL 0.

    from rl_dlm.trainers.spg import SPGConfig, SPGTrainer
    trainer = SPGTrainer(model=path, reward_funcs=[f], args=SPGConfig(), train_dataset=rows)
    trainer.train()
"""
from __future__ import annotations

from dataclasses import dataclass

from rl_dlm.advantages import get_advantage
from rl_dlm.likelihood.spg import SandwichObjective, SPGEstimator
from rl_dlm.components import Components
from rl_dlm.trainers.base import RLConfig, RLTrainer


@dataclass
class SPGConfig(RLConfig):
    num_iterations: int = 4
    gradient_accumulation_steps: int = 2
    beta: float = 0.0  # SPG has no KL term
    p_mask_prompt: float = 0.0  # the prompt is never masked
    eubo_beta: float = 1.5  # β of the upper bound (≥ 1 keeps it above log π)
    eubo_weight: float = 0.5  # ω: 0.5 = "mix" (the authors' advice), 1 = EUBO only
    spg_views: int = 2  # K masked views per row
    spg_masking: str = "block"  # "block" (the reference) or "uniform" (m ~ U{1..|o|})

    def __post_init__(self):
        super().__post_init__()
        if self.beta != 0.0:
            raise ValueError(f"beta={self.beta}: SPG has no KL term (the reference refuses β > 0); leave beta at 0")
        if self.p_mask_prompt != 0.0:
            raise ValueError(f"p_mask_prompt={self.p_mask_prompt}: SPG never masks the prompt; "
                             "leave p_mask_prompt at 0")
        self.estimator(), self.objective()  # validate the knobs at construction

    def estimator(self, mask_id: int = -1) -> SPGEstimator:
        return SPGEstimator(mask_id=mask_id, views=self.spg_views, eubo_beta=self.eubo_beta,
                            masking=self.spg_masking,
                            block_length=self.block_length)

    def objective(self) -> SandwichObjective:
        return SandwichObjective(eubo_weight=self.eubo_weight)


class SPGTrainer(RLTrainer):
    config_class = SPGConfig

    def build_components(self, sampler) -> Components:
        a = self.args
        return Components(sampler=sampler or self.default_sampler(),
                          estimator=a.estimator(mask_id=self.policy.mask_id),
                          objective=a.objective(), advantage=get_advantage(a.advantage_name))
