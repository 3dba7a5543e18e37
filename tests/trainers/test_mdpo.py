"""MDPO's credit: per-step advantages (hand-computed, 2 prompts × 3 samples × 4 steps in one batch, rows
interleaved), top-k step selection per group, the weighted objective, per-step rewards in one batched call,
and the prediction-replay plan."""
from __future__ import annotations

import math

import pytest
import torch

from rl_dlm.components import Rollout
from rl_dlm.likelihood.prediction_replay import PredictionReplayEstimator
from rl_dlm.objectives import WeightedTokenObjective
from rl_dlm.step_credit import StepRewards, per_step_advantage, select_steps

# Step rewards r_t, t = 0..3. Prompt A: rows a0 a1 a2; prompt B: rows b0 b1 b2.
REWARDS = {"a0": [0, 0, 1, 1], "a1": [0, 1, 1, 1], "a2": [0, 0, 0, 0],
           "b0": [1, 1, 1, 1], "b1": [0, 0, 0, 1], "b2": [1, 0, 0, 0]}
# raw_t = (r_t − r_{t−1}) + mean(r_{t+1..3}) for t < 3, r_{−1} = 0; the last step's raw is (r_3 − r_2) + r_3:
#   a0: 0 + 2/3,  0 + 1,   1 + 1,  0 + 1      b0: 1 + 1,    0 + 1,    0 + 1,  0 + 1
#   a1: 0 + 1,    1 + 1,   0 + 1,  0 + 1      b1: 0 + 1/3,  0 + 1/2,  0 + 1,  1 + 1
#   a2: 0,        0,       0,      0          b2: 1 + 0,   −1 + 0,    0 + 0,  0
RAW = {"a0": [2 / 3, 1, 2, 1], "a1": [1, 2, 1, 1], "a2": [0, 0, 0, 0],
       "b0": [2, 1, 1, 1], "b1": [1 / 3, 1 / 2, 1, 2], "b2": [1, -1, 0, 0]}
ORDER = ["a0", "b0", "a1", "b1", "a2", "b2"]  # two prompts in flight, rows interleaved
GROUPS = torch.tensor([0, 1, 0, 1, 0, 1])


def _zscore(values):
    mean = sum(values) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)  # unbiased, as in TRL
    return [(v - mean) / (std + 1e-4) for v in values]


def test_per_step_advantage_matches_the_hand_computation():
    rewards = torch.tensor([REWARDS[r] for r in ORDER], dtype=torch.float32)
    adv = per_step_advantage(rewards, GROUPS)
    for t in range(4):
        for rows in (["a0", "a1", "a2"], ["b0", "b1", "b2"]):
            expected = _zscore([RAW[r][t] for r in rows])
            got = [adv[ORDER.index(r), t].item() for r in rows]
            assert got == pytest.approx(expected, abs=1e-5), (t, rows)
    # Spot values: step 1 of prompt A has raw [1, 2, 0] → mean 1, std 1 → [0, 1, −1] / 1.0001.
    assert adv[ORDER.index("a1"), 1].item() == pytest.approx(1 / 1.0001, abs=1e-6)
    assert adv[ORDER.index("a2"), 1].item() == pytest.approx(-1 / 1.0001, abs=1e-6)
    # Step 3 of prompt A: raw [1, 1, 0] → mean 2/3, std 1/√3 → a2 = −(2/3) / (0.57735 + 1e-4).
    assert adv[ORDER.index("a2"), 3].item() == pytest.approx(-(2 / 3) / (1 / math.sqrt(3) + 1e-4), abs=1e-6)


