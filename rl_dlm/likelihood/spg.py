"""SPG, Sandwiched Policy Gradient (arXiv 2510.09541, Alg. 1): the ELBO for rows with A > 0, an upper bound
(the EUBO) — or, by default, the *mix* ω·EUBO + (1 − ω)·ELBO — for rows with A ≤ 0.

Why: with the ELBO in place of log π, a negative advantage can be "paid" by loosening the bound instead of
lowering π. Minimising an upper bound of log π cannot be gamed that way. For a completion o of length |o|,
with position i masked in view z (a mask M ∋ i drawn at ratio t):

    ELBO  = Σ_i E_{t, M∋i}[ log p_θ(o_i | z) ]                    ≤ log π(o)
    EUBO_β = Σ_i (1/β) log E_{t, M∋i}[ p_θ(o_i | z)^β ]            ≥ log π(o)   (β ≥ 1, a consistent denoiser)

Per token EUBO_i ≥ ELBO_i for every β > 0 (Jensen), and EUBO_β grows with β (power means). The estimator
(K views z_k per row, t_k = |M_k ∩ o| / |o|, S = positions masked in at least one view):

    ℓ̄ = (1/K) Σ_k mean_{i∈M_k} log p_θ(o_i | z_k)                      (|o|·ℓ̄ estimates the ELBO)
    ū = (1/|S|) Σ_{i∈S} (1/β) log[ (1/K) Σ_k 1[i∈M_k] p_θ(o_i | z_k)^β / t_k ]
    s_n = ℓ̄ if A_n > 0, else ω·ū + (1 − ω)·ℓ̄        (ω = 1: the paper's plain SPG; ω = 0.5: "mix", default)
    loss = −Σ_n A_n |o_n| s_n / Σ_n |o_n|

No ratio, no clipping, no KL; the μ inner iterations reuse the rollouts without correction (Alg. 1).

Contract: `SPGEstimator.reduce` returns [N, L, 2] — channel 0 the per-token ELBO terms (weights 1/(K·t_k)
on M_k, summing to |o|·ℓ̄), channel 1 the per-token EUBO terms (|o|/|S|)·ū_i on S (summing to |o|·ū). The
loop treats the reduced tensor as opaque rows (it only indexes rows and detaches), and `SandwichObjective`
reads both channels. The lower-bound weights of each view sum to |o|/K (t_k = |M_k ∩ o|/|o|), so the plan
carries |o| without another field. SPG needs no old log-probs; the loop still scores them when μ > 1.

Masks (`masking`):
- "block" (default; the reference's `block_random`): each view picks a completion block b (blocks of
  `block_length` canvas slots, the sampler's block). Earlier blocks stay clean, later blocks are fully
  masked, and a uniform subset of U{1..ℓ_b} of block b's positions is masked;
- "uniform": m ~ U{1..|o|}, a uniform subset of m positions of o; then E[1[i∈M]/t · f] = E_{t, M∋i}[f]
  exactly, so ℓ̄·|o| is unbiased for the ELBO and the EUBO estimate converges to EUBO_β as K grows
  (tests/likelihood/test_spg.py).
Positions after the end-of-turn token are masked in every view and never scored (as the reference); the
prompt is never masked.

Reference code: facebookresearch/SPG@a1c7120:spg/spg_trainer.py (ℓ̄ `:532`, ū `:533-546`, mix `:547`,
branch `:556,721`, loss `:115-118`, masks `:334-378`). Deviations:
- the block of each view is drawn uniformly *without replacement* from the completion's blocks (the reference
  takes randperm(8) mod #blocks: non-uniform, and two views can share a block);
- no "prompt" masking: the reference's 15% mask uses `~is_mask` instead of the prompt index (`:371-375`), so
  it also masks clean completion tokens of earlier blocks, which are then scored;
- the EUBO is (1/β)·logsumexp_k(β·log p − log t_k) − log K in fp32 from the fp32 log-softmax, never p^β from
  a bf16 softmax;
- masks come from each row's seed and the inner-iteration index (`row_generator`), not a global `set_seed`
  and `_step % μ`, so re-chunking never changes a row's masks;
- the advantage is r − mean_group with no std division, as the reference (`scale_rewards=none`).

Run: `rl-dlm train algo=spg` (conf/algo/spg.yaml; `objective.eubo_weight=1.0` for EUBO-only SPG), or from
Python `rl_dlm.hydra_app.algo_trainer("spg", model, reward_funcs, train_dataset=rows)` (docs/trainers/spg.md).

    est = SPGEstimator(views=2, eubo_beta=1.5, block_length=32, mask_id=mask_id)
    plan = est.plan(rollout, iteration=0)                        # input_ids [N, K, P + L], weights [N, K, L]
    bounds = est.reduce(score(policy, rollout, plan), plan)      # [N, L, 2]: ELBO and EUBO per-token terms
    loss, stats = SandwichObjective(eubo_weight=0.5)(bounds, bounds.detach(), None, adv, completion_mask)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from rl_dlm.components import all_views, completion_tokens
from rl_dlm.likelihood.base import MaskPlan
from rl_dlm.sampling.rollout import Rollout, row_generator

MASKINGS = ("block", "uniform")


def _uniform_subset(gen: torch.Generator, candidates: Tensor, size: int) -> Tensor:
    """A uniformly random subset of exactly `size` of the True positions of `candidates` [L] → bool [L]."""
    keys = torch.rand(candidates.shape[0], generator=gen, dtype=torch.float64).masked_fill(~candidates, 2.0)
    return keys.argsort().argsort() < size


@dataclass
class SPGEstimator:
    views: int = 2  # K (the reference's num_t)
    eubo_beta: float = 1.5  # β of the upper bound
    masking: str = "block"
    block_length: int = 32  # the sampler's block (masking="block")
    mask_id: int = -1  # the policy's mask id (`policy.mask_id`), given by the trainer
    requires: frozenset = frozenset()
    fixed_plan = False  # a fresh plan for each inner iteration
    view_groups = staticmethod(all_views)
    objective_mask = staticmethod(completion_tokens)
    scores = "elbo_eubo"  # reduce returns [n, L, 2] (ELBO and EUBO terms) for SandwichObjective, not [n, L]

    def __post_init__(self):
        if self.masking not in MASKINGS:
            raise ValueError(f"masking must be one of {MASKINGS}; got {self.masking!r}")
        if self.views < 1:
            raise ValueError(f"views must be at least 1; got {self.views}")
        if not self.eubo_beta > 0:
            raise ValueError(f"eubo_beta must be > 0 (the EUBO is an upper bound for β ≥ 1); got {self.eubo_beta}")
        if self.block_length < 1:
            raise ValueError(f"block_length must be at least 1; got {self.block_length}")

    def _row(self, seed: int, iteration: int, length: int, canvas: int) -> tuple[Tensor, Tensor]:
        """One row: hidden [K, canvas] (masked slots, tail included) and scored [K, canvas] (masked ∩ o)."""
        gen = row_generator(seed, f"mask/{iteration}")
        pos = torch.arange(canvas)
        in_o = pos < length
        hidden = torch.zeros(self.views, canvas, dtype=torch.bool)
        if self.masking == "uniform":
            for k in range(self.views):
                m = int(torch.randint(1, length + 1, (1,), generator=gen))
                hidden[k] = _uniform_subset(gen, in_o, m)
        else:
            blocks = -(-length // self.block_length)  # completion blocks holding a position of o
            order = torch.cat([torch.randperm(blocks, generator=gen) for _ in range(-(-self.views // blocks))])
            for k in range(self.views):
                b = int(order[k])
                start, end = b * self.block_length, min((b + 1) * self.block_length, length)
                j = int(torch.randint(1, end - start + 1, (1,), generator=gen))
                in_block = (pos >= start) & (pos < end)
                hidden[k] = _uniform_subset(gen, in_block, j) | (pos >= (b + 1) * self.block_length)
        hidden |= ~in_o  # after end-of-turn: masked in every view, never scored
        return hidden, hidden & in_o

    def plan(self, rollout: Rollout, iteration: int) -> MaskPlan:
        comp = rollout.completion_ids
        canvas = comp.shape[1]
        lengths = rollout.completion_mask.sum(1).clamp_min(1).tolist()
        rows = [self._row(int(s), iteration, int(n), canvas) for s, n in zip(rollout.row_seeds.tolist(), lengths)]
        hidden = torch.stack([h for h, _ in rows]).to(comp.device)  # [N, K, L]
        scored = torch.stack([s for _, s in rows]).to(comp.device)
        t = scored.sum(2, keepdim=True) / torch.tensor(lengths, device=comp.device)[:, None, None]  # [N, K, 1]
        completions = torch.where(hidden, torch.full_like(comp, self.mask_id)[:, None], comp[:, None])
        prompt = rollout.prompt_ids[:, None].expand(-1, self.views, -1)
        return MaskPlan(input_ids=torch.cat([prompt, completions], 2),
                        weights=(scored / (self.views * t)).float())

    def reduce(self, view_logp: Tensor, plan: MaskPlan) -> Tensor:
        """[N, K, L] token log-probs → [N, L, 2]: per-token ELBO terms and per-token EUBO terms."""
        w = plan.weights
        scored = w > 0
        lower = (w * view_logp).sum(1)
        in_s = scored.any(1)  # [N, L]
        # (1/β) log[(1/K) Σ_k 1[i∈M_k] p^β / t_k] = (1/β) logsumexp_k(β·lp + log w), w = 1/(K t_k).
        # Columns outside S get a finite dummy so logsumexp and its gradient stay finite (zeroed below).
        terms = torch.where(scored, self.eubo_beta * view_logp + w.clamp_min(1e-30).log(),
                            torch.full_like(view_logp, -math.inf))
        terms = torch.where(in_s[:, None], terms, torch.zeros_like(terms))
        upper_i = torch.logsumexp(terms, 1) / self.eubo_beta
        length = w.sum((1, 2))  # Σ of the lower-bound weights = |o|
        scale = length / in_s.sum(1).clamp_min(1)
        upper = torch.where(in_s, upper_i * scale[:, None], torch.zeros_like(upper_i))
        return torch.stack([lower, upper], -1)


@dataclass
class SandwichObjective:
    """loss = −Σ_n A_n |o_n| s_n / Σ_n |o_n|, s_n the ELBO (A_n > 0) or ω·EUBO + (1 − ω)·ELBO (A_n ≤ 0).

    bounds [n, L, 2] from `SPGEstimator.reduce`; old and reference bounds are not used (no ratio, no KL);
    mask [n, L] is the completion mask (|o_n| = its row sums)."""

    eubo_weight: float = 0.5  # ω: 1 = the paper's EUBO-only SPG, 0.5 = "mix" (the authors' advice), 0 = ELBO only
    needs_reference: bool = False
    takes = "elbo_eubo"  # the [n, L, 2] bounds of SPGEstimator.reduce (rl_dlm/component_groups.py checks the pair)

    def __post_init__(self):
        if not 0.0 <= self.eubo_weight <= 1.0:
            raise ValueError(f"eubo_weight must lie in [0, 1]; got {self.eubo_weight}")

    def __call__(self, bounds: Tensor, old_bounds: Tensor, ref_bounds: Tensor | None, adv: Tensor,
                 mask: Tensor) -> tuple[Tensor, dict[str, float]]:
        keep = mask.to(bounds.dtype)[:, :, None]
        lower, upper = (bounds * keep).sum(1).unbind(-1)  # |o|·ℓ̄ and |o|·ū, [n]
        lengths = keep.sum((1, 2))
        negative = adv <= 0
        s = torch.where(negative, self.eubo_weight * upper + (1 - self.eubo_weight) * lower, lower)
        loss = -(adv * s).sum() / lengths.sum().clamp_min(1)
        stats = {"elbo_per_token": (lower / lengths.clamp_min(1)).detach().mean().item(),
                 "eubo_per_token": (upper / lengths.clamp_min(1)).detach().mean().item(),
                 "negative_fraction": negative.to(bounds.dtype).mean().item()}
        return loss, stats


# config-group entries (rl_dlm/component_groups.py)
COMPONENTS = {"likelihood/spg": SPGEstimator, "objective/sandwich": SandwichObjective}
