"""One-step mean-field estimator (diffu-GRPO, d1 arXiv 2504.12216 §3.2; IGPO with p_mask_prompt = 0).

    log π(o_k | q) ≈ log softmax(f(q′ ⊕ M^L))[L-slot k][o_k]

One forward per row: the completion is fully masked and each real prompt token is independently replaced by
the mask token with probability `p_mask_prompt` (d1 default 0.15). There is no 1/t weight.

Checked against d1's `diffu_grpo_trainer.py` (`forward_process`, `_get_per_token_logps`). Deviations:
- the prompt mask is drawn from each row's own seed and the inner-iteration index, not from a global reseed
  inside the log-prob call, so it is shared by old/reference/current log-probs, survives gradient accumulation
  (the reference cycles through only μ/gcd(GA, μ) seeds) and μ = 1 works with β > 0;
- left-padding tokens are never masked (they are hidden from attention anyway).

    est = OneStepEstimator(p_mask_prompt=0.15)
    plan = est.plan(rollout, iteration=0)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rl_dlm.components import MaskPlan, Rollout, all_views, completion_tokens
from rl_dlm.likelihood.base import weighted_sum
from rl_dlm.sampling.rollout import row_generator


@dataclass
class OneStepEstimator:
    p_mask_prompt: float = 0.15
    mask_id: int = -1  # the policy's (`policy.mask_id`), given at construction by the trainer
    requires: frozenset = frozenset()
    fixed_plan = False  # a fresh plan for each inner iteration
    view_groups = staticmethod(all_views)
    objective_mask = staticmethod(completion_tokens)

    def plan(self, rollout: Rollout, iteration: int) -> MaskPlan:
        n, p = rollout.prompt_ids.shape
        length = rollout.completion_ids.shape[1]
        device = rollout.prompt_ids.device
        # Drawn from the prompt's end backwards, so extra left padding does not move a row's mask.
        u = torch.stack([torch.rand(p, generator=row_generator(int(s), f"mask/{iteration}")).flip(0)
                         for s in rollout.row_seeds.tolist()]).to(device)
        prompt = torch.where((u < self.p_mask_prompt) & rollout.prompt_mask,
                             torch.full_like(rollout.prompt_ids, self.mask_id), rollout.prompt_ids)
        views = torch.cat([prompt, torch.full((n, length), self.mask_id, device=device,
                                              dtype=prompt.dtype)], 1)
        return MaskPlan(input_ids=views[:, None], weights=torch.ones(n, 1, length, device=device))

    reduce = staticmethod(weighted_sum)


# config-group entries (rl_dlm/component_groups.py)
COMPONENTS = {"likelihood/one_step": OneStepEstimator}
