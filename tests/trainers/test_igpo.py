"""IGPO's inpainting stage: hint layout (chunks, η, stretch, gap cap, free tail, answer chunk), hints fixed
and outside the step budget, the all-wrong trigger, replacement that keeps the group, the entropy filter
(token and sequence ratios), and an always-failing task where only IGPO yields a learning signal."""
from __future__ import annotations

import pytest
import torch

from rl_dlm.advantages import mean_centred
from rl_dlm.data.prompts import encode_prompts
from rl_dlm.reward_runner import RewardFunction, RewardRunner
from rl_dlm.rollout_stage import batch_row_seeds, generate, score_rollout
from rl_dlm.sampling.inpainting import HintRefiner, HintSettings, entropy_filter, pick_replacements, plan_hints
from rl_dlm.sampling.rollout import row_generator
from rl_dlm.sampling.semi_ar import SemiARSampler

FIXED5 = HintSettings(min_chunk=5, max_chunk=5)


def test_free_tail_scales_with_short_canvases():
    assert [HintSettings().tail(n) for n in (32, 48, 256, 512)] == [4, 6, 30, 30]


def test_fixed_chunks_reveal_all_but_the_answer_chunk():
    # 40 tokens → 8 chunks of 5; η = 1 reveals all 7 non-final chunks; L = 64 leaves 56 slots, stretch 1.4,
    # but adjacent chunks have no gap, so the hints are contiguous from slot 0.
    trace = list(range(100, 140))
    out = plan_hints(trace, 64, 1.0, row_generator(0, "t"), FIXED5)
    assert out[:35].tolist() == trace[:35] and (out[35:] == -1).all()
    shown = plan_hints(trace, 64, 1.0, row_generator(0, "t"), HintSettings(5, 5, reveal_answer_chunk=True))
    assert shown[:40].tolist() == trace


def _check_layout(out: torch.Tensor, base: int, stretch: float, max_gap: int):
    """Hint tokens are distinct trace indices: each sits at the stretched position with capped gaps."""
    pos = (out >= 0).nonzero().flatten().tolist()
    idx = [int(out[q]) - base for q in pos]
    assert pos[0] == int(idx[0] * stretch)
    capped = False
    for (q0, i0), (q1, i1) in zip(zip(pos, idx), zip(pos[1:], idx[1:])):
        assert i1 > i0
        gap = min(int((i1 - i0 - 1) * stretch), max_gap)
        capped |= int((i1 - i0 - 1) * stretch) > max_gap
        assert q1 - q0 - 1 == gap
    return capped


@pytest.mark.parametrize("eta", [0.2, 0.45, 0.6])
def test_hints_sit_at_the_stretched_positions_and_leave_the_tail_free(eta):
    trace = list(range(1000, 1040))  # 8 chunks of 5 → 7 candidates; ⌈η·7⌉ revealed
    for seed in range(5):
        out = plan_hints(trace, 64, eta, row_generator(seed, "t"), FIXED5)
        assert (out[56:] == -1).all()  # tail = ⌈30·64/256⌉ = 8
        assert int((out >= 0).sum()) == 5 * (7 - int(7 * (1 - eta)))
        assert not (out >= 1035).any()  # the answer chunk stays hidden
        _check_layout(out, 1000, stretch=1.4, max_gap=100)


def test_gaps_are_capped_at_max_gap():
    trace = list(range(5000, 5300))  # 300 tokens on a 512 canvas: stretch min(482/300, 1.5) = 1.5
    capped = [_check_layout(plan_hints(trace, 512, 0.2, row_generator(s, "t"), HintSettings(10, 10)), 5000, 1.5, 100)
              for s in range(20)]
    assert any(capped), "no draw produced a gap above the cap"


def test_eta_is_sorted_across_the_group(tokenizer):
    refiner = HintRefiner(sampler=SemiARSampler(gen_length=16, block_length=16, steps=4),
                          is_correct=lambda per_function: None, hints=FIXED5)
    canvas = refiner.hint_canvas(tokenizer, "#" * 60, list(range(8)), 96)
    counts = (canvas >= 0).sum(1).tolist()
    assert counts == sorted(counts) and counts[0] >= 5


