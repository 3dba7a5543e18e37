"""BENCHMARK-ONLY reward functions: seeded random scores that say nothing about the completion's quality.

`bench/rl_step.py` times the real trainers on randomly initialised 8B-shaped models, whose completions are noise.
A real reward would give every row of a group the same score, so every advantage would be 0 and the updates would
do no real work. These functions instead return, for each row, a number drawn from a generator seeded by the row's
completion tokens (and `seed`), so:

- rows of a group get different scores, every advantage is non-zero, and every update does its full work;
- the same completion always gets the same score (reproducible runs, and the MDPO per-step rewards of a step whose
  prediction did not change repeat);
- the score is independent of the batch layout.

Never use them to train a model. They follow TRL's reward signature, so a Hydra task node selects them like any
other reward:

    rewards:
      random: {_target_: bench.random_reward.benchmark_only_random_reward, weight: 1.0}
      correct: {_target_: bench.random_reward.benchmark_only_random_correctness, p_correct: 0.1, weight: 0.0}
"""
from __future__ import annotations

import random
import zlib
from array import array


def _row_random(completion_ids, seed: int, salt: str) -> random.Random:
    data = array("q", [int(t) for t in completion_ids]).tobytes()
    return random.Random(f"{salt}/{seed}/{zlib.crc32(data)}/{len(data)}")


def benchmark_only_random_reward(prompts, completions, completion_ids, seed: int = 0, **columns) -> list[float]:
    """BENCHMARK ONLY: a score in [0, 1) per row, seeded by the row's completion tokens; not a measure of anything."""
    return [_row_random(ids, seed, "score").random() for ids in completion_ids]


def benchmark_only_random_correctness(prompts, completions, completion_ids, p_correct: float = 0.1, seed: int = 0,
                                      **columns) -> list[float]:
    """BENCHMARK ONLY: 1.0 ("correct") with probability `p_correct` per row, else 0.0, seeded by the completion.

    For IGPO's trigger (a group whose rows are all wrong is regenerated with hints): with G = 8 and p = 0.1 about
    0.9⁸ ≈ 43 % of groups trigger, and about 10 % of the hinted rows count as correct and replace group slots."""
    return [float(_row_random(ids, seed, "correct").random() < p_correct) for ids in completion_ids]
