"""The training loop. It is algorithm-blind: every algorithm is a choice of components (`Components`).

One iteration of the outer loop, in stages (stage names are timer names and metric prefixes):

    1 rollout     sample G completions for each of B prompts                  → Rollout [N = B·G rows]
    2 reward      score them with the reward functions                         → rewards [N]
    2b refine     optional stages that may rewrite part of a group (IGPO hints) or record more credit
                  (per-step rewards [N, S] in `rollout.step_rewards`, MDPO)  → Rollout, rewards
    3 advantage   group-relative advantages of the step rewards if recorded, else of the rewards
                  (`rollout.advantages`, before the plan: MDPO plans from the credit)  → adv [N] or [N, S]
    4 old_logp    for each of μ inner iterations: draw the mask plan once, score the old (μ > 1; μ = 1 uses
                  stage 5's own, detached: ρ ≡ 1) and reference log-probs, no grad  → plans, old_logp, ref_logp
    5 update      μ inner iterations × micro-batches × the estimator's view groups: score the current policy
                  on the same plan, objective(logp, old_logp, ref_logp, adv, mask) → backward
    6 step        clip, optimizer and scheduler step once per inner iteration (a non-finite one is skipped and
                  counted, `rl_dlm/run_guard.py`), log, checkpoint

`max_steps` counts optimizer steps, as in TRL: each rollout batch serves μ (`num_iterations`) of them.

Processes: the loop talks to a `Runtime` (`rl_dlm/distributed.py`): one process by default, or one rank of a
DeepSpeed ZeRO-2/3 run. Every rank draws the same global prompt batch and keeps its own rows of it (`rank_share`);
a group may span ranks, so stage 3 gathers rewards and group ids from every rank first. Row seeds are global row
indices, so what a row samples and masks does not depend on the number of processes. Under ZeRO-3 the no-grad
stages (1, 2b, 4) run on the full weights, gathered once per stage (`runtime.gathered`). Metrics are averaged over
ranks by the tracker; `tokens_per_s/<stage>` counts rollout tokens generated and training tokens forwarded.

Stage 5 updates one group of views at a time (`LikelihoodEstimator.view_groups`, rl_dlm/components.py): it
scores a group, calls the objective on the group's tokens (`objective_mask`) and back-propagates before the next,
so memory does not grow with the number of views (`update_micro_batch`). Most estimators have one group of all
views; the replays (trajectory, CJ-GRPO; steps, MDPO) have one per step. Per-step advantages [N, S] reach the
objective through the views' `view_steps`. `replay_steps_per_forward` > 1 forwards that many groups together
and back-propagates their summed losses once: the same loss and gradient to rounding (LoRA dropout, if on, draws
its masks for the larger batch), in larger GEMMs, holding that many groups' activations.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from rl_dlm.advantages import zero_std_fraction
from rl_dlm.components import Components, Rollout
from rl_dlm.distributed import LocalRuntime, rank_share
from rl_dlm.likelihood.base import score
from rl_dlm.reward_runner import RewardRunner
from rl_dlm.rollout_stage import batch_row_seeds, generate, score_rollout
from rl_dlm.run_guard import SkippedSteps


@dataclass
class LoopSettings:
    """The loop's share of the trainer config: the same names, no defaults of its own (they live once, on
    `RLConfig`, rl_dlm/trainers/base.py, which fills these fields by name)."""

    max_steps: int
    num_generations: int
    num_iterations: int
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    max_prompt_length: int | None
    max_grad_norm: float | None
    logging_steps: int
    save_steps: int
    save_total_limit: int | None
    output_dir: str
    seed: int
    forward_batch_size: int | None  # rows per no-grad forward in stage 4 (None = all)
    replay_steps_per_forward: int  # view groups per forward and backward in stage 5
    max_skipped_steps: int  # non-finite steps in a row before the run stops

    @property
    def rows_per_rollout(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps


def _micro_batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


@torch.no_grad()
def _score_no_grad(policy, estimator, rollout: Rollout, plan, chunk: int | None) -> Tensor:
    """Old / reference token log-probs per view [N, K, L] (each view group is reduced on its own in stage 5),
    scored one group at a time, in eval mode; groups that weight no token are left at 0."""
    was_training = policy.model.training
    policy.model.eval()
    try:
        n, k, total = plan.input_ids.shape
        out = torch.zeros(n, k, total - rollout.prompt_ids.shape[1], device=plan.input_ids.device)
        for g in estimator.view_groups(plan):
            if (plan.weights[:, g] != 0).any():
                out[:, g] = score(policy, rollout, plan.views(g), chunk)
        return out
    finally:
        policy.model.train(was_training)


def _score_plans(policy, estimator, rollout: Rollout, plans: list, chunk: int | None) -> list[Tensor]:
    """`_score_no_grad` for each inner iteration's plan; a plan object shared by iterations is scored once."""
    scored: dict[int, Tensor] = {}
    for plan in plans:
        if id(plan) not in scored:
            scored[id(plan)] = _score_no_grad(policy, estimator, rollout, plan, chunk)
    return [scored[id(plan)] for plan in plans]