def test_hints_are_fixed_and_excluded_from_the_step_budget(tiny_policy):
    ids, mask = encode_prompts(tiny_policy.tokenizer, [[{"role": "user", "content": "Compute 1+2."}]], None)
    hints = torch.full((1, 16), -1)
    hints[0, 2:6] = torch.tensor([40, 41, 42, 43])  # 4 hints in block 0
    rollout = SemiARSampler(gen_length=16, block_length=8, steps=8, temperature=1.0).sample(
        tiny_policy, ids, mask, torch.tensor([3]), hint_ids=hints)
    assert rollout.completion_ids[0, 2:6].tolist() == [40, 41, 42, 43]
    assert (rollout.unmask_step[0, 2:6] == -1).all() and rollout.hint_mask[0, 2:6].all()
    # 4 steps per block: block 0 has 4 masked slots → 1 per step; block 1 has 8 → 2 per step.
    steps = rollout.unmask_step[0]
    assert torch.bincount(steps[steps >= 0], minlength=8).tolist() == [1, 1, 1, 1, 2, 2, 2, 2]


def test_entropy_filter_keeps_top_fraction_of_hints_and_every_generated_token():
    entropy = torch.arange(48, dtype=torch.float32).reshape(3, 16).flip(1)  # decreasing along each row
    hint = torch.zeros(3, 16, dtype=torch.bool)
    hint[0, [1, 3, 5, 7, 9]] = True  # n = 5 → ⌈0.2·5⌉ = 1 kept: slot 1 (highest entropy)
    hint[1, :12] = True  # n = 12 → max(1, ⌊2.4⌋) = 2 kept: slots 0, 1
    completion = torch.ones(3, 16, dtype=torch.bool)
    completion[1, 14:] = False
    kept = entropy_filter(entropy, hint, completion, 0.2)
    assert kept[0].tolist() == [not h or i == 1 for i, h in enumerate(hint[0].tolist())]
    assert kept[1].tolist() == [True] * 2 + [False] * 10 + [True, True, False, False]
    assert kept[2].all()  # no hints: every generated token
    one = torch.zeros(1, 16, dtype=torch.bool)
    one[0, 4] = True  # a single hint token is always kept (at least 1)
    assert entropy_filter(entropy[:1], one, completion[:1], 0.2).all()


@pytest.mark.parametrize("n, kept", [(1, 1), (4, 1), (5, 1), (9, 1), (10, 2), (14, 2), (15, 3), (16, 3)])
def test_entropy_filter_keeps_the_references_count_of_hint_tokens(n, kept):
    # The reference keeps max(1, int(n·τ)) hint tokens (τ = 0.2): a floor, so 9 hints keep 1 and 14 keep 2
    # (a ceiling would keep 2 and 3).
    entropy = torch.arange(16, dtype=torch.float32).flip(0)[None]
    hint = torch.zeros(1, 16, dtype=torch.bool)
    hint[0, :n] = True
    out = entropy_filter(entropy, hint, torch.ones(1, 16, dtype=torch.bool), 0.2)
    assert int((out & hint).sum()) == kept
    assert out[0, :kept].all()  # the highest-entropy hints


def test_replacements_are_a_uniform_random_subset_seeded_per_row():
    correct = [True] * 6 + [False] * 2  # η sorted ascending: the first correct samples are the least hinted
    counts = [0] * 8
    for g in range(600):
        seeds = list(range(8 * g, 8 * g + 8))
        picked = pick_replacements(correct, seeds, 4)
        assert len(picked) == 4 and all(correct[j] for j in picked) and picked == sorted(picked)
        assert pick_replacements(correct, seeds, 4) == picked  # a function of the seeds
        counts = [c + (j in picked) for j, c in enumerate(counts)]
    # Each correct sample is kept with probability 4/6 (binomial sd ≈ 0.019 over 600 groups).
    assert all(abs(c / 600 - 4 / 6) < 0.08 for c in counts[:6]) and counts[6:] == [0, 0]
    # Seeded per row: a sample's chance depends on its own seed only, so reordering the rows reorders the picks,
    # and another seed for a wrong sample changes nothing.
    seeds = [11, 12, 13, 14, 15, 16, 17, 18]
    picked = pick_replacements(correct, seeds, 4)
    assert pick_replacements(correct[::-1], seeds[::-1], 4) == sorted(7 - j for j in picked)
    assert pick_replacements(correct, seeds[:7] + [99], 4) == picked
    assert pick_replacements(correct, seeds, 10) == [0, 1, 2, 3, 4, 5]  # fewer winners than the cap: all


