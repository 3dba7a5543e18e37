"""Reward plug-ins from the command line and from the user's own module (docs/reward_plugins.md): a weight of 0, an
added reward, a user function with keyword arguments and a timeout, one YAML line each; a user reward that
raises on some rows leaves those rows None, counted and named in a warning, and the run goes on."""
from __future__ import annotations

import math
import sys
import textwrap
import warnings

import pytest

from rl_dlm.config import resolve
from rl_dlm.hydra_app import build, compose_config, reward_functions
from rl_dlm.reward_runner import RewardRunner

USER_MODULE = '''
"""A user's own rewards: TRL's signature, dataset columns by name."""
import time


def brevity(completions, max_chars=40, **kwargs):
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [1.0 if len(t) <= max_chars else max_chars / len(t) for t in texts]


def flaky(completions, target, **kwargs):
    if any(t % 2 for t in target):
        raise RuntimeError("odd target")
    return [0.25] * len(completions)


def slow(completions, **kwargs):
    time.sleep(2)
    return [1.0] * len(completions)
'''

SMALL = ["task.train_size=4", "task.eval_size=2", "max_steps=1", "num_generations=2", "per_device_train_batch_size=4",
         "num_iterations=1", "max_completion_length=16", "block_length=16", "diffusion_steps=4", "lora_r=4",
         "lora_alpha=8", "report_to=[none]"]


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_rewards"
    sys.modules.pop("my_rewards", None)


def completions(*texts):
    return [[{"role": "assistant", "content": t}] for t in texts]


def run(funcs, texts, **columns):
    runner = RewardRunner(funcs, correct="correct" if any(f.name == "correct" for f in funcs) else None)
    return runner(["p"] * len(texts), completions(*texts), [[0]] * len(texts), columns)


def test_weight_zero_from_the_command_line_keeps_the_reward_logged_but_out_of_the_total():
    funcs = reward_functions(compose_config(["task.rewards.correct.weight=0"]).task)
    assert [(f.name, f.weight) for f in funcs] == [("correct", 0.0)]
    result = run(funcs, ["<answer>1+2+3</answer>"], numbers=[[1, 2, 3]], target=[6])
    assert result.per_function["correct"].tolist() == [1.0] and result.total.tolist() == [0.0]


def test_adding_a_reward_from_the_command_line():
    cfg = compose_config(["+task.rewards.fmt._target_=rewards.format.xml_format_reward"])
    funcs = reward_functions(cfg.task)
    assert [(f.name, f.weight) for f in funcs] == [("correct", 1.0), ("fmt", 1.0)]
    text = "<reasoning>\n1+2=3\n3+3=6\n</reasoning>\n<answer>\n1+2+3\n</answer>"
    result = run(funcs, [text, "1+2+3"], numbers=[[1, 2, 3]] * 2, target=[6, 6])
    assert result.per_function["fmt"].tolist() == [1.0, 0.0] and result.total.tolist() == [2.0, 0.0]


def test_a_standard_library_target_is_refused_as_a_reward():
    with pytest.raises(ValueError, match="'os.system' is not allowed"):
        reward_functions(compose_config(["+task.rewards.x._target_=os.system"]).task)


def test_user_functions_with_kwargs_and_a_timeout_plug_in_with_one_yaml_line(user_module):
    cfg = compose_config(["+task.rewards.brief={_target_: my_rewards.brevity, weight: 0.5, max_chars: 10}",
                          "+task.rewards.slow={_target_: my_rewards.slow, timeout: 0.2}"])
    funcs = {f.name: f for f in reward_functions(cfg.task)}
    assert funcs["brief"].weight == 0.5 and funcs["slow"].timeout == 0.2 and funcs["slow"].weight == 1.0
    with pytest.warns(UserWarning, match="reward function 'slow' gave None on 2/2 rows"):
        result = run(list(funcs.values()), ["short", "twenty characters..."], numbers=[[1, 2]] * 2, target=[3, 3])
    assert result.per_function["brief"].tolist() == [1.0, 0.5]  # max_chars=10 from the YAML line
    assert all(math.isnan(v) for v in result.per_function["slow"].tolist())
    assert result.stats["reward/slow/errors"] == 2.0


def test_a_user_reward_trains_and_a_raising_one_is_counted_not_fatal(user_module, tmp_path):
    cfg = compose_config([*SMALL, f"output_dir={tmp_path}", "+task.rewards.brief._target_=my_rewards.brevity",
                          "+task.rewards.flaky._target_=my_rewards.flaky"])
    trainer = build(cfg)
    rows = trainer.train_dataset
    odd = sum(r["target"] % 2 for r in rows)
    assert 0 < odd < len(rows), "the fixture rows should mix odd and even targets"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = trainer.train()
    assert len(history) == 1 and math.isfinite(history[0]["loss"])
    assert 0.0 < history[0]["reward/brief"] <= 1.0
    assert history[0]["reward/flaky/errors"] > 0 and history[0]["reward/flaky"] == 0.25  # None rows left out
    assert any("reward function 'flaky' gave None on" in str(w.message) and "odd target" in str(w.message)
               for w in caught)


def test_the_current_directory_is_importable_as_under_python_dash_m(tmp_path, monkeypatch):
    """`rl-dlm` is a console script: sys.path[0] is its bin directory, not the directory it runs in."""
    (tmp_path / "cwd_rewards.py").write_text(textwrap.dedent('''
        def one(completions, **kw):
            return [1.0] * len(completions)
    '''))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        assert resolve("cwd_rewards.one")(["a"]) == [1.0]
    finally:
        sys.modules.pop("cwd_rewards", None)
