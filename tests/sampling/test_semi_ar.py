"""The LLaDA semi-AR sampler: schedule, block order, completeness, determinism, padding invariance, Gumbel."""
from __future__ import annotations

import math

import pytest
import torch

from rl_dlm.components import completion_mask_from
from rl_dlm.data.prompts import encode_prompts
from rl_dlm.sampling.rollout import row_generator
from rl_dlm.sampling.semi_ar import SemiARSampler, commit_top_k, gumbel_argmax, transfer_counts

PROMPTS = [[{"role": "user", "content": "Compute 3+4*2."}],
           [{"role": "user", "content": "Using the numbers [3, 5, 7], create an equation that equals 22."}]]


def _sample(policy, prompts, seeds, **kw):
    ids, mask = encode_prompts(policy.tokenizer, prompts, None)
    sampler = SemiARSampler(**{"gen_length": 16, "block_length": 8, "steps": 8, "temperature": 1.0, **kw})
    return sampler.sample(policy, ids, mask, torch.tensor(seeds))


def test_transfer_counts_put_the_remainder_on_the_first_steps():
    # 10 tokens over 4 steps: 10 // 4 = 2 each, remainder 2 → the first two steps take one more.
    assert transfer_counts(torch.tensor([10, 4, 0]), 4).tolist() == [[3, 3, 2, 2], [1, 1, 1, 1], [0, 0, 0, 0]]


def test_commit_top_k_selects_k_most_confident_and_never_infinite():
    conf = torch.tensor([[0.1, 0.9, -math.inf, 0.5], [0.3, 0.2, 0.1, 0.0]], dtype=torch.float64)
    assert commit_top_k(conf, torch.tensor([2, 1])).tolist() == [[False, True, False, True],
                                                                  [True, False, False, False]]
    assert commit_top_k(conf[:1], torch.tensor([4])).tolist() == [[True, True, False, True]]


def test_every_mask_is_filled_and_block_order_is_respected(tiny_policy):
    rollout = _sample(tiny_policy, PROMPTS, [1, 2])
    assert not (rollout.completion_ids == tiny_policy.mask_id).any()
    steps = rollout.unmask_step
    assert (steps >= 0).all() and steps.max() == 7
    # Block 0 (positions 0..7) is finished before block 1 (8..15) starts, in every row.
    assert (steps[:, :8].max(1).values < steps[:, 8:].min(1).values).all()
    # 8 steps over 2 blocks: 4 steps per block, 2 tokens per step.
    for row in steps:
        assert torch.bincount(row, minlength=8).tolist() == [2] * 8


def test_same_seed_same_rollout_and_other_seed_differs(tiny_policy):
    a, b = _sample(tiny_policy, PROMPTS, [5, 6]), _sample(tiny_policy, PROMPTS, [5, 6])
    assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.unmask_step, b.unmask_step)
    c = _sample(tiny_policy, PROMPTS, [7, 8])
    assert not torch.equal(a.completion_ids, c.completion_ids)


def test_left_padding_and_batch_mates_do_not_change_a_row(tiny_policy):
    alone = _sample(tiny_policy, PROMPTS[:1], [11])
    batched = _sample(tiny_policy, PROMPTS[::-1], [12, 11])  # the short prompt is now left padded
    ids, mask = encode_prompts(tiny_policy.tokenizer, PROMPTS[::-1], None)
    assert not mask[1].all(), "the test needs the row to be padded"
    assert torch.equal(alone.completion_ids[0], batched.completion_ids[1])
    assert torch.equal(alone.unmask_step[0], batched.unmask_step[1])


def test_greedy_ignores_the_seed(tiny_policy):
    a = _sample(tiny_policy, PROMPTS, [1, 2], temperature=0.0)
    b = _sample(tiny_policy, PROMPTS, [3, 4], temperature=0.0)
    assert torch.equal(a.completion_ids, b.completion_ids)


def test_random_remasking_fills_everything(tiny_policy):
    rollout = _sample(tiny_policy, PROMPTS, [1, 2], remasking="random")
    assert not (rollout.completion_ids == tiny_policy.mask_id).any()


def test_gumbel_argmax_samples_softmax_of_tempered_logits():
    # argmax(l/T + Gumbel) is a draw from softmax(l/T): check frequencies over 20k draws.
    logits = torch.tensor([[[0.0, 1.0, 2.0]]]).expand(1, 20000, 3)
    draws = gumbel_argmax(logits, 0.5, [row_generator(0, "test")])
    freq = torch.bincount(draws.flatten(), minlength=3).double() / draws.numel()
    expected = torch.softmax(torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64) / 0.5, 0)
    assert torch.allclose(freq, expected, atol=0.01)


def test_hints_stay_fixed_and_are_excluded_from_the_step_budget(tiny_policy):
    ids, mask = encode_prompts(tiny_policy.tokenizer, PROMPTS, None)
    hints = torch.full((2, 16), -1)
    hints[0, [1, 2, 9]] = torch.tensor([40, 41, 42])
    sampler = SemiARSampler(gen_length=16, block_length=8, steps=8, temperature=1.0)
    rollout = sampler.sample(tiny_policy, ids, mask, torch.tensor([1, 2]), hint_ids=hints)
    assert rollout.completion_ids[0, [1, 2, 9]].tolist() == [40, 41, 42]
    assert (rollout.unmask_step[0, [1, 2, 9]] == -1).all()
    assert not (rollout.completion_ids == tiny_policy.mask_id).any()


def test_completion_mask_runs_through_the_first_stop_token():
    ids = torch.tensor([[5, 6, 9, 7, 9], [1, 2, 3, 4, 5]])
    assert completion_mask_from(ids, 9).tolist() == [[True, True, True, False, False], [True] * 5]


@pytest.mark.parametrize("kw", [{"gen_length": 10, "block_length": 4}, {"steps": 3}, {"remasking": "nope"}])
def test_bad_settings_fail_naming_the_key(kw):
    with pytest.raises(ValueError, match="sampler"):
        SemiARSampler(**{"gen_length": 16, "block_length": 8, "steps": 8, **kw})