def test_refiner_replaces_with_the_per_row_random_subset(tiny_policy):
    # One all-wrong group of 8; the hinted sampler marks each sample j with token 40 + j, and samples 0–5 are
    # correct. The 4 that take the group's first slots are pick_replacements' choice, not always 0–3.
    from rl_dlm.reward_runner import RewardResult
    from rl_dlm.components import Rollout

    ids, mask = encode_prompts(tiny_policy.tokenizer, [ROWS[0]["prompt"]], None)
    ids, mask, length = ids.repeat(8, 1), mask.repeat(8, 1), 16

    class Marking:
        def sample(self, policy, prompt_ids, prompt_mask, seeds, hint_ids=None):
            marks = (40 + torch.arange(prompt_ids.shape[0]))[:, None].expand(-1, length).clone()
            return Rollout.from_canvas(prompt_ids, prompt_mask, marks, seeds, policy.stop_id,
                                       hint_mask=hint_ids >= 0)

    def score(r):
        ok = ((r.completion_ids[:, 0] >= 40) & (r.completion_ids[:, 0] < 46)).float()
        return RewardResult(total=ok, per_function={"correct": ok})

    chosen = set()
    for g in range(12):
        seeds = list(range(8 * g, 8 * g + 8))
        rollout = Rollout(prompt_ids=ids, prompt_mask=mask, completion_ids=torch.zeros(8, length, dtype=torch.long),
                          completion_mask=torch.ones(8, length, dtype=torch.bool),
                          group_ids=torch.zeros(8, dtype=torch.long), row_seeds=torch.tensor(seeds))
        refiner = HintRefiner(sampler=Marking(), is_correct=lambda per: per["correct"] >= 1, hints=FIXED5)
        mixed, _ = refiner(tiny_policy, rollout, [ROWS[0]], score(rollout), score)
        sources = (mixed.completion_ids[:4, 0] - 40).tolist()
        assert sources == pick_replacements([True] * 6 + [False] * 2, seeds, 4)
        assert (mixed.completion_ids[4:] == 0).all()
        chosen |= set(sources)
    assert chosen == set(range(6))  # every correct sample gets in sometimes


def _marker_reward(completions, force=None, **kw):
    """Correct iff the completion contains '#####' (or the row is forced correct)."""
    text = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [1.0 if (f or "#####" in t) else 0.0 for t, f in zip(text, force or [0] * len(text))]


ROWS = [{"prompt": [{"role": "user", "content": "Compute 3+4."}], "reasoning": "#" * 40, "force": 0},
        {"prompt": [{"role": "user", "content": "Compute 9-2."}], "reasoning": "#" * 40, "force": 1},
        {"prompt": [{"role": "user", "content": "Compute 5*5."}], "reasoning": "", "force": 0}]


class _Recording:
    def __init__(self, sampler):
        self.sampler, self.hinted_prompts = sampler, []

    def sample(self, policy, ids, mask, seeds, hint_ids=None):
        if hint_ids is not None:
            self.hinted_prompts.append(ids.clone())
        return self.sampler.sample(policy, ids, mask, seeds, hint_ids=hint_ids)


