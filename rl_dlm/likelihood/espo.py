"""ESPO, ELBO-based Sequence-level Policy Optimization (arXiv 2512.03759): the whole completion is one action,
its coupled-mask ELBO stands in for log π, the ratio is normalised per token, and the KL is k2 on the
sequence ELBOs.

Estimator (`ESPOEstimator`). Each row gets K draws. Draw k masks a uniform subset M_k of m_k of the L
completion positions, with m_k ~ U{0..L}, and pairs it with its complement view:

    t = m/(L + 1),  t′ = (L − m)/(L + 1)
    ELBO_k = ½ [ Σ_{i∈M} log p(o_i | o with M masked)/t + Σ_{i∉M} log p(o_i | o with M^c masked)/t′ ]
    ELBO   = (1/K) Σ_k ELBO_k                                         (2K views, 2K forwards per row)

Averaged over m and the masks, each half is the uniform-t ELBO exactly: E = Σ_{m=1}^{L} h(m)/m, the (L + 1)
factors cancel (tests/likelihood/test_espo.py). The plan's weights are ½/(K t) on M_k and ½/(K t′) on M_k^c
(views ordered M_0, M_0^c, M_1, M_1^c, …), so `reduce` is the weighted sum and gives [N, L] per-token
terms that sum to the ELBO — the same contract as GDPO's `SequenceELBOEstimator`.

Objective (`ESPOObjective`), with ELBOs from one shared plan:

    ρ_n  = exp((ELBO_θ,n − ELBO_old,n) / L_n)
    loss = −(1/b) Σ_n min(ρ_n A_n, clip(ρ_n, 1 − ε, 1 + ε) A_n) + β (1/b) Σ_n ½ (ELBO_θ,n − ELBO_ref,n)² / L_n

The clipped surrogate is GDPO's `ClippedSequenceObjective` (rl_dlm/objectives/sequence.py), used as is; only
the KL differs: k2 on the *sequence* ELBOs divided by L, because k3's exp(−Δ) explodes when Δ = O(L) (the
paper's ablation: k2 learns, k1 collapses, k3 stalls). Our sequence objective's own k2 is ½(Δ/L)², which is
ESPO's divided by L. The advantage is leave-one-out, A_n = r_n − mean_{j≠n} r_j (`leave_one_out=True`).

Reference code: ML-GSAI/ESPO@b5f2dac:espo/espo_trainer.py (masks `:55-75`, coupled ELBO `:421-435`, mean over
K `:474`, loss `:191-201`, old/ref ELBOs `:611-640`, advantage `:694-716`). Deviations:
- **m is drawn per row, stratified over the row's K draws**: m_k = (m_0 + ⌊k(L + 1)/K⌋) mod (L + 1) with
  m_0 ~ U{0..L} from the row's seed. The reference draws one k₀ per micro-batch and gives row j
  m_j = round(k₀ + j(L + 1)/b) mod (L + 1) (`:62-63`), so a row's mask depends on its index and on the
  micro-batch size b. Each m_k is still uniform on {0..L}, so each draw is unbiased;
- L is the completion up to and including the end-of-turn token by default, and the slots after it stay
  visible and unscored (as GDPO's default); `full_canvas=True` masks and scores every canvas slot, padding
  included, and normalises by the canvas, as the reference; `mask_tail=True` hides the tail in every view;
- masks come from `row_generator(row_seed, f"mask/{iteration}")`, not a `set_seed` on every ELBO call with
  seeds from 4,096 values (`:56,611`); they are shared by the old, reference and current ELBOs, as in the
  reference, and dropout is off in both passes (`disable_dropout`), so ρ ≡ 1 at the first inner step;
- the complement view is always used (the reference's `reduce_var` flag is never read, `:376,446`).

Run: `rl-dlm train algo=espo` (conf/algo/espo.yaml), or from Python
`rl_dlm.hydra_app.algo_trainer("espo", model, reward_funcs, train_dataset=rows)` (docs/trainers/espo.md).

    est = ESPOEstimator(draws=2, mask_id=mask_id)
    plan = est.plan(rollout, iteration=0)                      # input_ids [N, 2K, P + L], weights [N, 2K, L]
    elbo_terms = est.reduce(score(policy, rollout, plan), plan)   # [N, L]; .sum(1) is the ELBO
    loss, stats = ESPOObjective(epsilon=0.2, beta=1e-3)(elbo_terms, old_terms, ref_terms, adv, completion_mask)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from rl_dlm.components import all_views, completion_tokens
from rl_dlm.likelihood.base import MaskPlan, weighted_sum
from rl_dlm.objectives.sequence import ClippedSequenceObjective
from rl_dlm.sampling.rollout import Rollout, row_generator


@dataclass
class ESPOEstimator:
    draws: int = 2  # K coupled draws (2K views)
    full_canvas: bool = False
    mask_tail: bool = False  # False: the slots after end-of-turn stay visible (full_canvas=False only)
    mask_id: int = -1  # the policy's mask id (`policy.mask_id`), given by the trainer
    requires: frozenset = frozenset()
    fixed_plan = False  # a fresh plan for each inner iteration
    view_groups = staticmethod(all_views)
    objective_mask = staticmethod(completion_tokens)

    def __post_init__(self):
        if self.draws < 1:
            raise ValueError(f"draws must be at least 1; got {self.draws}")
        if self.mask_tail and self.full_canvas:
            raise ValueError("mask_tail applies to full_canvas=False (with full_canvas the tail is scored)")

    def _row(self, seed: int, iteration: int, eligible: Tensor) -> tuple[Tensor, Tensor]:
        """One row: M_k [K, L] bool (inside `eligible`) and the mask counts m_k [K]."""
        gen = row_generator(seed, f"mask/{iteration}")
        length = int(eligible.sum())
        m0 = int(torch.randint(0, length + 1, (1,), generator=gen))
        counts = torch.tensor([(m0 + (k * (length + 1)) // self.draws) % (length + 1) for k in range(self.draws)])
        keys = torch.rand(self.draws, eligible.shape[0], generator=gen, dtype=torch.float64)
        rank = keys.masked_fill(~eligible, 2.0).argsort(1).argsort(1)  # the m smallest keys: a uniform m-subset
        return rank < counts[:, None], counts

    def draw(self, rollout: Rollout, iteration: int) -> tuple[Tensor, Tensor, Tensor]:
        """(M [N, K, L] bool, m [N, K], eligible [N, L]) from each row's own seed."""
        comp = rollout.completion_ids
        eligible = torch.ones_like(rollout.completion_mask) if self.full_canvas else rollout.completion_mask
        rows = [self._row(int(s), iteration, e) for s, e in zip(rollout.row_seeds.tolist(), eligible.cpu())]
        return (torch.stack([m for m, _ in rows]).to(comp.device), torch.stack([c for _, c in rows]).to(comp.device),
                eligible.to(comp.device))

    def plan(self, rollout: Rollout, iteration: int) -> MaskPlan:
        masks, counts, eligible = self.draw(rollout, iteration)
        comp = rollout.completion_ids
        n, k, length = masks.shape
        big_l = eligible.sum(1, keepdim=True).to(torch.float64)  # [N, 1]
        t, t_c = counts / (big_l + 1), (big_l - counts) / (big_l + 1)  # [N, K]
        complement = eligible[:, None] & ~masks
        scored = torch.stack([masks, complement], 2).reshape(n, 2 * k, length)  # M_0, M_0^c, M_1, ...
        scale = torch.stack([t, t_c], 2).reshape(n, 2 * k).clamp_min(1e-12)
        weights = scored / (2 * self.draws * scale[:, :, None])
        hidden = scored | (~eligible)[:, None] if self.mask_tail else scored
        completions = torch.where(hidden, torch.full_like(comp, self.mask_id)[:, None], comp[:, None])
        prompt = rollout.prompt_ids[:, None].expand(-1, 2 * k, -1)
        return MaskPlan(input_ids=torch.cat([prompt, completions], 2), weights=weights.float())

    reduce = staticmethod(weighted_sum)


