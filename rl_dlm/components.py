"""The shared types of the training loop and the contracts of its components, in one place.

What flows between the stages (rl_dlm/loop.py):

- `Rollout`: what a sampler hands to the rest of the loop (stage 1), rewritten by refiners (stage 2b).
- `MaskPlan`: the masked views of (prompt, completion) that a likelihood estimator asks to score (stage 4).

What the loop calls (Protocols: any object with these members is a component; nothing is inherited):

- `Sampler.sample(policy, prompt_ids, prompt_mask, row_seeds) -> Rollout`, declaring the optional Rollout fields it
  fills in `records`;
- `LikelihoodEstimator.plan(rollout, iteration) -> MaskPlan` and `reduce(view_logp, plan) -> [N, L]`, declaring
  the optional Rollout fields it reads in `requires`;
- `Objective(logp, old_logp, ref_logp, adv, mask) -> (loss, stats)`;
- an advantage function `(rewards, group_ids) -> adv`;
- `Refiner(policy, rollout, rows, result, score_fn) -> (rollout, result)`, stage 2b.

`Components` bundles one of each (refiners: any number). Shapes use one alphabet: N = B·G rows, P prompt length
(left padded), L completion length, K masked views, S denoising steps, V vocabulary.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Protocol

import torch
from torch import Tensor

# Optional Rollout fields a sampler may record (`Sampler.records`); `step_rewards` is written by a refiner and
# `advantages` by the loop's stage 3.
OPTIONAL_FIELDS = ("unmask_step", "step_predictions", "confidence", "step_masked", "hint_mask", "loss_mask")


@dataclass
class Rollout:
    """Optional fields are filled only by the component that declares them: a sampler in `Sampler.records`, a
    refiner in `Refiner.records` (`step_rewards`), the loop's stage 3 (`advantages`, before the plan is drawn).
    An estimator that needs a field states it in `requires`, and the trainer checks the pairs at start-up.
    `extras` holds a sampler's diagnostics that no other component reads (e.g. the cached sampler's forward
    count); its tensors with one entry per row are sliced and concatenated with the rows like the fields."""

    prompt_ids: Tensor  # [N, P] left padded
    prompt_mask: Tensor  # [N, P] bool, False on padding
    completion_ids: Tensor  # [N, L]
    completion_mask: Tensor  # [N, L] bool, up to and including the first end-of-turn token
    group_ids: Tensor  # [N] index of the prompt each row answers
    row_seeds: Tensor  # [N] int64; every per-row random stream (masks, ...) derives from it
    unmask_step: Tensor | None = None  # [N, L] step at which each token was committed
    step_predictions: Tensor | None = None  # [N, S, L] predicted full completion at each step
    confidence: Tensor | None = None  # [N, S, L] confidence of each step's prediction
    step_masked: Tensor | None = None  # [N, S, L] bool, positions masked in the state x_t each step saw
    hint_mask: Tensor | None = None  # [N, L] bool, tokens fixed by a hint (never sampled)
    loss_mask: Tensor | None = None  # [N, L] bool, tokens the objective trains on (None: completion_mask)
    step_rewards: Tensor | None = None  # [N, S] reward of each step's predicted completion (a refiner's)
    advantages: Tensor | None = None  # [N] or [N, S] stage 3's advantages, for estimators that plan from credit
    extras: dict = field(default_factory=dict)

    @classmethod
    def from_canvas(cls, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor, row_seeds: Tensor,
                    stop_id: int, **optional) -> "Rollout":
        """A sampler's finished canvas → Rollout: the completion mask runs through the first `stop_id`;
        group ids are set by the loop (stage 1)."""
        return cls(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
                   completion_mask=completion_mask_from(completion_ids, stop_id),
                   group_ids=torch.zeros(completion_ids.shape[0], dtype=torch.long, device=completion_ids.device),
                   row_seeds=row_seeds, **optional)

    @property
    def num_rows(self) -> int:
        return self.completion_ids.shape[0]

    def rows(self, index: Tensor | slice) -> "Rollout":
        """The sub-rollout of some rows (a micro-batch); every tensor field is indexed the same way."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value[index] if isinstance(value, Tensor) else value
        out["extras"] = {k: v[index] if self._per_row(v) else v for k, v in self.extras.items()}
        return replace(self, **out)

    def _per_row(self, value) -> bool:
        return isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == self.num_rows

    @staticmethod
    def cat(parts: list["Rollout"]) -> "Rollout":
        out = {}
        for f in fields(Rollout):
            values = [getattr(p, f.name) for p in parts]
            if isinstance(values[0], Tensor):
                out[f.name] = torch.cat(values)
            else:
                out[f.name] = values[0]
        out["extras"] = {k: torch.cat([p.extras[k] for p in parts]) if parts[0]._per_row(v) else v
                         for k, v in parts[0].extras.items()}
        return Rollout(**out)


