"""MDPO's confidence-weighted token objective (arXiv 2508.13148 §3), loop stage 5 of the per-step credit in
rl_dlm/step_credit.py: per step, Σ_i w_i ℓ_i / rows with w_i = c_i·λ/L = c_i/|masked_t| on the targets, the
weights carried by the `mask` argument (`PredictionReplayEstimator`'s view weights, rl_dlm/likelihood/prediction_replay.py).

Checked against autonomousvision/mdpo@e6ae439:src/open_r1/mdpo/mdpo_trainer.py (`compute_loss`). Deviation, on
purpose: the loss divides by |masked_t| once: λ = L/|masked_t| times a per-canvas mean (1/L), i.e. a
confidence-weighted mean over the masked targets of each row, then a mean over rows. The reference multiplies by
λ and divides by Σ|masked| again (so by |masked|² overall); the k2 KL is weighted the same way as the policy
term (the reference weights it by confidence but not λ).

    objective = WeightedTokenObjective(beta=0.02, kl="k2")
    loss, stats = objective(logp, old_logp, ref_logp, adv, weights)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rl_dlm.objectives.token import kl_penalty


@dataclass
class WeightedTokenObjective:
    """Clipped ratio with per-token weights (the mask argument carries them):

        loss = Σ_{n,i} w_ni · [ −min(ρ A, clip(ρ, 1 − ε, 1 + ε_high) A) + β · KL ] / #rows with a weight

    With MDPO's step-replay weights (c_i / |masked_t|) this is the confidence-weighted token mean over each
    row's masked targets, then the mean over rows. μ = 1 makes ρ ≡ 1, so the clip never acts. Shapes: logp,
    old_logp, ref_logp, weights [n, L]; adv [n]."""

    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.02
    kl: str = "k2"
    needs_reference: bool = False

    def __post_init__(self):
        kl_penalty(torch.zeros(1), torch.zeros(1), self.kl)
        self.needs_reference = self.beta > 0

    def __call__(self, logp: Tensor, old_logp: Tensor, ref_logp: Tensor | None, adv: Tensor,
                 weights: Tensor) -> tuple[Tensor, dict[str, float]]:
        eps_high = self.epsilon if self.epsilon_high is None else self.epsilon_high
        weights = weights.to(logp.dtype)
        on = weights != 0
        rows = on.any(1).sum().clamp_min(1)
        ratio = torch.exp(logp - old_logp)
        a = adv[:, None]
        per_token = -torch.minimum(ratio * a, torch.clamp(ratio, 1 - self.epsilon, 1 + eps_high) * a)
        stats = {}
        count = on.sum().clamp_min(1)
        if self.beta > 0:
            if ref_logp is None:
                raise ValueError("objective.beta > 0 needs reference log-probs")
            kl = kl_penalty(logp, ref_logp, self.kl)
            per_token = per_token + self.beta * kl
            stats["kl"] = ((kl * on).sum() / count).item()
        clipped = ((ratio < 1 - self.epsilon) & (a < 0)) | ((ratio > 1 + eps_high) & (a > 0))
        stats["clip_fraction"] = ((clipped & on).sum() / count).item()
        stats["ratio_mean"] = ((ratio.detach() * on).sum() / count).item()
        return (per_token * weights).sum() / rows, stats


# config-group entries (rl_dlm/component_groups.py)
COMPONENTS = {"objective/weighted_token": WeightedTokenObjective}
