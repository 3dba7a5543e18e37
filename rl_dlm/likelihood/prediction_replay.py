"""Prediction-replay estimator (MDPO, arXiv 2508.13148 §3): score each kept denoising step's predicted
completion from the state the sampler saw.

For a kept step t of row n: the input is x_t (recorded: `rollout.step_masked` and the predictions, see
`rl_dlm.sampling.maskgit`), the targets are x̂0_t at **all** positions still masked in x_t, and the
log-probs are those of softmax(logits / T) with the sampling temperature T (MDPO: 0.4):

    lp_t,i = log softmax(f(q ⊕ x_t) / T)[i][x̂0_t,i]        for i masked in x_t

Which steps: the k (= 8) steps with the largest Σ_group |A_t| of the row's group, from the per-step
advantages the loop leaves in `rollout.advantages` (`rl_dlm.step_credit.select_steps`). With sequence
advantages [N] every step is kept. One view per kept step (K = k); `MaskPlan.view_steps` names the step so
the loop hands each view its advantage A_t, and `view_groups` makes the loop back-propagate view by view.

Weights (the objective's per-token mask): the detached rollout confidence c_i = p(x̂0_t,i) times
λ_t / L = 1 / |masked_t| — a confidence-weighted mean over the masked targets (see
`rl_dlm.objectives.WeightedTokenObjective` for the normalisation against the reference). Positions after
the first end-of-turn token of x̂0_t are not targets (padding is never trained on; the reference trains on every masked slot)
but still count in |masked_t|, which is λ's definition. `reduce` only selects the targets: the weights go
to the objective, not into the log-probs, so the ratio stays exp(lp − old).

Checked against autonomousvision/mdpo `src/open_r1/mdpo/mdpo_trainer.py` (`split_into_micro_batches`,
`_get_per_token_logps`, `compute_loss`).

    est = PredictionReplayEstimator(top_k_steps=8, temperature=0.4, mask_id=policy.mask_id,
                                    stop_id=policy.stop_id)
    plan = est.plan(rollout, iteration=0)      # input_ids [N, k, P + L], targets/weights [N, k, L]
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rl_dlm.components import MaskPlan, Rollout, weighted_tokens, completion_mask_from
from rl_dlm.step_credit import select_steps


@dataclass
class PredictionReplayEstimator:
    top_k_steps: int = 8
    temperature: float = 1.0
    mask_id: int = -1  # the policy's (`policy.mask_id`), given at construction by the trainer
    stop_id: int | None = None  # None: every masked position is a target
    requires: frozenset = frozenset({"step_predictions", "confidence", "step_masked"})
    fixed_plan: bool = True  # the same plan for every inner iteration: old / reference scored once
    objective_mask = staticmethod(weighted_tokens)  # the view weights fold in the completion / loss mask

    def plan(self, rollout: Rollout, iteration: int) -> MaskPlan:
        preds, conf = rollout.step_predictions, rollout.confidence  # [N, S, L]
        masked_all = rollout.step_masked
        n, num_steps, length = preds.shape
        adv = rollout.advantages
        if adv is not None and adv.dim() == 2:
            steps = select_steps(adv, rollout.group_ids, self.top_k_steps)  # [N, k]
        else:
            steps = torch.arange(num_steps, device=preds.device).expand(n, num_steps)
        steps = steps.to(preds.device)
        index = steps[..., None].expand(-1, -1, length)
        targets, masked = preds.gather(1, index), masked_all.gather(1, index)  # [N, k, L]
        states = torch.where(masked, torch.full_like(targets, self.mask_id), targets)
        trained = masked if self.stop_id is None else masked & completion_mask_from(targets, self.stop_id)
        weights = conf.gather(1, index).float() * trained / masked.sum(-1, keepdim=True).clamp_min(1)
        prompt = rollout.prompt_ids[:, None, :].expand(n, steps.shape[1], -1)
        return MaskPlan(input_ids=torch.cat([prompt, states], -1), weights=weights, targets=targets,
                        view_steps=steps, temperature=self.temperature)

    @staticmethod
    def reduce(view_logp: Tensor, plan: MaskPlan) -> Tensor:
        """Select each view's targets (the confidence weights are the objective's, not the log-prob's)."""
        return (view_logp * (plan.weights != 0)).sum(1)

    @staticmethod
    def view_groups(plan: MaskPlan) -> list[slice]:
        return [slice(k, k + 1) for k in range(plan.input_ids.shape[1])]


# config-group entries (rl_dlm/component_groups.py)
COMPONENTS = {"likelihood/prediction_replay": PredictionReplayEstimator}