def test_top_k_steps_per_group():
    rewards = torch.tensor([REWARDS[r] for r in ORDER], dtype=torch.float32)
    adv = per_step_advantage(rewards, GROUPS)
    # Σ|A_t| over the group = Σ|raw − mean| / std:
    #   A: t0 (10/9)/0.5092 = 2.182, t1 2/1.0001 = 2.000, t2 2.000, t3 (4/3)/0.5775 = 2.309 → top-2 {3, 0}
    #   B: t0 (16/9)/0.8389 = 2.119, t1 (7/3)/1.0409 = 2.242, t2 (4/3)/0.5775 = 2.309, t3 2/1.0001 = 2.000
    #      → top-2 {1, 2}
    steps = select_steps(adv, GROUPS, 2)
    assert steps.tolist() == [[0, 3], [1, 2], [0, 3], [1, 2], [0, 3], [1, 2]]
    assert select_steps(adv, GROUPS, 10).tolist()[0] == [0, 1, 2, 3]  # k ≥ S keeps every step
    # Ties go to the earlier step.
    assert select_steps(torch.ones(2, 4), torch.tensor([0, 0]), 2).tolist() == [[0, 1], [0, 1]]


def test_weighted_objective_hand_numbers():
    # ρ ≡ 1 (μ = 1). Row 0: weights [0.5, 0.25, 0], A = 2 → 0.5·(−2) + 0.25·(−2) = −1.5.
    # Row 1: weights all 0 → not counted. Row 2: weights [0, 0, 1], A = −1 → +1. Loss = (−1.5 + 1) / 2 rows.
    logp = torch.zeros(3, 3, requires_grad=True)
    weights = torch.tensor([[0.5, 0.25, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    objective = WeightedTokenObjective(beta=0.0)
    loss, stats = objective(logp, logp.detach(), None, torch.tensor([2.0, 5.0, -1.0]), weights)
    assert loss.item() == pytest.approx(-0.25)
    loss.backward()
    assert logp.grad.tolist() == [[-0.5, -0.25, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.5]]
    assert stats["ratio_mean"] == 1.0 and stats["clip_fraction"] == 0.0
    # k2 KL: d = ref − logp = 1 on every token → 0.5 each, weighted like the policy term.
    kl_obj = WeightedTokenObjective(beta=0.02, kl="k2")
    loss, stats = kl_obj(logp.detach(), logp.detach(), logp.detach() + 1, torch.zeros(3), weights)
    assert stats["kl"] == pytest.approx(0.5)
    assert loss.item() == pytest.approx(0.02 * 0.5 * (0.75 + 1.0) / 2)


def _rollout(n=4, num_steps=3, length=5, p=2):
    gen = torch.Generator().manual_seed(0)
    preds = torch.randint(10, 20, (n, num_steps, length), generator=gen)
    masked = torch.zeros(n, num_steps, length, dtype=torch.bool)
    masked[:, 0] = True
    masked[:, 1, 2:] = True
    masked[:, 2, 4:] = True
    preds[:, 1, :2] = preds[:, 0, :2]  # committed tokens carry over
    preds[:, 2, :4] = preds[:, 1, :4]
    preds[0, 1, 3] = 6  # row 0 predicts end of turn at slot 3 of step 1
    rollout = Rollout(prompt_ids=torch.full((n, p), 30), prompt_mask=torch.ones(n, p, dtype=torch.bool),
                      completion_ids=preds[:, -1].clone(), completion_mask=torch.ones(n, length, dtype=torch.bool),
                      group_ids=torch.tensor([0, 0, 1, 1]), row_seeds=torch.arange(n), step_predictions=preds,
                      confidence=torch.rand(n, num_steps, length, generator=gen))
    rollout.step_masked = masked
    return rollout


def test_prediction_replay_plan_states_targets_weights():
    rollout = _rollout()
    rollout.advantages = torch.tensor([[0.0, 1.0, 0.1], [0.0, -1.0, 0.1], [0.0, 0.1, 2.0], [0.0, 0.1, -2.0]])
    est = PredictionReplayEstimator(top_k_steps=1, temperature=0.4, mask_id=2, stop_id=6)
    plan = est.plan(rollout, 0)
    assert plan.view_steps.tolist() == [[1], [1], [2], [2]] and plan.temperature == 0.4
    masked = rollout.step_masked
    for n, t in enumerate([1, 1, 2, 2]):
        state = plan.input_ids[n, 0, 2:]
        assert torch.equal(state == 2, masked[n, t])  # x_t: masked where recorded
        assert torch.equal(state[~masked[n, t]], rollout.step_predictions[n, t][~masked[n, t]])
        assert torch.equal(plan.targets[n, 0], rollout.step_predictions[n, t])
        # weights: confidence / |masked_t| on the masked targets (row 0: none after its end of turn at 3).
        expected = rollout.confidence[n, t] * masked[n, t] / masked[n, t].sum()
        if n == 0:
            expected[4:] = 0
        assert torch.allclose(plan.weights[n, 0], expected)
    # reduce selects the targets, unweighted.
    view_logp = torch.full((4, 1, 5), -2.0)
    assert torch.equal(est.reduce(view_logp, plan), -2.0 * (plan.weights[:, 0] != 0))


def test_step_rewards_one_batched_call_and_the_final_reward_reused():
    rollout = _rollout()
    calls = []

    class Result:
        def __init__(self, total):
            self.total, self.stats, self.per_function = total, {}, {}

    def score_fn(r):  # "reward" = the first completion token, to see which prediction was scored
        calls.append(r.num_rows)
        return Result(r.completion_ids[:, 0].float())

    policy = type("P", (), {"stop_id": 6})()
    final = Result(torch.tensor([7.0, 7.0, 7.0, 7.0]))
    out, result = StepRewards()(policy, rollout, [{}, {}], final, score_fn)
    assert calls == [4 * 2]  # one call for steps 0 and 1; the last step is the final completion
    expected = torch.cat([rollout.step_predictions[:, :2, 0].float(), torch.full((4, 1), 7.0)], 1)
    assert torch.equal(out.step_rewards, expected)


def test_prediction_replay_plan_of_a_group_is_the_group_of_the_plan():
    rollout = _rollout()
    rollout.advantages = torch.tensor([[0.0, 1.0, 0.1], [0.0, -1.0, 0.1], [0.0, 0.1, 2.0], [0.0, 0.1, -2.0]])
    est = PredictionReplayEstimator(top_k_steps=2, temperature=0.4, mask_id=2, stop_id=6)
    whole = est.plan(rollout, 0)
    for index in (slice(0, 2), slice(2, 4)):  # one whole group per micro-batch
        part = est.plan(rollout.rows(index), 0)
        assert torch.equal(part.input_ids, whole.rows(index).input_ids)
        assert torch.equal(part.weights, whole.rows(index).weights)
    assert est.fixed_plan and torch.equal(est.plan(rollout, 3).input_ids, whole.input_ids)


def test_two_steps_three_tokens_at_temperature_one_half(monkeypatch):
    """A hand-computed MDPO step at T = 0.5 (the reference's softmax(logits / T) for commit order, weights and
    RCR; its last-step raw reward (r_1 − r_0) + r_1). L = 3, S = 2: step 0 commits 2 tokens, step 1 the last.

    Step 0 probabilities (untempered → tempered ∝ p², normalised):
      slot 0: {10: 0.6, 11: 0.4}               0.6  → 0.36 / 0.52        = 0.692308
      slot 1: {12: 0.5, five others 0.1 each}  0.5  → 0.25 / 0.30        = 0.833333
      slot 2: {13: 0.55, 14: 0.45}             0.55 → 0.3025 / 0.505     = 0.599010
    Untempered, slots {0, 2} would be committed; tempered, slots {0, 1} are. Step 1, slot 2: {15: 0.7, 14: 0.3}
    → 0.49 / 0.58 = 0.844828. The draw is replaced by the argmax so that the numbers do not depend on the
    noise: what is under test is the confidence."""
    from rl_dlm.sampling import maskgit
    from tests.sampling.scripted_policy import ScriptedPolicy

    monkeypatch.setattr(maskgit, "gumbel_argmax", lambda logits, temperature, gens, drawn=None: logits.argmax(-1))
    p, length, vocab = 2, 3, 16

    def probs(call, x):
        out = torch.zeros(x.shape[0], p + length, vocab)
        out[:, :p, 5] = 1.0
        if call == 0:
            out[:, p + 0, [10, 11]] = torch.tensor([0.6, 0.4])
            out[:, p + 1, 12] = 0.5
            out[:, p + 1, [3, 4, 7, 8, 9]] = 0.1
            out[:, p + 2, [13, 14]] = torch.tensor([0.55, 0.45])
        else:
            out[:, p + 0, 10] = out[:, p + 1, 12] = 1.0
            out[:, p + 2, [15, 14]] = torch.tensor([0.7, 0.3])
        return out

    policy = ScriptedPolicy(probs, vocab)
    rollout = maskgit.MaskGITSampler(gen_length=length, steps=2, temperature=0.5).sample(
        policy, torch.full((3, p), 5), torch.ones(3, p, dtype=torch.bool), torch.tensor([0, 1, 2]))
    # Commit order: the tempered confidence commits slots 0 and 1 at step 0 (untempered would pick 0 and 2).
    assert rollout.step_masked[0].tolist() == [[True, True, True], [False, False, True]]
    assert rollout.unmask_step[0].tolist() == [0, 0, 1]
    assert rollout.step_predictions[0].tolist() == [[10, 12, 13], [10, 12, 15]]
    conf = [0.36 / 0.52, 0.25 / 0.30, 0.3025 / 0.505]
    assert rollout.confidence[0, 0].tolist() == pytest.approx(conf, abs=1e-6)
    assert rollout.confidence[0, 1, 2].item() == pytest.approx(0.49 / 0.58, abs=1e-6)

    # Per-step advantages of a group of three with step rewards r = [r_0, r_1]:
    #   raw_0 = r_0 + r_1, raw_1 = (r_1 − r_0) + r_1:  [0, 1] → 1, 2;  [1, 1] → 2, 1;  [0, 0] → 0, 0.
    #   Both steps: mean 1, std 1 → A_0 = [0, 1, −1] / 1.0001, A_1 = [1, 0, −1] / 1.0001.
    group = torch.zeros(3, dtype=torch.long)
    adv = per_step_advantage(torch.tensor([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]), group)
    assert adv[:, 0].tolist() == pytest.approx([0.0, 1 / 1.0001, -1 / 1.0001], abs=1e-6)
    assert adv[:, 1].tolist() == pytest.approx([1 / 1.0001, 0.0, -1 / 1.0001], abs=1e-6)

    # Weights: tempered confidence / |masked_t| on the masked targets; both steps kept (k = 2).
    rollout.group_ids, rollout.advantages = group, adv
    plan = PredictionReplayEstimator(top_k_steps=2, temperature=0.5, mask_id=2, stop_id=6).plan(rollout, 0)
    assert plan.view_steps[0].tolist() == [0, 1]
    assert plan.weights[0, 0].tolist() == pytest.approx([c / 3 for c in conf], abs=1e-6)
    assert plan.weights[0, 1].tolist() == pytest.approx([0.0, 0.0, 0.49 / 0.58], abs=1e-6)

    # The loss at ρ = 1 (μ = 1), β = 0 of one row and one step: −Σ_i w_i A_t.
    logp = torch.zeros(1, length)
    objective = WeightedTokenObjective(beta=0.0)
    loss, _ = objective(logp, logp, None, adv[1:2, 0], plan.weights[1:2, 0])  # row 1, step 0: A_0 = 1/1.0001
    assert loss.item() == pytest.approx(-(sum(conf) / 3) / 1.0001, abs=1e-6)
    loss, _ = objective(logp, logp, None, adv[0:1, 1], plan.weights[0:1, 1])  # row 0, step 1: A_1 = 1/1.0001
    assert loss.item() == pytest.approx(-(0.49 / 0.58) / 1.0001, abs=1e-6)
