"""Synthetic, exactly verifiable tasks for the embedded model: countdown (3 numbers), 4×4 sudoku and
multi-step integer arithmetic.

Every row follows TRL's conversational convention and the papers' prompt format:

    {"prompt": [{"role": "user", "content": SYSTEM_PROMPT + "\\n\\n" + question}],
     "reasoning": "...",            # a reference trace (SFT target, IGPO hints)
     "answer": "...",               # the gold final answer
     "completion": "<reasoning>\\n...\\n</reasoning>\\n<answer>\\n...\\n</answer>",
     ...task columns...}            # read by that task's reward function

Held-out splits are disjoint by construction: a problem belongs to `test` iff a hash of its canonical key
falls in the test bucket, so no seed or size can leak a test problem into training.

    from rl_dlm.data.tasks import make_split
    rows = make_split("countdown", "train", n=1000, seed=0)
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

SYSTEM_PROMPT = (
    "Respond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>"
)
TEST_BUCKETS = 5  # 1 in 5 problems is held out


def format_completion(reasoning: str, answer: str) -> str:
    return f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{answer}\n</answer>"


def make_row(key: str, question: str, reasoning: str, answer: str, **columns) -> dict:
    return {
        "key": key,
        "prompt": [{"role": "user", "content": f"{SYSTEM_PROMPT}\n\n{question}"}],
        "reasoning": reasoning,
        "answer": answer,
        "completion": format_completion(reasoning, answer),
        **columns,
    }


def split_of(key: str) -> str:
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % TEST_BUCKETS
    return "test" if bucket == 0 else "train"


def make_split(task: str, split: str, n: int, seed: int = 0) -> list[dict]:
    """`n` distinct problems of `task` from `split` ("train" or "test"), reproducible from `seed`."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASKS)}")
    rng = random.Random(f"{task}/{split}/{seed}")
    rows, seen = [], set()
    for _ in range(200 * n + 1000):
        row = TASKS[task](rng)
        if row["key"] in seen or split_of(row["key"]) != split:
            continue
        seen.add(row["key"])
        rows.append(row)
        if len(rows) == n:
            return rows
    raise ValueError(f"task {task!r} has fewer than {n} distinct {split} problems")


def _registry() -> dict[str, Callable[[random.Random], dict]]:
    from rl_dlm.data.tasks import arithmetic, countdown, sudoku

    return {"countdown": countdown.generate, "sudoku": sudoku.generate, "arithmetic": arithmetic.generate}


TASKS = _registry()
SHIPPED_TASKS = tuple(TASKS)  # the package's own tasks, before any plug-in registers another
# Completion canvas per task: the longest reference completion plus end of turn, rounded up to a block.
GEN_LENGTH = {"countdown": 48, "arithmetic": 48, "sudoku": 96}

# The reward whose value 1.0 marks a correct answer, per task (dotted paths, resolved lazily).
CORRECT_REWARD = {
    "countdown": "rewards.countdown.countdown_reward",
    "arithmetic": "rewards.math.answer_match_reward",
    "sudoku": "rewards.sudoku.sudoku_reward",
}


def correct_reward(task: str):
    import importlib

    module, name = CORRECT_REWARD[task].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)