def completion_mask_from(completion_ids: Tensor, stop_id: int) -> Tensor:
    """[N, L] bool: True up to and including the first `stop_id`; the whole row if there is none."""
    is_stop = completion_ids == stop_id
    after_stop = (is_stop.cumsum(-1) - is_stop.long()) > 0  # strictly after the first stop
    return ~after_stop


@dataclass
class MaskPlan:
    input_ids: Tensor  # [N, K, P + L] masked views
    weights: Tensor  # [N, K, L] weight of each view's token log-prob (0 = not counted)
    targets: Tensor | None = None  # [N, K, L] tokens to score; None = the rollout's completion
    view_steps: Tensor | None = None  # [N, K] denoising step each view replays (indexes per-step advantages)
    temperature: float = 1.0  # log-probs of softmax(logits / temperature), for estimators of a tempered sampler

    def rows(self, index) -> "MaskPlan":
        return replace(self, **{f.name: getattr(self, f.name)[index] for f in fields(self)
                                if isinstance(getattr(self, f.name), Tensor)})

    def views(self, index) -> "MaskPlan":
        """The sub-plan of some views (index into K), for estimators that score their views in groups."""
        return replace(self, **{f.name: getattr(self, f.name)[:, index] for f in fields(self)
                                if isinstance(getattr(self, f.name), Tensor)})


class Sampler(Protocol):
    records: frozenset[str]  # which optional Rollout fields it fills
    gen_length: int

    def sample(self, policy, prompt_ids: Tensor, prompt_mask: Tensor, row_seeds: Tensor) -> Rollout: ...


class LikelihoodEstimator(Protocol):
    """`plan` draws the masked views once per inner iteration; the loop scores them one *view group* at a time
    (`view_groups`, memory flat in K): for each group, `reduce` turns its views' token log-probs into the
    objective's [n, L] log-probs, `objective_mask` gives the objective's token mask, and the groups' losses are
    averaged (groups whose views weight no token are skipped). Most estimators have one group of all views
    (`all_views`) and mask the completion (`completion_tokens`); a replay of the denoising steps has one group per
    step whose weights are the mask (`weighted_tokens`). `fixed_plan`: the plan does not depend on the iteration
    (a replay of the rollout), so the loop plans once and scores the old / reference log-probs once."""

    requires: frozenset[str]  # optional Rollout fields it reads (checked against the sampler at start-up)
    fixed_plan: bool

    def plan(self, rollout: Rollout, iteration: int) -> MaskPlan: ...

    def reduce(self, view_logp: Tensor, plan: MaskPlan) -> Tensor: ...

    def view_groups(self, plan: MaskPlan) -> list: ...

    def objective_mask(self, rollout: Rollout, plan: MaskPlan) -> Tensor: ...


def all_views(plan: MaskPlan) -> list[slice]:
    """The default view grouping: one group of all K views."""
    return [slice(None)]


def completion_tokens(rollout: Rollout, plan: MaskPlan) -> Tensor:
    """The default objective mask: the rollout's loss mask, else its completion mask. [n, L]"""
    return rollout.completion_mask if rollout.loss_mask is None else rollout.loss_mask


def weighted_tokens(rollout: Rollout, plan: MaskPlan) -> Tensor:
    """The objective mask of estimators whose view weights already fold in the loss mask: Σ_K weights. [n, L]"""
    return plan.weights.sum(1)


class Objective(Protocol):
    needs_reference: bool

    def __call__(self, logp: Tensor, old_logp: Tensor, ref_logp: Tensor | None, adv: Tensor,
                 mask: Tensor) -> tuple[Tensor, dict[str, float]]: ...


class Refiner(Protocol):
    """Stage 2b: may rewrite rows of a scored rollout (e.g. IGPO replaces all-wrong groups with hinted samples)
    or fill the optional Rollout fields it declares in `records` (e.g. MDPO's `step_rewards`)."""

    records: frozenset[str]

    def __call__(self, policy, rollout: Rollout, rows: list[dict], result, score_fn) -> tuple[Rollout, object]: ...

    def check_rows(self, rows: list[dict]) -> None:
        """At start-up: the training rows carry what the refiner reads (e.g. IGPO's reference trace)."""


@dataclass
class Components:
    sampler: Sampler
    estimator: LikelihoodEstimator
    objective: Objective
    advantage: Callable[[Tensor, Tensor], Tensor]
    refiners: list[Refiner] = field(default_factory=list)
