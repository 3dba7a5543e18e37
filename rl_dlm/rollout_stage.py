"""Stages 1 and 2 of the training loop, shared with evaluation (rl_dlm/loop.py, rl_dlm/eval.py).

    1 rollout   `generate`: B prompts → a Rollout of B·G rows, each row sampled from its own seed
                (`batch_row_seeds`: a function of the run seed, the rollout batch and the global row index)
    2 reward    `score_rollout`: decode every row and score it with the reward functions
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from rl_dlm.components import Rollout, Sampler
from rl_dlm.data.prompts import completion_texts, encode_prompts, reward_columns
from rl_dlm.reward_runner import RewardRunner


def batch_row_seeds(seed: int, rollout_index: int, n: int) -> Tensor:
    """Distinct, reproducible seeds for the rows of one rollout batch."""
    base = (seed * 1_000_003 + rollout_index) * 65_536
    return torch.arange(base, base + n, dtype=torch.long)


@torch.no_grad()
def generate(policy, sampler: Sampler, rows: list[dict], group_size: int | list[int], seeds: Tensor,
             max_prompt_length: int | None) -> Rollout:
    """Stage 1: B prompts → a Rollout of B·G rows, rows of a group contiguous (group id = prompt index).
    `group_size` may be a list of per-prompt row counts (a rank's share of groups that span ranks)."""
    ids, mask = encode_prompts(policy.tokenizer, [r["prompt"] for r in rows], max_prompt_length, policy.device)
    counts = torch.tensor(rows_per_prompt(rows, group_size), device=ids.device)
    ids, mask = ids.repeat_interleave(counts, 0), mask.repeat_interleave(counts, 0)
    was_training = policy.model.training
    policy.model.eval()
    try:
        with policy.inference():
            rollout = sampler.sample(policy, ids, mask, seeds.to(policy.device))
    finally:
        policy.model.train(was_training)
    group_ids = torch.arange(len(rows), device=ids.device).repeat_interleave(counts)
    return replace(rollout, group_ids=group_ids)


def rows_per_prompt(rows: list, group_size: int | list[int]) -> list[int]:
    """The number of rollout rows of each prompt: G each, or a rank's share of each group."""
    return list(group_size) if isinstance(group_size, (list, tuple)) else [group_size] * len(rows)


def score_rollout(policy, rewards: RewardRunner, rollout: Rollout, rows: list[dict], group_size: int | list[int]):
    """Stage 2: decode and score every row of a rollout with the reward functions.

    A rollout may stack m copies of the batch (e.g. one per denoising step, for per-step rewards): rows
    m·B·G long are scored in one call, the dataset rows repeating every B·G."""
    expanded = [row for row, count in zip(rows, rows_per_prompt(rows, group_size)) for _ in range(count)]
    if rollout.num_rows % len(expanded):
        raise ValueError(f"a rollout of {rollout.num_rows} rows cannot be scored against {len(expanded)} rows")
    expanded = expanded * (rollout.num_rows // len(expanded))
    completions = completion_texts(policy.tokenizer, rollout.completion_ids, rollout.completion_mask)
    ids = [c[m].tolist() for c, m in zip(rollout.completion_ids, rollout.completion_mask)]
    columns = reward_columns(expanded)
    if isinstance(expanded[0]["prompt"], list):  # conversational rows: TRL passes message lists
        completions_in = [[{"role": "assistant", "content": c}] for c in completions]
    else:
        completions_in = completions
    return rewards([r["prompt"] for r in expanded], completions_in, ids, columns)