def _view_credit(adv: Tensor, plan) -> Tensor:
    """adv [n] (one per row) or [n, S] (per step) → [n] for a group of views replaying one step each."""
    if adv.dim() == 1:
        return adv
    if plan.view_steps is None or plan.view_steps.shape[1] != 1:
        raise ValueError("per-step advantages [N, S] need an estimator whose view groups hold one view each, "
                         "with MaskPlan.view_steps set (step replay)")
    return adv.gather(1, plan.view_steps.to(adv.device))[:, 0]


def _view_index(groups: list, k: int):
    """The views of several groups (index into K) as one index: the group itself when there is one."""
    if len(groups) == 1:
        return groups[0]
    return torch.cat([torch.arange(k)[g].reshape(-1) for g in groups])


def update_micro_batch(policy, components: Components, part: Rollout, plan, old_logp: Tensor | None,
                       ref_logp: Tensor | None, adv: Tensor, micro_batches: int,
                       backward: Callable[[Tensor], None], groups_per_forward: int = 1) -> dict[str, float]:
    """Stage 5 on one micro-batch: per view group of the estimator, its objective; one forward and backward
    per `groups_per_forward` groups (their views scored together, their losses summed).

    The objective's token mask is the estimator's `objective_mask` (the completion / loss mask; for a replay,
    the group's weights); the loss is averaged over the groups that weight any token, so one view per step gives
    "token mean within each step, then mean over steps", and over the `micro_batches` of the inner iteration.
    old_logp (None: μ = 1, the current log-probs detached), ref_logp: [n, K, L] per view."""
    est, objective = components.estimator, components.objective
    groups = [g for g in est.view_groups(plan) if (plan.weights[:, g] != 0).any()]
    k = plan.input_ids.shape[1]
    totals: dict[str, float] = {}
    for first in range(0, len(groups), groups_per_forward):
        chunk = groups[first:first + groups_per_forward]
        scored, offset, total = score(policy, part, plan.views(_view_index(chunk, k))), 0, None
        for g in chunk:
            sub = plan.views(g)
            width = sub.input_ids.shape[1]
            logp = est.reduce(scored[:, offset:offset + width], sub)
            offset += width
            old = logp.detach() if old_logp is None else est.reduce(old_logp[:, g], sub)
            ref = None if ref_logp is None else est.reduce(ref_logp[:, g], sub)
            loss, stats = objective(logp, old, ref, _view_credit(adv, sub), est.objective_mask(part, sub))
            total = loss if total is None else total + loss
            for key, v in {"loss": loss.item(), **stats}.items():
                totals[key] = totals.get(key, 0.0) + v / len(groups)
        backward(total / micro_batches / len(groups))
    return totals


