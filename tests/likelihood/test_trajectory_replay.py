"""Trajectory replay (CJ-GRPO): the commit map rebuilds every state the sampler saw, the per-step update
aggregates "token mean within each step, then mean over steps" skipping empty steps, ratio ≡ 1 at the old
policy, and the update's autograd memory does not grow with the number of steps S."""
from __future__ import annotations

import pytest
import torch

from rl_dlm.components import Components
from rl_dlm.data.prompts import encode_prompts
from rl_dlm.likelihood.trajectory_replay import TrajectoryReplayEstimator
from rl_dlm.loop import _score_no_grad, update_micro_batch
from rl_dlm.objectives import ClippedTokenObjective
from rl_dlm.sampling.full_diffusion import FullDiffusionSampler
from rl_dlm.sampling.semi_ar import SemiARSampler
from tests.sampling.scripted_policy import RecordingPolicy

PROMPTS = [[{"role": "user", "content": "Compute 3+4*2."}],
           [{"role": "user", "content": "Using the numbers [3, 5, 7], create an equation that equals 22."}]]

SAMPLERS = {
    "semi_ar": SemiARSampler(gen_length=16, block_length=8, steps=8, temperature=1.0),
    "eoser": FullDiffusionSampler(gen_length=16, steps=8, step_schedule="linear", temperature=1.0),
    "eoser_ass_blocks": FullDiffusionSampler(gen_length=16, step_schedule="ascending", block_num=2,
                                             temperature=1.0),
}


def _rollout(policy, sampler, seeds=(1, 2)):
    ids, mask = encode_prompts(policy.tokenizer, PROMPTS, None)
    return sampler.sample(policy, ids, mask, torch.tensor(seeds))


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_replay_reconstructs_every_intermediate_state_exactly(tiny_policy, name):
    recorder = RecordingPolicy(tiny_policy)
    rollout = _rollout(recorder, SAMPLERS[name])
    plan = TrajectoryReplayEstimator(mask_id=tiny_policy.mask_id).plan(rollout, 0)
    assert plan.input_ids.shape[1] == len(recorder.inputs)  # K = S views
    for s, seen in enumerate(recorder.inputs):
        assert torch.equal(plan.input_ids[:, s], seen), f"state {s} differs"
    # Each trained token is the target of exactly one view: the step that committed it.
    assert torch.equal(plan.weights.sum(1), rollout.completion_mask.float())
    assert torch.equal(plan.view_steps[0], torch.arange(len(recorder.inputs)))


def _components(estimator, beta=0.0):
    return Components(sampler=None, estimator=estimator, objective=ClippedTokenObjective(epsilon=0.5, beta=beta),
                      advantage=None)


def test_token_mean_within_each_step_then_mean_over_steps(tiny_lora_policy):
    policy = tiny_lora_policy
    rollout = _rollout(policy, SAMPLERS["semi_ar"])
    # Row 0 trains on every token, row 1 only on the tokens of steps 0–2; nothing is trained at step 5.
    steps = rollout.unmask_step
    rollout.loss_mask = (steps != 5) & ((torch.arange(2)[:, None] == 0) | (steps <= 2))
    est = TrajectoryReplayEstimator(mask_id=policy.mask_id)
    plan = est.plan(rollout, 0)
    old = _score_no_grad(policy, est, rollout, plan, None)
    adv = torch.tensor([1.0, 3.0])
    losses = []
    stats = update_micro_batch(policy, _components(est), rollout, plan, old, None, adv, 1,
                               lambda loss: (losses.append(loss.item()), loss.backward()))
    # ρ ≡ 1, so each token's loss is −A of its row: a step's loss is −(1·n0 + 3·n1) / (n0 + n1).
    expected = []
    for s in range(8):
        n0 = int(((steps[0] == s) & rollout.loss_mask[0]).sum())
        n1 = int(((steps[1] == s) & rollout.loss_mask[1]).sum())
        if n0 + n1:
            expected.append(-(1 * n0 + 3 * n1) / (n0 + n1))
    assert len(losses) == len(expected) == 7  # the empty step is skipped, not a NaN
    assert sum(losses) == pytest.approx(sum(expected) / len(expected), abs=1e-6)
    assert stats["ratio_mean"] == pytest.approx(1.0) and stats["clip_fraction"] == 0.0


def _update(policy, est, rollout, plan, old, groups_per_forward: int):
    """One update → (loss values passed to backward, stats, LoRA gradients); gradients zeroed after."""
    losses = []
    stats = update_micro_batch(policy, _components(est, beta=0.0), rollout, plan, old, None, torch.tensor([1.0, -2.0]),
                               2, lambda loss: (losses.append(loss.item()), loss.backward()), groups_per_forward)
    grads = {n: p.grad.clone() for n, p in policy.model.named_parameters() if p.grad is not None}
    policy.model.zero_grad(set_to_none=True)
    return losses, stats, grads


