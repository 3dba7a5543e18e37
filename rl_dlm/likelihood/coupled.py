"""Complementary-mask ("coupled") estimator (coupled-GRPO, DiffuCoder arXiv 2506.20639 §4, eq. for s_k).

Each row gets a mask ratio t ~ U[t_min, t_max] (default [0.2, 0.8]) and u ~ U(0,1)^L, and three views that share
the prompt (never masked):

    v0: the completion fully masked
    v1: completion positions with u_k <  t masked
    v2: completion positions with u_k >= t masked       (so every position is masked in exactly one of v1, v2)

    s_k = ½ · [ lp(o_k | v0) + 1[k ∈ M1] · lp(o_k | v1) / t + 1[k ∈ M2] · lp(o_k | v2) / (1 − t) ]

That is `MaskPlan.weights` = (½, ½/t on M1, ½/(1−t) on M2) and `reduce` is the weighted sum; K = 3 views per
row are scored in one batched forward by `score`. The pair (v1, v2) is an antithetic pair: v2 is v1's draw
(u, t) reflected to (1 − u, 1 − t), which has the same distribution because [t_min, t_max] is symmetric
about ½ in the default. The antithetic argument gives Var(pair) ≤ Var(two independent masks) exactly when
the two halves are negatively correlated — guaranteed, by Harris' inequality, when t is fixed and giving the
model more context never lowers the log-prob of the observed token. It is not guaranteed otherwise:
tests/likelihood/test_coupled.py checks the guaranteed case on an Ising toy (variance 4× lower, and also
with the paper's random t), and gives an exact counterexample where coupling raises the variance by 9%.

Checked against the DiffuCoder release (apple/ml-diffucoder, the coupled trainer's `forward_process` and
`_get_per_token_logps`; docs/trainers/coupled_grpo.md). Deviations:
- **t is drawn per row, not per micro-batch.** The reference draws one t per call of its log-prob function,
  so a row's masks depend on which rows share its micro-batch and on the global RNG state; here t and u
  come from `row_generator(row_seed, f"mask/{iteration}")`, so the plan is a function of the row alone,
  re-chunking never changes it, and the old, reference and current log-probs share it (rl_dlm/likelihood/base.py).
  Each row is still an unbiased draw of the same estimator; per-row t also decorrelates rows of a batch.
- The prompt is never masked (the reference's `p_mask_prompt = 0.0` for this recipe), and left padding is
  never touched. As in the reference, all L completion slots are masked/scored, including padding after
  the end-of-turn token; the objective's completion mask keeps that padding out of the loss.

    est = CoupledEstimator(t_min=0.2, t_max=0.8, mask_id=policy.mask_id)
    plan = est.plan(rollout, iteration=0)             # input_ids [N, 3, P + L], weights [N, 3, L]
    logp = est.reduce(score(policy, rollout, plan), plan)   # [N, L]
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rl_dlm.components import MaskPlan, Rollout, all_views, completion_tokens
from rl_dlm.likelihood.base import weighted_sum
from rl_dlm.sampling.rollout import row_generator


@dataclass
class CoupledEstimator:
    t_min: float = 0.2
    t_max: float = 0.8
    mask_id: int = -1  # the policy's (`policy.mask_id`), given at construction by the trainer
    requires: frozenset = frozenset()
    fixed_plan = False  # a fresh plan for each inner iteration
    view_groups = staticmethod(all_views)
    objective_mask = staticmethod(completion_tokens)

    def __post_init__(self):
        if not 0.0 < self.t_min <= self.t_max < 1.0:
            raise ValueError(f"coupled mask ratio range must satisfy 0 < t_min ≤ t_max < 1 "
                             f"(mask_ratio_min/mask_ratio_max); got [{self.t_min}, {self.t_max}]")

    def draw(self, rollout: Rollout, iteration: int) -> tuple[Tensor, Tensor]:
        """Per-row mask ratio t [N] (float64) and v1's mask [N, L] bool, from each row's own seed."""
        length = rollout.completion_ids.shape[1]
        ts, masks = [], []
        for seed in rollout.row_seeds.tolist():
            gen = row_generator(int(seed), f"mask/{iteration}")
            t = self.t_min + (self.t_max - self.t_min) * torch.rand(1, generator=gen, dtype=torch.float64)
            u = torch.rand(length, generator=gen, dtype=torch.float64)
            ts.append(t)
            masks.append(u < t)
        device = rollout.completion_ids.device
        return torch.cat(ts).to(device), torch.stack(masks).to(device)

    def plan(self, rollout: Rollout, iteration: int) -> MaskPlan:
        t, m1 = self.draw(rollout, iteration)
        comp = rollout.completion_ids
        masked = torch.full_like(comp, self.mask_id)
        completions = torch.stack([masked, torch.where(m1, masked, comp), torch.where(m1, comp, masked)], 1)
        prompt = rollout.prompt_ids[:, None].expand(-1, 3, -1)
        t_col = t[:, None].float()
        weights = torch.stack([torch.full(comp.shape, 0.5, device=comp.device),
                               m1.float() * 0.5 / t_col, (~m1).float() * 0.5 / (1 - t_col)], 1)
        return MaskPlan(input_ids=torch.cat([prompt, completions], 2), weights=weights)

    reduce = staticmethod(weighted_sum)


# config-group entries (rl_dlm/component_groups.py)
COMPONENTS = {"likelihood/coupled": CoupledEstimator}