def train(policy, components: Components, rewards: RewardRunner, prompt_batches: Iterator[list[dict]],
          optimizer: torch.optim.Optimizer, scheduler, settings: LoopSettings, tracker,
          start_step: int = 0, on_step: Callable[[int], None] | None = None, progress=None,
          backward: Callable[[Tensor], None] = Tensor.backward, runtime=None) -> list[dict]:
    """Runs until `settings.max_steps` optimizer steps. Returns the logged history.

    `prompt_batches` yields the global batch (every rank the same); `runtime` defaults to one process."""
    c, s = components, settings
    rt = runtime or LocalRuntime(policy.trainable_parameters(), optimizer, scheduler, s.max_grad_norm, backward)
    backward = rt.backward
    step, rollout_index = start_step, start_step // max(s.num_iterations, 1)
    skipped = SkippedSteps(s.max_skipped_steps, tracker.history)  # history: a resumed run keeps its count
    while step < s.max_steps:
        batch = next(prompt_batches)
        first, group = rank_share(len(batch), s.num_generations, s.rows_per_rollout, rt.rank)
        rows = batch[first:first + len(group)]
        mine = slice(rt.rank * s.rows_per_rollout, (rt.rank + 1) * s.rows_per_rollout)
        seeds = batch_row_seeds(s.seed, rollout_index, len(batch) * s.num_generations)[mine]
        rollout_index += 1
        metrics: dict[str, float] = {}

        # 1 rollout ------------------------------------------------------------------------------------------
        with tracker.stage("rollout"), rt.gathered(policy):  # ZeRO-3: the full weights, gathered once per stage
            rollout = generate(policy, c.sampler, rows, group, seeds, s.max_prompt_length)
        tracker.count("rollout", rollout.completion_ids.numel())

        # 2 reward (and 2b refine) ---------------------------------------------------------------------------
        with tracker.stage("reward"):
            result = score_rollout(policy, rewards, rollout, rows, group)
            with rt.gathered(policy) if c.refiners else contextlib.nullcontext():
                for refine in c.refiners:
                    rollout, result = refine(policy, rollout, rows, result,
                                             lambda r: score_rollout(policy, rewards, r, rows, group))
        metrics.update(result.stats)
        group_ids = rt.gather(rollout.group_ids.cpu() + first)  # global prompt index, every rank's rows
        metrics["frac_reward_zero_std"] = zero_std_fraction(rt.gather(result.total), group_ids)
        metrics["completion_length"] = rollout.completion_mask.sum(1).float().mean().item()

        # 3 advantage ----------------------------------------------------------------------------------------
        with tracker.stage("advantage"):
            credit = result.total if rollout.step_rewards is None else rollout.step_rewards  # [N] or [N, S]
            local = slice(rt.rank * rollout.num_rows, (rt.rank + 1) * rollout.num_rows)
            adv = c.advantage(rt.gather(credit), group_ids)[local].to(policy.device)
            rollout = replace(rollout, advantages=adv)

        # 4 plan masks once per inner iteration (those that will run); old and reference log-probs -----------
        with tracker.stage("old_logp"):
            iterations = min(s.num_iterations, s.max_steps - step)
            if c.estimator.fixed_plan:  # e.g. trajectory replay: one plan, scored once
                plans = [c.estimator.plan(rollout, 0)] * iterations
            else:
                plans = [c.estimator.plan(rollout, it) for it in range(iterations)]
            scored = s.num_iterations > 1 or c.objective.needs_reference
            with rt.gathered(policy) if scored else contextlib.nullcontext():  # both passes on one gather
                # μ = 1: stage 5 takes its own log-probs, detached, as the old ones (ρ ≡ 1 in the update's mode)
                old = [None] * len(plans) if s.num_iterations == 1 else _score_plans(
                    policy, c.estimator, rollout, plans, s.forward_batch_size)
                ref = [None] * len(plans)
                if c.objective.needs_reference:
                    with policy.reference():
                        ref = _score_plans(policy, c.estimator, rollout, plans, s.forward_batch_size)

        # 5 inner updates and 6 optimizer steps ----------------------------------------------------------------
        for it in range(iterations):
            with tracker.stage("update"):
                batches = _micro_batches(rollout.num_rows, s.per_device_train_batch_size)
                totals: dict[str, float] = {}
                for mb in batches:
                    part, plan = rollout.rows(mb), plans[it].rows(mb)
                    old_mb, ref_mb = (None if t[it] is None else t[it][mb] for t in (old, ref))  # old None: μ = 1
                    tracker.count("update", plan.input_ids.numel())
                    stats = update_micro_batch(policy, c, part, plan, old_mb, ref_mb, adv[mb], len(batches), backward,
                                               s.replay_steps_per_forward)
                    for k, v in stats.items():
                        totals[k] = totals.get(k, 0.0) + v / len(batches)
                grad_norm, applied = rt.step()  # not applied: a non-finite loss or gradient, discarded
            step += 1
            if progress is not None:
                progress(step, {"reward": metrics.get("reward", math.nan)})
            skipped.record(step, it, applied, totals.get("loss", math.nan), grad_norm)
            if step % s.logging_steps == 0 or step == s.max_steps:
                tracker.log(step, {**metrics, **totals, "grad_norm": float(grad_norm), "skipped_steps": skipped.total,
                                   "learning_rate": optimizer.param_groups[0]["lr"]})
            if on_step is not None:
                on_step(step)
            skipped.stop_if_too_many()
    return tracker.history