@dataclass
class ESPOObjective:
    """GDPO's clipped sequence surrogate plus ESPO's k2 on the sequence ELBOs: β·mean_n ½(ELBO − ELBO_ref)²/L."""

    epsilon: float = 0.2  # ε_low
    epsilon_high: float | None = None  # None = ε_low
    beta: float = 1e-3
    full_canvas: bool = False
    needs_reference: bool = False
    surrogate: ClippedSequenceObjective = field(init=False, repr=False)

    def __post_init__(self):
        self.surrogate = ClippedSequenceObjective(epsilon=self.epsilon, epsilon_high=self.epsilon_high, beta=0.0,
                                                  full_canvas=self.full_canvas)
        self.needs_reference = self.beta > 0

    def __call__(self, logp: Tensor, old_logp: Tensor, ref_logp: Tensor | None, adv: Tensor,
                 mask: Tensor) -> tuple[Tensor, dict[str, float]]:
        loss, stats = self.surrogate(logp, old_logp, None, adv, mask)
        if self.beta > 0:
            if ref_logp is None:
                raise ValueError("objective.beta > 0 needs reference log-probs")
            seq, length = self.surrogate.sequence_logp(logp, mask)
            ref_seq, _ = self.surrogate.sequence_logp(ref_logp, mask)
            kl = 0.5 * (seq - ref_seq) ** 2 / length
            loss = loss + self.beta * kl.mean()
            stats["kl"] = kl.detach().mean().item()
        return loss, stats


# config-group entries (rl_dlm/component_groups.py)
COMPONENTS = {"likelihood/espo": ESPOEstimator, "objective/espo": ESPOObjective}
