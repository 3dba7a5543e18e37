"""Clipped *sequence*-ratio objective (GDPO, arXiv 2510.08554 §3; the same shape as GSPO's length-normalised
sequence ratio).

    ELBO_i = Σ_k tokens_ik · logp_ik          (logp: the estimator's reduced [n, L] per-token terms)
    ρ_i    = exp((ELBO_i − ELBO_old_i) / L_i),   L_i = Σ_k tokens_ik
    loss   = mean_i [ −min(ρ_i A_i, clip(ρ_i, 1 − ε_low, 1 + ε_high) A_i) + β · KL_i ]

`tokens` is the completion mask the loop passes (up to and including the end-of-turn token), or every canvas
slot with `full_canvas=True` — the token set must be the one the estimator scores
(`SequenceELBOEstimator(full_canvas=...)`; GDPOTrainer sets both from one flag). The loss is averaged over
sequences, not tokens. β = 0 is GDPO's default; β > 0 adds a sequence-level KL: the k1/k2/k3 estimator
(`rl_dlm.objectives.token.kl_penalty`) on the per-token-normalised difference d_i = (ELBO_ref_i − ELBO_i)/L_i.
The clip fraction counts sequences where the clip is active (TRL's definition, per sequence).

Checked against the GDPO paper's objective (arXiv 2510.08554, ε = 0.5, β = 0) and its official code,
KevinRojas1499/GDPO@1918683:gdpo/gdpo_trainer.py.
Deviation: none in the formula; the ratio's ELBOs share one mask plan (see rl_dlm/likelihood/elbo.py).

Shapes: logp, old_logp, ref_logp, mask [n, L]; adv [n].

    objective = ClippedSequenceObjective(epsilon=0.5)
    loss, stats = objective(logp, old_logp, ref_logp, adv, mask)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rl_dlm.objectives.token import kl_penalty


@dataclass
class ClippedSequenceObjective:
    epsilon: float = 0.5  # ε_low
    epsilon_high: float | None = None  # None = ε_low
    beta: float = 0.0
    kl: str = "k3"
    full_canvas: bool = False
    needs_reference: bool = False

    def __post_init__(self):
        kl_penalty(torch.zeros(1), torch.zeros(1), self.kl)  # validate early
        self.needs_reference = self.beta > 0

    def sequence_logp(self, logp: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """[n, L] per-token terms → (sequence log-prob [n], length L_i [n])."""
        tokens = torch.ones_like(logp) if self.full_canvas else mask.to(logp.dtype)
        return (logp * tokens).sum(1), tokens.sum(1).clamp_min(1)

    def __call__(self, logp: Tensor, old_logp: Tensor, ref_logp: Tensor | None, adv: Tensor,
                 mask: Tensor) -> tuple[Tensor, dict[str, float]]:
        eps_high = self.epsilon if self.epsilon_high is None else self.epsilon_high
        seq, length = self.sequence_logp(logp, mask)
        old_seq, _ = self.sequence_logp(old_logp, mask)
        ratio = torch.exp((seq - old_seq) / length)
        surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - self.epsilon, 1 + eps_high) * adv)
        per_seq = -surrogate
        stats = {}
        if self.beta > 0:
            if ref_logp is None:
                raise ValueError("objective.beta > 0 needs reference log-probs")
            ref_seq, _ = self.sequence_logp(ref_logp, mask)
            kl = kl_penalty(seq / length, ref_seq / length, self.kl)
            per_seq = per_seq + self.beta * kl
            stats["kl"] = kl.mean().item()
        clipped = ((ratio < 1 - self.epsilon) & (adv < 0)) | ((ratio > 1 + eps_high) & (adv > 0))
        stats["clip_fraction"] = clipped.to(logp.dtype).mean().item()
        stats["ratio_mean"] = ratio.detach().mean().item()
        stats["elbo_per_token"] = (seq / length).detach().mean().item()
        return per_seq.mean(), stats


# config-group entries (rl_dlm/component_groups.py)
COMPONENTS = {"objective/sequence": ClippedSequenceObjective}
