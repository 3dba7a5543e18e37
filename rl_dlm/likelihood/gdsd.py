"""GDSD, Guided Denoiser Self-Distillation (arXiv 2605.29398), and its TLC variant.

Reverse-KL-regularised RL, max_π E_π[ψA] − KL(π‖π_old) − β·KL(π‖π_ref), has a closed-form optimum: π_old
(and π_ref, with weight β) tilted by exp(ψA). GDSD distils toward that advantage-guided teacher directly: it
regresses the denoiser's log-likelihood ratio against π_old onto ψA, with no importance-weighted surrogate.

Score (`GDSDEstimator`). The masks are ESPO's (`rl_dlm/likelihood/espo.py`, imported): K draws per row, each
a stratified mask M_k and its complement, so every position is masked exactly once per pair. The per-draw
score keeps the K draws *separate*:

    S_θ(n, k) = ½ Σ_i log p_θ(o_i | the view of pair k where i is masked)            (GDSD: no 1/t)
    S_θ(n, k) = ½ [ Σ_{i∈M_k} log p_θ(o_i | ·)/t + Σ_{i∉M_k} log p_θ(o_i | ·)/t′ ]   (TLC: ESPO's coupled ELBO)

`reduce` returns [N, K, L] per-token terms (the pair summed, draws not averaged); `.sum(-1)` is S [N, K].

Objective (`GDSDObjective`), with Δ = S_θ − S_old on one shared plan and L_n the completion length:

    loss = (1/b) Σ_{n,k} ( clamp(Δ/L_n, log(1 − ε), log(1 + ε)) − ψ A_n )²
         + β (1/b) Σ_{n,k} ½ (S_θ − S_ref)² / (K L_n)                                       (k2 KL)

Unclamped, the loss is (1/b) Σ ((S_θ − S_teacher)/L)² with S_teacher = S_old + L·ψ·A: a regression onto the
old policy tilted by ψA per token, minimised (gradient 0) exactly at (S_θ − S_old)/L = ψA. At θ_old the
gradient is −(2ψ/(bL)) Σ A ∇S, REINFORCE on S. Outside the clamp window the gradient is exactly 0 on either
side (PPO's min keeps the corrective side); `in_window_fraction` logs the share of (row, draw) pairs inside.
The advantage is leave-one-out with no std division (`leave_one_out=True`).

Contract growth: the objective needs one score per (row, draw), so `reduce` returns [N, K, L] instead of
[N, L]. Today's loop passes the reduced tensor through opaquely (it indexes rows and detaches), so this runs
without a loop change; the general contract is "reduce returns a tensor whose first dim is rows; the
objective that pairs with the estimator knows the rest".

Reference code: GaryBall/GDSD@3fb6780:gdsd/trainers/gdsd_trainer_batchll.py (score `:457-485`, loss
`:191-200`, advantage `:735-757`) and `gdsd_trainer_tlc.py` (`:456-474`). Deviations:
- **the clamp window acts on Δ/L** (`clamp="token_mean"`, GSPO style), not on the summed Δ: the reference's
  ε = 4e-4 on the sum is |Δ/L| ≤ 1.6e-6 at L = 256, so almost every row leaves the window after one step and
  gives no gradient. `clamp="sum"` restores the reference, `clamp="none"` drops the window;
- TLC's subtraction of the detached vocabulary-mean logit is left out: log-softmax is shift-invariant, so it
  changes nothing but rounding; TLC here is only the 1/t, 1/t′ weighting, which is all TLC changes;
- masks are ESPO's per-row stratified masks (see rl_dlm/likelihood/espo.py for ESPO's own deviations, which
  the GDSD code shares), and dropout is off in both passes, so Δ ≡ 0 at the first inner step;
- L is the completion up to the end-of-turn token by default; `full_canvas=True` scores every canvas slot as
  the reference.

Run: `rl-dlm train algo=gdsd` (conf/algo/gdsd.yaml; `likelihood.tlc=true` for TLC), or from Python
`rl_dlm.hydra_app.algo_trainer("gdsd", model, reward_funcs, train_dataset=rows)` (docs/trainers/gdsd.md).

    est = GDSDEstimator(draws=2, tlc=False, mask_id=mask_id)
    plan = est.plan(rollout, iteration=0)                       # input_ids [N, 2K, P + L], weights [N, 2K, L]
    scores = est.reduce(score(policy, rollout, plan), plan)     # [N, K, L]; .sum(-1) is S [N, K]
    loss, stats = GDSDObjective(psi=10.0, beta=1e-3)(scores, old_scores, ref_scores, adv, completion_mask)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from rl_dlm.components import all_views, completion_tokens
from rl_dlm.likelihood.base import MaskPlan
from rl_dlm.likelihood.espo import ESPOEstimator
from rl_dlm.sampling.rollout import Rollout

CLAMPS = ("token_mean", "sum", "none")


@dataclass
class GDSDEstimator:
    draws: int = 2  # K mask/complement pairs per row, scored separately
    tlc: bool = False  # True: 1/t and 1/t′ weights (TLC = ESPO's coupled ELBO per draw)
    full_canvas: bool = False
    mask_tail: bool = False
    mask_id: int = -1  # the policy's mask id (`policy.mask_id`), given by the trainer
    requires: frozenset = frozenset()
    fixed_plan = False  # a fresh plan for each inner iteration
    view_groups = staticmethod(all_views)
    objective_mask = staticmethod(completion_tokens)
    scores = "per_draw"  # reduce keeps each draw apart, [n, K, L], for GDSDObjective (rl_dlm/components.py)

    def __post_init__(self):
        if self.draws < 1:
            raise ValueError(f"draws must be at least 1; got {self.draws}")
        self._masks()  # validates full_canvas and mask_tail

    def _masks(self) -> ESPOEstimator:
        return ESPOEstimator(draws=self.draws, full_canvas=self.full_canvas, mask_tail=self.mask_tail,
                             mask_id=self.mask_id)

    def plan(self, rollout: Rollout, iteration: int) -> MaskPlan:
        """ESPO's plan (views M_0, M_0^c, M_1, …; weights ½/(K t)) reweighted: ½/t (TLC) or ½ (GDSD)."""
        plan = self._masks().plan(rollout, iteration)
        weights = plan.weights * self.draws if self.tlc else 0.5 * (plan.weights > 0).float()
        return replace(plan, weights=weights)

    def reduce(self, view_logp: Tensor, plan: MaskPlan) -> Tensor:
        """[N, 2K, L] view log-probs → [N, K, L]: each pair's weighted terms summed, the draws kept apart."""
        n, views, length = view_logp.shape
        return (plan.weights * view_logp).reshape(n, views // 2, 2, length).sum(2)


@dataclass
class GDSDObjective:
    psi: float = 10.0  # ψ: the teacher's tilt per unit of advantage
    epsilon: float = 4e-4  # clamp window [log(1 − ε), log(1 + ε)]
    clamp: str = "token_mean"  # "token_mean": on Δ/L; "sum": on Δ (the reference); "none"
    beta: float = 1e-3  # k2 KL on the per-draw scores
    full_canvas: bool = False
    needs_reference: bool = False
    takes = "per_draw"  # the [n, K, L] per-draw scores of GDSDEstimator.reduce

    def __post_init__(self):
        if self.clamp not in CLAMPS:
            raise ValueError(f"clamp must be one of {CLAMPS}; got {self.clamp!r}")
        if self.clamp != "none" and not 0 < self.epsilon < 1:
            raise ValueError(f"epsilon must lie in (0, 1) for the GDSD clamp window; got {self.epsilon}")
        self.needs_reference = self.beta > 0

    def scores(self, terms: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """[n, K, L] per-token terms → (S [n, K], L_n [n, 1])."""
        tokens = torch.ones_like(terms[:, 0]) if self.full_canvas else mask.to(terms.dtype)
        return (terms * tokens[:, None]).sum(-1), tokens.sum(-1, keepdim=True).clamp_min(1)

    def __call__(self, terms: Tensor, old_terms: Tensor, ref_terms: Tensor | None, adv: Tensor,
                 mask: Tensor) -> tuple[Tensor, dict[str, float]]:
        s, length = self.scores(terms, mask)
        s_old, _ = self.scores(old_terms, mask)
        delta = s - s_old
        n, k = s.shape
        lo, hi = math.log(1 - self.epsilon), math.log(1 + self.epsilon)
        ratio = delta / length  # the per-token log-likelihood ratio against π_old
        window = delta if self.clamp == "sum" else ratio  # what the clamp window is applied to
        if self.clamp == "sum":
            per_token = delta.clamp(lo, hi) / length
        else:
            per_token = ratio.clamp(lo, hi) if self.clamp == "token_mean" else ratio
        loss = ((per_token - self.psi * adv[:, None]) ** 2).sum() / n
        stats = {"log_ratio_per_token": ratio.detach().mean().item(),
                 "in_window_fraction": 1.0 if self.clamp == "none" else
                 ((window >= lo) & (window <= hi)).to(terms.dtype).mean().item()}
        if self.beta > 0:
            if ref_terms is None:
                raise ValueError("objective.beta > 0 needs reference log-probs")
            s_ref, _ = self.scores(ref_terms, mask)
            kl = 0.5 * (s - s_ref) ** 2 / length
            loss = loss + self.beta * kl.sum() / (n * k)
            stats["kl"] = kl.detach().mean().item()
        return loss, stats


# config-group entries (rl_dlm/component_groups.py)
COMPONENTS = {"likelihood/gdsd": GDSDEstimator, "objective/gdsd": GDSDObjective}