def _run(policy, rows, group, refine: bool, max_replacements=4):
    runner = RewardRunner([RewardFunction(_marker_reward, name="correct")], correct="correct")
    sampler = _Recording(SemiARSampler(gen_length=32, block_length=32, steps=16, temperature=1.0))
    rollout = generate(policy, sampler, rows, group, batch_row_seeds(0, 0, len(rows) * group), None)
    result = score_rollout(policy, runner, rollout, rows, group)
    before = rollout
    if refine:
        refiner = HintRefiner(sampler=sampler, is_correct=runner.is_correct, max_replacements=max_replacements)
        rollout, result = refiner(policy, rollout, rows, result,
                                  lambda r: score_rollout(policy, runner, r, rows, group))
    return before, rollout, result, sampler


def test_trigger_only_on_all_wrong_groups_with_a_trace(tiny_policy):
    before, after, result, sampler = _run(tiny_policy, ROWS, 2, refine=True)
    # Group 0: all wrong with a trace → regenerated; group 1: correct; group 2: all wrong, no trace.
    assert len(sampler.hinted_prompts) == 1 and sampler.hinted_prompts[0].shape[0] == 2
    assert torch.equal(sampler.hinted_prompts[0], before.prompt_ids[:2])
    assert torch.equal(after.completion_ids[2:], before.completion_ids[2:])
    assert result.stats["igpo/triggered_groups"] == pytest.approx(1 / 3)


def test_replacement_keeps_the_group_and_the_hints(tiny_policy):
    rows = [ROWS[0], dict(ROWS[0], prompt=[{"role": "user", "content": "Compute 8+1."}])]
    before, after, result, _ = _run(tiny_policy, rows, 4, refine=True, max_replacements=2)
    assert after.num_rows == before.num_rows == 8 and torch.equal(after.group_ids, before.group_ids)
    replaced = after.hint_mask.any(1)
    # Up to k = 2 correct hinted samples per group, in its first slots; the rest keep their samples.
    for g in range(2):
        slots = replaced[4 * g:4 * g + 4].tolist()
        assert slots == sorted(slots, reverse=True) and sum(slots) <= 2
        assert torch.equal(after.completion_ids[4 * g + sum(slots):4 * g + 4],
                           before.completion_ids[4 * g + sum(slots):4 * g + 4])
    assert replaced.any()
    hash_id = tiny_policy.tokenizer.convert_tokens_to_ids("#")
    assert (after.completion_ids[after.hint_mask] == hash_id).all()
    assert (result.per_function["correct"][replaced] == 1.0).all()
    assert after.loss_mask is not None and (after.loss_mask | ~after.completion_mask | after.hint_mask).all()


def test_always_failing_task_gives_advantages_only_under_igpo(tiny_policy):
    rows = [ROWS[0], dict(ROWS[0], prompt=[{"role": "user", "content": "Compute 8+1."}])]
    _, plain, plain_result, _ = _run(tiny_policy, rows, 4, refine=False)
    assert (plain_result.total == 0).all()
    assert (mean_centred(plain_result.total, plain.group_ids) == 0).all()  # diffu-GRPO: no signal
    _, mixed, mixed_result, _ = _run(tiny_policy, rows, 4, refine=True)
    assert (mean_centred(mixed_result.total, mixed.group_ids) != 0).any()  # IGPO: signal


def test_sequence_ratio_applies_the_filter_inside_the_sequence_mean():
    objectives = pytest.importorskip("rl_dlm.objectives")
    # A filtered-out hint token (slot 2) moved by +1 nat: with the loss mask it is outside the sequence mean,
    # so the ratio stays 1; with the plain completion mask it would not.
    old = torch.zeros(1, 4)
    logp = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    loss_mask = torch.tensor([[True, True, False, True]])
    objective = objectives.ClippedSequenceObjective(epsilon=0.2)
    _, stats = objective(logp, old, None, torch.tensor([1.0]), loss_mask)
    assert stats["ratio_mean"] == pytest.approx(1.0)
    _, stats = objective(logp, old, None, torch.tensor([1.0]), torch.ones(1, 4, dtype=torch.bool))
    assert stats["ratio_mean"] == pytest.approx(torch.exp(torch.tensor(0.25)).item())
