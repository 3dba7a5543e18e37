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


def task_config(task: str) -> dict:
    """`conf/task/<task>.yaml`, the one place that states a task's canvas and its correctness reward; the Python
    API (`GEN_LENGTH`, `correct_reward`) reads the same files as `rl-dlm train task=<task>`."""
    import yaml

    from rl_dlm.resources import ROOT

    return yaml.safe_load((ROOT / "conf" / "task" / f"{task}.yaml").read_text())


def _correct_reward_target(task: str) -> str:
    """The `_target_` of the reward that `task.correct_reward` names, as the task's defaults list picks it."""
    import yaml

    from rl_dlm.resources import ROOT

    conf = task_config(task)
    key = f"/reward@task.rewards.{conf['task']['correct_reward']}"
    choice = next(entry[key] for entry in conf["defaults"] if isinstance(entry, dict) and key in entry)
    return yaml.safe_load((ROOT / "conf" / "reward" / f"{choice}.yaml").read_text())["_target_"]


# Completion canvas per task (`max_completion_length` of conf/task/<task>.yaml): the longest reference completion
# plus end of turn, rounded up to a block.
GEN_LENGTH = {task: task_config(task)["max_completion_length"] for task in TASKS}

# The reward whose value 1.0 marks a correct answer, per task (dotted paths, resolved lazily).
CORRECT_REWARD = {task: _correct_reward_target(task) for task in TASKS}


def correct_reward(task: str):
    import importlib

    module, name = CORRECT_REWARD[task].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)
