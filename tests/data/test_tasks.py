"""The synthetic tasks have one registry: the Python API's canvas and correctness reward per task are read from
the same conf/task/<task>.yaml that `rl-dlm train task=<task>` composes."""
from __future__ import annotations

from rl_dlm.data.tasks import CORRECT_REWARD, GEN_LENGTH, TASKS, correct_reward
from rl_dlm.hydra_app import compose_config


def test_python_task_facts_are_the_composed_configs():
    for task in TASKS:
        cfg = compose_config([f"task={task}"])
        assert GEN_LENGTH[task] == cfg.max_completion_length
        assert CORRECT_REWARD[task] == cfg.task.rewards[cfg.task.correct_reward]["_target_"]
    assert (GEN_LENGTH["countdown"], GEN_LENGTH["sudoku"]) == (48, 96)
    assert correct_reward("countdown").__name__ == "countdown_reward"