@pytest.mark.parametrize("groups_per_forward", [3, 100])
def test_steps_forwarded_together_give_the_same_update(tiny_lora_policy, groups_per_forward):
    """replay_steps_per_forward: the steps' views in one forward and their summed losses in one backward give
    the loss, statistics and gradients of one forward and backward per step (to fp32 rounding)."""
    policy = tiny_lora_policy
    with torch.no_grad():  # non-zero adapters, so every LoRA weight gets a gradient
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * 0.1)
    rollout = _rollout(policy, SAMPLERS["semi_ar"])
    rollout.loss_mask = rollout.unmask_step != 5  # one step with nothing to train: skipped in both
    est = TrajectoryReplayEstimator(mask_id=policy.mask_id)
    plan = est.plan(rollout, 0)
    old = _score_no_grad(policy, est, rollout, plan, None) + 0.01  # ρ ≠ 1: the clipped objective does work
    one_losses, one_stats, one_grads = _update(policy, est, rollout, plan, old, 1)
    losses, stats, grads = _update(policy, est, rollout, plan, old, groups_per_forward)
    assert len(one_losses) == 7 and len(losses) == -(-7 // groups_per_forward)  # backward calls
    assert sum(losses) == pytest.approx(sum(one_losses), abs=1e-6)
    assert stats == pytest.approx(one_stats, abs=1e-6)
    assert one_grads.keys() == grads.keys() and any("lora_A" in n for n in grads)
    for n, g in grads.items():
        torch.testing.assert_close(g, one_grads[n], atol=1e-6, rtol=1e-5, msg=n)


class _OneGroup(TrajectoryReplayEstimator):
    """Control: every view in a single group (one graph for all S steps, as in the reference)."""

    @staticmethod
    def view_groups(plan):
        return [slice(0, plan.input_ids.shape[1])]


def _peak_saved_bytes(policy, estimator, rollout) -> int:
    """Largest number of bytes autograd holds for backward between two backward calls of the update."""
    plan = estimator.plan(rollout, 0)
    old = _score_no_grad(policy, estimator, rollout, plan, None)
    live, peaks = [0], []

    def pack(t):
        live[0] += t.numel() * t.element_size()
        return t

    def backward(loss):
        peaks.append(live[0])
        loss.backward()
        live[0] = 0

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        update_micro_batch(policy, _components(estimator), rollout, plan, old, None, torch.tensor([1.0, -1.0]),
                           1, backward)
    policy.model.zero_grad(set_to_none=True)
    return max(peaks)


def test_update_memory_does_not_grow_with_the_number_of_steps(tiny_lora_policy):
    policy = tiny_lora_policy
    rollouts = {s: _rollout(policy, SemiARSampler(gen_length=16, block_length=16, steps=s, temperature=1.0))
                for s in (4, 16)}
    assert [int(r.unmask_step.max()) + 1 for r in rollouts.values()] == [4, 16]
    est = TrajectoryReplayEstimator(mask_id=policy.mask_id)
    flat = {s: _peak_saved_bytes(policy, est, r) for s, r in rollouts.items()}
    assert flat[16] <= 1.05 * flat[4], flat
    one_graph = {s: _peak_saved_bytes(policy, _OneGroup(mask_id=policy.mask_id), r) for s, r in rollouts.items()}
    assert one_graph[16] > 3 * one_graph[4], one_graph  # what per-step backward avoids
    assert one_graph[4] > 3 * flat[4]


def test_a_fixed_plan_is_scored_once_for_all_inner_iterations(tiny_policy):
    from rl_dlm.loop import _score_plans

    rollout = _rollout(tiny_policy, SAMPLERS["semi_ar"])
    est = TrajectoryReplayEstimator(mask_id=tiny_policy.mask_id)
    assert est.fixed_plan and torch.equal(est.plan(rollout, 0).input_ids, est.plan(rollout, 5).input_ids)
    recorder = RecordingPolicy(tiny_policy)
    plan = est.plan(rollout, 0)
    old = _score_plans(recorder, est, rollout, [plan] * 3, None)
    assert len(recorder.inputs) == 8  # one forward per step, not per step × iteration
    assert old[0] is old[1] is old[2]


def test_replay_logp_is_the_sampled_trajectory_log_likelihood_and_rechunking_keeps_plans(tiny_policy):
    from rl_dlm.likelihood.base import score, token_logp

    recorder = RecordingPolicy(tiny_policy)
    rollout = _rollout(recorder, SAMPLERS["eoser"])
    est = TrajectoryReplayEstimator(mask_id=tiny_policy.mask_id)
    plan = est.plan(rollout, 0)
    logp = est.reduce(score(tiny_policy, rollout, plan), plan)  # [N, L]
    # Σ over steps of log p(tokens committed at s | x_s), straight from the states the sampler saw.
    p = rollout.prompt_ids.shape[1]
    attn = torch.cat([rollout.prompt_mask, torch.ones_like(rollout.completion_mask)], 1)
    expected = torch.zeros_like(logp)
    for s, seen in enumerate(recorder.inputs):
        at_s = (rollout.unmask_step == s) & rollout.completion_mask
        step_logp = token_logp(tiny_policy.logits(seen, attn)[:, p:], rollout.completion_ids)
        expected = torch.where(at_s, step_logp, expected)
    assert torch.allclose(logp, expected, atol=1e-5)
    # The plan of a micro-batch is the micro-batch of the plan.
    for index in (slice(0, 1), slice(1, 2)):
        part = est.plan(rollout.rows(index), 0)
        assert torch.equal(part.input_ids, plan.rows(index).input_ids)
        assert torch.equal(part.weights, plan.rows(index).weights)
