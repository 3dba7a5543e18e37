"""Policy-gradient objectives: `objective(logp, old_logp, ref_logp, adv, mask) -> (loss, stats)`.

`ClippedTokenObjective` is the PPO/GRPO clipped surrogate at token level (d1 eq. 3; DiffuCoder; CJ-GRPO;
IGPO's default):

    ρ_k = exp(logp_k − old_logp_k)
    loss = Σ_k mask_k · [ −min(ρ_k A, clip(ρ_k, 1 − ε_low, 1 + ε_high) A) + β · KL_k ] / Σ_k mask_k

KL estimators on d = ref_logp − logp: k1 = −d, k2 = d²/2, k3 = exp(d) − d − 1 (d1 uses k3).
The clip fraction counts tokens where the clip is active: ρ < 1 − ε_low with A < 0, or ρ > 1 + ε_high with
A > 0 (TRL's definition).

Shapes: logp, old_logp, ref_logp, mask [n, L]; adv [n].

    objective = ClippedTokenObjective(epsilon=0.5, beta=0.04)
    loss, stats = objective(logp, old_logp, ref_logp, adv, mask)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def kl_penalty(logp: Tensor, ref_logp: Tensor, kind: str) -> Tensor:
    d = ref_logp - logp
    if kind == "k1":
        return -d
    if kind == "k2":
        return 0.5 * d * d
    if kind == "k3":
        return torch.exp(d) - d - 1
    raise ValueError(f"objective.kl must be one of k1, k2, k3; got {kind!r}")


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1)


@dataclass
class ClippedTokenObjective:
    epsilon: float = 0.2  # ε_low
    epsilon_high: float | None = None  # None = ε_low
    beta: float = 0.0
    kl: str = "k3"
    needs_reference: bool = False

    def __post_init__(self):
        kl_penalty(torch.zeros(1), torch.zeros(1), self.kl)  # validate early
        self.needs_reference = self.beta > 0

    def __call__(self, logp: Tensor, old_logp: Tensor, ref_logp: Tensor | None, adv: Tensor,
                 mask: Tensor) -> tuple[Tensor, dict[str, float]]:
        eps_high = self.epsilon if self.epsilon_high is None else self.epsilon_high
        mask = mask.to(logp.dtype)
        ratio = torch.exp(logp - old_logp)
        a = adv[:, None]
        surrogate = torch.minimum(ratio * a, torch.clamp(ratio, 1 - self.epsilon, 1 + eps_high) * a)
        per_token = -surrogate
        stats = {}
        if self.beta > 0:
            if ref_logp is None:
                raise ValueError("objective.beta > 0 needs reference log-probs")
            kl = kl_penalty(logp, ref_logp, self.kl)
            per_token = per_token + self.beta * kl
            stats["kl"] = masked_mean(kl, mask).item()
        clipped = ((ratio < 1 - self.epsilon) & (a < 0)) | ((ratio > 1 + eps_high) & (a > 0))
        stats["clip_fraction"] = masked_mean(clipped.to(logp.dtype), mask).item()
        stats["ratio_mean"] = masked_mean(ratio.detach(), mask).item()
        return masked_mean(per_token, mask), stats


# config-group entries (rl_dlm/component_groups.py)
COMPONENTS = {"objective/token": ClippedTokenObjective}
