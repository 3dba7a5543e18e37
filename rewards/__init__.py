"""Verifiable rewards for RL post-training (math, code, format, countdown, sudoku).

Every reward function has TRL's signature
``f(prompts, completions, completion_ids=None, **dataset_columns) -> list[float | None]``:
``completions`` may be plain strings or conversational (``[{"role": "assistant", "content": ...}]``),
dataset columns arrive as lists with one entry per row, unknown keyword arguments (TRL's
``trainer_state``, ``log_extra``, ``log_metric``) are ignored, and ``None`` means "not applicable to
this row". Reward functions never print and never raise on odd completions (None, "", huge text).

This package imports nothing from the training library: any TRL reward function works with the toolkit, and these
work with TRL. Configs live in ``conf/reward/<name>.yaml`` (``_target_`` + default ``weight``).

Modules: ``math`` (answer extraction, math-verify, GSM8K/MATH reward sets), ``format`` (tag
layouts), ``countdown``, ``sudoku``, ``code`` (unit tests in ``sandbox``).

>>> from rewards import countdown_reward
>>> countdown_reward(None, ["<answer>2 * (3 + 4)</answer>"], numbers=[[2, 3, 4]], target=[14])
[1.0]
"""

from rewards.code import code_format_reward, diffucoder_code_reward, extract_code, unit_test_reward
from rewards.countdown import countdown_reward
from rewards.format import (
    soft_format_reward,
    strict_format_reward,
    tag_format_reward,
    xml_count_reward,
    xml_format_reward,
)
from rewards.math import (
    answer_match_reward,
    boxed_accuracy_reward,
    extract_answer,
    gsm8k_correctness_reward,
    gsm8k_int_reward,
    is_equivalent,
    last_boxed,
    math_correctness_reward,
    math_format_reward,
)
from rewards.sudoku import sudoku_reward, sudoku_solved_reward

__all__ = [
    "answer_match_reward",
    "boxed_accuracy_reward",
    "code_format_reward",
    "countdown_reward",
    "diffucoder_code_reward",
    "extract_answer",
    "extract_code",
    "gsm8k_correctness_reward",
    "gsm8k_int_reward",
    "is_equivalent",
    "last_boxed",
    "math_correctness_reward",
    "math_format_reward",
    "soft_format_reward",
    "strict_format_reward",
    "sudoku_reward",
    "sudoku_solved_reward",
    "tag_format_reward",
    "unit_test_reward",
    "xml_count_reward",
    "xml_format_reward",
]
