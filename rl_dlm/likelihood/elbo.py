"""Sequence ELBO estimators (GDPO, arXiv 2510.08554 §3, the "semi-deterministic Monte Carlo" ELBO).

The masked-diffusion ELBO of a completion o (length L) given the prompt q, with the linear schedule, is

    ELBO(o | q) = ∫₀¹ (1/t) · E_{M ~ q_t} [ Σ_{i ∈ M} log π(o_i | o with M masked, q) ] dt

GDPO replaces the t-integral by an n-node Gauss–Legendre rule on [0, 1] and the inner expectation by one
mask per node:

    ELBO ≈ Σ_n w_n · (1/t_n) · Σ_{i ∈ M_n} log π(o_i | o with M_n masked, q)

Default 3 nodes: t = (0.1127, 0.5, 0.8873), w = (5/18, 8/18, 5/18); one view (one forward) per node. The plan's
weights are w_n/t_n on M_n and 0 elsewhere, so `reduce` (the weighted sum over views) gives [N, L] per-token
terms whose sum over tokens is the ELBO; `rl_dlm.objectives.ClippedSequenceObjective` sums them.

Options:
- `quadrature="gauss_legendre"` (default, the paper) or `"monte_carlo"`: t_n ~ U(0, 1) i.i.d. per node with
  weight 1/n (plain double Monte Carlo, for comparison);
- `mask_count="floor"` (the paper): M_n is a uniformly random subset of exactly max(1, ⌊t_n·L⌋) positions;
  `"bernoulli"`: every position is masked independently with probability t_n (the ELBO's own forward
  process q_t). Default: "floor" with Gauss–Legendre, "bernoulli" with Monte Carlo;
- `full_canvas=False`: L is the completion up to and including the end-of-turn token
  (`rollout.completion_mask.sum`), positions after it are never scored (and stay visible unless
  `mask_tail`); `True` reproduces the reference, which masks and scores the whole canvas (padding included).
  The objective must normalise by the same L (the trainer passes one `full_canvas` flag to both);
- `mask_tail` (with `full_canvas=False`): `False` (default) leaves the slots after the end-of-turn token
  visible and unscored in every view, as NeMo-RL's GDPO port does (below); `True` masks them in every view
  and never scores them, so the estimate is the ELBO of the completion under the model's marginal over the
  rest of the canvas. Visible, they tell the model where the completion ends — a context it never has while
  sampling, where those slots are masked until their block is decoded; both reference implementations show
  it (the official code in about 1 − t_n of the tail slots of each view, NeMo-RL in all of them).

What holds (tests/likelihood/test_elbo.py, exact on a toy model whose every mask is enumerated):
- with "bernoulli" masks the per-node expectation is the integrand itself, a polynomial of degree L − 1 in
  t, so Monte Carlo is unbiased and the n-node Gauss–Legendre rule is *exact* once 2n − 1 ≥ L − 1; its bias
  falls to 0 as nodes are added;
- with "floor" masks (the paper's rule) the count rounding is not a quadrature error: the expectation is
  Σ_n w_n h(⌊t_n L⌋)/t_n with h(m) the mean over m-subsets, which does not converge to the ELBO as n grows
  (nodes below 1/L put weight 1/t_n on a single token, and the limit ∫ h(max(1, ⌊tL⌋))/t dt is −∞). For
  L in the hundreds and 3–5 nodes the rounding is small; for short completions it is not (measured numbers
  in the test). For the same reason "floor" with Monte Carlo t has no finite mean and is refused.

Checked against the official code, KevinRojas1499/GDPO@1918683 `gdpo/likelihood_estimators.py`
(`NumericalIntegrationEstimator`: ⌊t·L⌋ positions drawn by `randperm` over the whole completion canvas) and
`gdpo/gdpo_trainer.py` (`compute_loss`, `_compute_seq_logps`), and against NeMo-RL's port,
NVIDIA-NeMo/RL@e03f62c `research/gdpo/gdpo/elbo.py` (`SdmcElboEstimator`: masks drawn only among the
response tokens, per-row generators) with @57f068a `research/gdpo/gdpo/denoise.py` (`unpack_generations`:
tokens after the first stop token are dropped and right-padded with the pad token, which every view then
shows, unmasked and unscored). Deviations from the official code:
- **one plan per inner iteration, shared by old, reference and current ELBOs.** The official trainer draws
  fresh masks for the old and the current ELBO, so their ratio is dominated by mask noise; here the masks
  come from `row_generator(row_seed, f"mask/{iteration}")` and live in the plan (rl_dlm/likelihood/base.py);
- L defaults to the completion up to the end-of-turn token rather than the 256-slot canvas, and the slots
  after it are visible and unscored, as NeMo-RL's port (`full_canvas=True` restores the official code:
  padding masked at the node's rate and scored). NeMo-RL's views show the pad token there; ours show what
  the sampler wrote, which for LLaDA and Dream is that same fill token;
- at least one position is masked per view (the official ⌊t·L⌋ can be 0 when L < 1/t);
- the prompt is never masked, as in both; left padding gets a key-padding mask (the official scoring passes
  no attention mask, so a left-padded prompt attends to its padding).

    est = SequenceELBOEstimator(nodes=3, mask_id=policy.mask_id)
    plan = est.plan(rollout, iteration=0)                     # input_ids [N, 3, P + L], weights [N, 3, L]
    elbo = est.reduce(score(policy, rollout, plan), plan).sum(1)   # [N]
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rl_dlm.components import MaskPlan, Rollout, all_views, completion_tokens
from rl_dlm.likelihood.base import weighted_sum
from rl_dlm.sampling.rollout import row_generator

SAMPLERS = ("gauss_legendre", "monte_carlo")
MASK_COUNTS = ("floor", "bernoulli")


def gauss_legendre(n: int) -> tuple[list[float], list[float]]:
    """Nodes and weights of the n-point Gauss–Legendre rule mapped to [0, 1] (weights sum to 1)."""
    if n < 1:
        raise ValueError(f"the ELBO needs at least one node (nodes), got {n}")
    x, w = np.polynomial.legendre.leggauss(n)
    return ((x + 1) / 2).tolist(), (w / 2).tolist()


def masked_count(t: float, length: int) -> int:
    """The paper's mask size: exactly ⌊t·L⌋ positions, at least 1 (and at most L)."""
    return min(length, max(1, math.floor(t * length)))


