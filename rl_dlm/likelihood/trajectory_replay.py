"""Trajectory-replay estimator (CJ-GRPO, arXiv 2509.23924 §3.1, the "consistency trajectory" objective).

For every denoising step s of the rollout, the input is the state the sampler saw, x_s — tokens committed
before s visible, every other completion position masked — and the targets are the tokens committed *at* s:

    lp_s = log softmax(f(q ⊕ x_s))[tokens committed at s]

The states are rebuilt from the final sequence and the commit-step map (`Rollout.unmask_step`), so the
rollout stores no copy per step: x_s = where(unmask_step < s, completion, MASK). Tokens fixed before the
first step (hints, `unmask_step = −1`) are visible in every state and never targets. EOSER's scaling is a
sampling-time ranking rule and does not enter the likelihood. The plan is deterministic: it is the same for
the old, reference and current log-probs and for every inner iteration.

One view per step (K = S) with weights selecting the tokens committed at that step (within the loss mask, or
the completion mask). `view_groups` returns one group per step, so the loop scores and back-propagates step
by step (memory flat in S) and aggregates "token mean within each step, then mean over steps"; steps that
commit no trained token are skipped (`rl_dlm.loop.update_micro_batch`).

Checked against yjyddq/EOSER-ASS-RL `cj-grpo/cj_grpo_trainer_*.py`. Deviations:
- the reference stores every intermediate state and keeps all S graphs alive until one backward; here the
  states are rebuilt from the commit map and each step is back-propagated on its own;
- tokens after the first end-of-turn are not trained on (padding never is); the reference trains on every slot.

    est = TrajectoryReplayEstimator(mask_id=policy.mask_id)
    plan = est.plan(rollout, iteration=0)          # input_ids [N, S, P + L], weights [N, S, L]
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rl_dlm.components import MaskPlan, Rollout, weighted_tokens
from rl_dlm.likelihood.base import weighted_sum


def replay_states(completion_ids: torch.Tensor, unmask_step: torch.Tensor, num_steps: int,
                  mask_id: int) -> torch.Tensor:
    """[N, L] final completion and commit map → [N, S, L] the completion part of the state before each step."""
    s = torch.arange(num_steps, device=unmask_step.device)
    visible = unmask_step[:, None, :] < s[None, :, None]
    return torch.where(visible, completion_ids[:, None, :], torch.full_like(completion_ids[:, None, :], mask_id))


@dataclass
class TrajectoryReplayEstimator:
    mask_id: int = -1  # the policy's (`policy.mask_id`), given at construction by the trainer
    requires: frozenset = frozenset({"unmask_step"})
    fixed_plan: bool = True  # the same plan for every inner iteration: old / reference scored once
    objective_mask = staticmethod(weighted_tokens)  # the view weights fold in the completion / loss mask

    def plan(self, rollout: Rollout, iteration: int) -> MaskPlan:
        steps = rollout.unmask_step  # [N, L]
        n, p = rollout.prompt_ids.shape
        num_steps = int(steps.max()) + 1 if steps.numel() else 0
        states = replay_states(rollout.completion_ids, steps, num_steps, self.mask_id)  # [N, S, L]
        prompt = rollout.prompt_ids[:, None, :].expand(n, num_steps, p)
        trained = rollout.completion_mask if rollout.loss_mask is None else rollout.loss_mask
        s = torch.arange(num_steps, device=steps.device)
        weights = ((steps[:, None, :] == s[None, :, None]) & trained[:, None, :]).float()
        return MaskPlan(input_ids=torch.cat([prompt, states], -1), weights=weights,
                        view_steps=s.expand(n, num_steps))

    reduce = staticmethod(weighted_sum)

    @staticmethod
    def view_groups(plan: MaskPlan) -> list[slice]:
        return [slice(k, k + 1) for k in range(plan.input_ids.shape[1])]


# config-group entries (rl_dlm/component_groups.py)
COMPONENTS = {"likelihood/trajectory_replay": TrajectoryReplayEstimator}
