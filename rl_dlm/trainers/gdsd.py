"""GDSD (arXiv 2605.29398) and TLC: semi-AR rollouts, ESPO's stratified mask/complement pairs scored per draw,
a regression of the per-token log-likelihood ratio against π_old onto ψ·A (self-distillation toward the
advantage-tilted teacher, no importance ratio), a k2 KL, and leave-one-out advantages. `tlc=True` weights the
score by 1/t and 1/t′ (TLC). The estimator and objective, and every difference from the reference code, are in
`rl_dlm/likelihood/gdsd.py`.

Defaults are the reference's GSM8K script (GaryBall/GDSD@3fb6780 `scripts/run_gdsd_llada_gsm8k.sh`,
`scripts/train_gdsd.yaml`): ψ 10, ε 4e-4, β 1e-3, lr 3e-6, K = 2, μ = 8, T = 1.0.

    from rl_dlm.trainers.gdsd import GDSDConfig, GDSDTrainer
    trainer = GDSDTrainer(model=path, reward_funcs=[f], args=GDSDConfig(tlc=True), train_dataset=rows)
    trainer.train()
"""
from __future__ import annotations

from dataclasses import dataclass

from rl_dlm.advantages import get_advantage
from rl_dlm.likelihood.gdsd import GDSDEstimator, GDSDObjective
from rl_dlm.components import Components
from rl_dlm.trainers.base import RLConfig, RLTrainer


@dataclass
class GDSDConfig(RLConfig):
    num_iterations: int = 8
    beta: float = 1e-3  # k2 KL on the per-draw scores
    epsilon: float = 4e-4  # clamp window [log(1 − ε), log(1 + ε)] on the log-ratio
    temperature: float = 1.0
    leave_one_out: bool = True  # A = r − mean of the other G − 1
    p_mask_prompt: float = 0.0  # the prompt is never masked
    psi: float = 10.0  # ψ: GSM8K/MATH 10, the reference's demos 1
    tlc: bool = False  # True: 1/t and 1/t′ weights (TLC)
    gdsd_clamp: str = "token_mean"  # "token_mean": ε on Δ/L; "sum": on Δ (the reference); "none"
    gdsd_draws: int = 2  # K mask/complement pairs per row, each its own score
    full_canvas: bool = False
    mask_tail: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.p_mask_prompt != 0.0:
            raise ValueError(f"p_mask_prompt={self.p_mask_prompt}: GDSD never masks the prompt; "
                             "leave p_mask_prompt at 0")
        self.estimator(), self.objective()  # validate the knobs at construction

    def estimator(self, mask_id: int = -1) -> GDSDEstimator:
        return GDSDEstimator(mask_id=mask_id, draws=self.gdsd_draws, tlc=self.tlc, full_canvas=self.full_canvas,
                             mask_tail=self.mask_tail)

    def objective(self) -> GDSDObjective:
        return GDSDObjective(psi=self.psi, epsilon=self.epsilon, clamp=self.gdsd_clamp, beta=self.beta,
                             full_canvas=self.full_canvas)


class GDSDTrainer(RLTrainer):
    config_class = GDSDConfig

    def build_components(self, sampler) -> Components:
        a = self.args
        return Components(sampler=sampler or self.default_sampler(),
                          estimator=a.estimator(mask_id=self.policy.mask_id),
                          objective=a.objective(), advantage=get_advantage(a.advantage_name))
