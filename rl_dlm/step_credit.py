"""Per-step credit (MDPO, arXiv 2508.13148 §3): rewards for every denoising step's predicted completion,
per-step advantages and top-k step selection; the confidence-weighted objective they feed is
`WeightedTokenObjective` (rl_dlm/objectives/weighted_token.py).

The loop stages they plug into:

    2b  StepRewards          r_t = reward(decode(x̂0_t)) for t < S − 1, in ONE batched reward call of
                             N·(S − 1) rows (the last prediction is the final completion, already scored)
                             → rollout.step_rewards [N, S]
    3   per_step_advantage   raw_t = (r_t − r_{t−1}) + mean(r_{t+1..S−1}) for t < S − 1, r_{−1} = 0; the
                             last step's raw = (r_{S−1} − r_{S−2}) + r_{S−1} (the reference's: the future
                             term of the last step is its own reward);
                             A_t = z-score of raw_t within each group, for each t
                             → adv [N, S]
    4   select_steps         keep the k steps with the largest Σ_group |A_t| (per group)   (used by
                             `PredictionReplayEstimator.plan`)
    5   WeightedTokenObjective   per step: Σ_i w_i ℓ_i / rows, w_i = c_i·λ/L = c_i/|masked_t| on the targets
                             (rl_dlm/objectives/weighted_token.py)

The weights' confidences c_i are the sampler's, p(x̂0_i) under softmax(logits / T) (`rl_dlm.sampling.maskgit`).

Checked against autonomousvision/mdpo@e6ae439 `src/open_r1/mdpo/mdpo_trainer.py`
(`_generate_and_score_completions` "adv-v4", `split_into_micro_batches`, `compute_loss`). Deviations, on purpose:
- z-scores are taken within each *group* (any number of prompts per batch, groups by `group_ids`); the
  reference views the whole gathered batch as [-1, G, S], correct only when rows arrive grouped in order;
- the top-k steps are chosen per group (the reference: one choice over the whole batch, one prompt in flight);
- the reference's "+1" on raw_t is dropped: a constant cancels in the z-score;
- the loss's normalisation: see rl_dlm/objectives/weighted_token.py;
- the last prediction's reward is reused from stage 2 rather than recomputed (it is the final completion).

    refiner = StepRewards()                           # Components(refiners=[refiner])
    adv = per_step_advantage(step_rewards, group_ids)  # [N, S]
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from rl_dlm.advantages import zscore
from rl_dlm.components import Rollout, completion_mask_from


@dataclass
class StepRewards:
    """Stage 2b: per-step rewards of the predicted completions (needs `step_predictions`)."""

    records: frozenset = frozenset({"step_rewards"})

    def check_rows(self, rows: list[dict]) -> None:
        """Any rows will do."""

    def __call__(self, policy, rollout: Rollout, rows: list[dict], result, score_fn):
        preds = rollout.step_predictions  # [N, S, L]
        if preds is None:
            raise ValueError("StepRewards needs a sampler that records step_predictions (sampler=maskgit)")
        n, num_steps, length = preds.shape
        final_is_last = torch.equal(preds[:, -1], rollout.completion_ids)
        scored = num_steps - 1 if final_is_last else num_steps
        step_rewards = result.total[:, None].to(torch.float32).repeat(1, num_steps)
        if scored > 0:
            ids = preds[:, :scored].transpose(0, 1).reshape(scored * n, length)  # step-major: [S'·N, L]
            stacked = Rollout(prompt_ids=rollout.prompt_ids.repeat(scored, 1),
                              prompt_mask=rollout.prompt_mask.repeat(scored, 1), completion_ids=ids,
                              completion_mask=completion_mask_from(ids, policy.stop_id),
                              group_ids=rollout.group_ids.repeat(scored), row_seeds=rollout.row_seeds.repeat(scored))
            step_rewards[:, :scored] = score_fn(stacked).total.reshape(scored, n).T
        rollout = replace(rollout, step_rewards=step_rewards)
        first = step_rewards[:, 0][~torch.isnan(step_rewards[:, 0])]
        result.stats["step_reward/first"] = first.mean().item() if first.numel() else float("nan")
        return rollout, result


def per_step_advantage(step_rewards: Tensor, group_ids: Tensor, eps: float = 1e-4) -> Tensor:
    """[N, S] per-step rewards → [N, S] advantages, z-scored per step within each group."""
    r = step_rewards.float()
    previous = torch.cat([torch.zeros_like(r[:, :1]), r[:, :-1]], 1)
    suffix = r.flip(1).cumsum(1).flip(1)  # Σ_{u ≥ t} r_u
    num_steps = r.shape[1]
    remaining = torch.arange(num_steps - 1, 0, -1, device=r.device, dtype=r.dtype)  # S − t − 1 for t < S − 1
    raw = (r - previous) + torch.cat([suffix[:, 1:] / remaining, torch.zeros_like(r[:, :1])], 1)
    raw[:, -1] = (r[:, -1] - previous[:, -1]) + r[:, -1]  # the last step's future term is its own reward
    return torch.stack([zscore(raw[:, t], group_ids, eps) for t in range(num_steps)], 1)


def select_steps(adv: Tensor, group_ids: Tensor, k: int) -> Tensor:
    """[N, S] advantages → [N, k] step indices: per group, the k steps with the largest Σ_group |A_t|
    (ties to the earlier step), in ascending order. Rows of a group share their steps."""
    _, inverse = torch.unique(group_ids.to(adv.device), return_inverse=True)
    groups, num_steps = int(inverse.max()) + 1, adv.shape[1]
    mass = torch.zeros(groups, num_steps, dtype=adv.dtype, device=adv.device).index_add_(
        0, inverse, torch.nan_to_num(adv).abs())
    top = torch.argsort(-mass, dim=1, stable=True)[:, :min(k, num_steps)]
    return top.sort(1).values[inverse]


# config-group entries (rl_dlm/component_groups.py); per-step advantages need the refiner's per-step rewards
per_step_advantage.requires = frozenset({"step_rewards"})
COMPONENTS = {"refiner/step_rewards": StepRewards, "advantage/per_step": per_step_advantage}