@dataclass
class SequenceELBOEstimator:
    nodes: int = 3
    quadrature: str = "gauss_legendre"  # or "monte_carlo"
    mask_count: str | None = None  # None: "floor" for gauss_legendre, "bernoulli" for monte_carlo
    full_canvas: bool = False
    mask_tail: bool = False  # False: the slots after end-of-turn stay visible, as in NeMo-RL
    mask_id: int = -1  # the policy's (`policy.mask_id`), given at construction by the trainer
    requires: frozenset = frozenset()
    fixed_plan = False  # a fresh plan for each inner iteration
    view_groups = staticmethod(all_views)
    objective_mask = staticmethod(completion_tokens)

    def __post_init__(self):
        if self.quadrature not in SAMPLERS:
            raise ValueError(f"quadrature must be one of {SAMPLERS}; got {self.quadrature!r}")
        if self.mask_count is None:
            self.mask_count = "floor" if self.quadrature == "gauss_legendre" else "bernoulli"
        if self.mask_count not in MASK_COUNTS:
            raise ValueError(f"mask_count must be one of {MASK_COUNTS}; got {self.mask_count!r}")
        if self.quadrature == "monte_carlo" and self.mask_count == "floor":
            raise ValueError("quadrature=monte_carlo with mask_count=floor has no finite mean (t < 1/L "
                             "puts weight 1/t on one token); use mask_count=bernoulli")
        if self.mask_tail and self.full_canvas:
            raise ValueError("mask_tail applies to full_canvas=False (with full_canvas the tail is scored)")
        self.t_nodes, self.w_nodes = gauss_legendre(self.nodes)

    def _row(self, seed: int, iteration: int, eligible: Tensor) -> tuple[Tensor, Tensor]:
        """One row's masks [K, L] bool and per-view weights [K] (w_n / t_n)."""
        gen = row_generator(seed, f"mask/{iteration}")
        if self.quadrature == "gauss_legendre":
            t, w = self.t_nodes, self.w_nodes
        else:  # 1 − U[0, 1) lies in (0, 1], so 1/t is finite
            t, w = (1 - torch.rand(self.nodes, generator=gen, dtype=torch.float64)).tolist(), [1 / self.nodes] * self.nodes
        keys = torch.rand(self.nodes, eligible.shape[0], generator=gen, dtype=torch.float64)
        length = int(eligible.sum())
        if self.mask_count == "bernoulli":
            masks = (keys < torch.tensor(t, dtype=torch.float64)[:, None]) & eligible
        else:  # the c smallest keys among the eligible positions: a uniform subset of exactly c of them
            rank = keys.masked_fill(~eligible, 2.0).argsort(1).argsort(1)
            counts = torch.tensor([masked_count(tn, length) for tn in t])
            masks = rank < counts[:, None]
        return masks, torch.tensor([wn / tn for wn, tn in zip(w, t)], dtype=torch.float64)

    def plan(self, rollout: Rollout, iteration: int) -> MaskPlan:
        comp = rollout.completion_ids
        eligible = torch.ones_like(rollout.completion_mask) if self.full_canvas else rollout.completion_mask
        rows = [self._row(int(s), iteration, e) for s, e in zip(rollout.row_seeds.tolist(), eligible.cpu())]
        masks = torch.stack([m for m, _ in rows]).to(comp.device)  # [N, K, L]
        scale = torch.stack([w for _, w in rows]).to(comp.device)  # [N, K]
        hidden = masks | (~eligible.to(comp.device))[:, None] if self.mask_tail else masks
        completions = torch.where(hidden, torch.full_like(comp, self.mask_id)[:, None], comp[:, None])
        prompt = rollout.prompt_ids[:, None].expand(-1, self.nodes, -1)
        return MaskPlan(input_ids=torch.cat([prompt, completions], 2),
                        weights=(masks * scale[:, :, None]).float())

    reduce = staticmethod(weighted_sum)


# config-group entries (rl_dlm/component_groups.py)
COMPONENTS = {"likelihood/elbo": SequenceELBOEstimator}
