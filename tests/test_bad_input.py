"""Bad input, one item at a time: each is refused at start-up, before a model loads, by a message that names the
key, column, row or path and the fix; on the command line in one or two lines, without a traceback (unless
--debug or HYDRA_FULL_ERROR=1)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

from rl_dlm.cli import main
from rl_dlm.trainers import TRAINERS
from rl_dlm.validation import ConfigError

from tests.conftest import EMBEDDED, ROOT

SMALL = ["task.train_size=16", "task.eval_size=4", "report_to=[none]"]


@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: every refusal here must come before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was refused")

    import rl_dlm.eval
    import rl_dlm.trainers.base

    monkeypatch.setattr(rl_dlm.trainers.base, "load_policy", refuse)
    monkeypatch.setattr(rl_dlm.eval, "load_for_eval", refuse)


def cli_error(capsys, *argv, command="train") -> str:
    """`rl-dlm <command> argv...` in-process: exit status 2 and at most two lines on stderr, no traceback; returns
    the first line."""
    with pytest.raises(SystemExit) as exited:
        main([command, *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"rl-dlm {command}: error: "))
    assert len(lines) - start <= 2, lines  # before it only progress bars (a dataset being read), if anything
    return lines[start]


# -- finding 1: the output directory -------------------------------------------------------------------------
def test_an_output_dir_under_a_regular_file_fails_at_start_up_naming_the_path(tmp_path, capsys, no_model):
    (tmp_path / "file").write_text("x")
    line = cli_error(capsys, f"output_dir={tmp_path / 'file' / 'run'}", *SMALL)
    assert "output_dir" in line and str(tmp_path / "file") in line and "is a file" in line


def test_the_output_dir_is_created_and_written_to_at_start_up(tmp_path):
    from rl_dlm.validation import check_output_dir

    check_output_dir(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())  # the probe is gone


# -- finding 4: rows and columns of the whole dataset, before training ---------------------------------------
def _trainer(rows, tmp_path, **kw):
    from rewards.countdown import countdown_reward
    from rl_dlm import DiffuGRPOConfig, DiffuGRPOTrainer

    args = DiffuGRPOConfig(output_dir=str(tmp_path), max_completion_length=16, block_length=16,
                           diffusion_steps=4, num_generations=2, per_device_train_batch_size=4, report_to=["none"])
    return DiffuGRPOTrainer(model=kw.pop("model", str(EMBEDDED)), reward_funcs=kw.pop("reward_funcs", [countdown_reward]),
                            args=args, train_dataset=rows, **kw)


def _rows(n=12):
    from rl_dlm.data.tasks import make_split

    return make_split("countdown", "train", n)


def test_a_dataset_without_a_prompt_column_is_refused_naming_the_column(tmp_path, no_model):
    rows = [{"question": r["prompt"][0]["content"], "numbers": r["numbers"], "target": r["target"]} for r in _rows()]
    with pytest.raises(ConfigError, match=r"train_dataset has no 'prompt' column \(columns: \['numbers', "
                                          r"'question', 'target'\]\)"):
        _trainer(rows, tmp_path)
    import datasets

    with pytest.raises(ConfigError, match="train_dataset has no 'prompt' column"):
        _trainer(datasets.Dataset.from_list(rows), tmp_path)


@pytest.mark.parametrize("bad,why", [(None, "null"), ("", "empty string"), ("   ", "empty string"), ([], "empty list"),
                                     ([{"role": "user"}], "not a {role, content}"), (7, "got int")])
def test_a_bad_prompt_in_row_10_is_refused_naming_the_row_and_column(tmp_path, no_model, bad, why):
    rows = _rows()
    rows[10]["prompt"] = bad
    with pytest.raises(ConfigError, match=rf"train_dataset row 10, column 'prompt': .*{why}"):
        _trainer(rows, tmp_path)


def test_a_row_missing_a_column_and_a_reward_needing_an_absent_column_are_refused(tmp_path, no_model):
    rows = _rows()
    del rows[5]["target"]
    with pytest.raises(ConfigError, match=r"train_dataset row 5 lacks column\(s\) \['target'\]"):
        _trainer(rows, tmp_path)

    def solution_reward(completions, solution, **kwargs):  # a TRL-style reward reading a `solution` column
        return [1.0] * len(completions)

    with pytest.raises(ConfigError, match=r"reward function 'solution_reward' needs column\(s\) \['solution'\]"):
        _trainer(_rows(), tmp_path, reward_funcs=[solution_reward])


def test_a_missing_data_file_names_the_key(tmp_path, capsys, no_model):
    line = cli_error(capsys, "task=gsm8k", "diffusion_steps=64", "task.source=json",
                     f"task.data_files.train={tmp_path / 'nope.jsonl'}",
                     f"output_dir={tmp_path}", *SMALL)
    assert "task.data_files.train" in line and "nope.jsonl" in line and "no such file" in line


# -- finding 6: errors that mislead or bury the cause --------------------------------------------------------
def test_a_mistyped_local_model_path_says_no_such_local_directory(tmp_path, capsys, no_model, monkeypatch):
    monkeypatch.chdir(ROOT)
    line = cli_error(capsys, "model.path=checkpoints/tiny-lada", f"output_dir={tmp_path}", *SMALL)
    assert line.endswith("no such local model directory: checkpoints/tiny-lada (model.path); did you mean "
                         "'checkpoints/tiny-llada'?")
    line = cli_error(capsys, f"model.path={tmp_path / 'missing'}", f"output_dir={tmp_path}", *SMALL)
    assert f"no such local model directory: {tmp_path / 'missing'}" in line
    with pytest.raises(ConfigError, match="no such local model directory: /no/such/model"):
        _trainer(_rows(), tmp_path, model="/no/such/model")


def test_a_hub_id_is_left_to_the_hub():
    from rl_dlm.validation import check_model_path

    check_model_path("GSAI-ML/LLaDA-8B-Instruct")  # no local directory of that name: the loader asks the hub
    check_model_path("gpt2")


@pytest.mark.parametrize("override,expected", [
    ("num_generations=0", "num_generations must be ≥ 2"),
    ("num_generations=3", "= 32 rows per optimizer step is not a multiple of num_generations = 3"),
    ("lora_r=abc", "lora_r must be an integer, got 'abc'"),
    ("lora_r=0", "lora_r must be ≥ 1"),
    ("temperature=-1", "temperature must be ≥ 0, got -1"),
    ("learning_rate=-1e-4", "learning_rate must be > 0"),
    ("objective.beta=-0.1", "objective.beta must be ≥ 0"),
    ("objective.epsilon=0", "objective.epsilon must be > 0"),
    ("objective.kl=k4", "objective.kl must be one of k1, k2, k3"),
    ("likelihood.p_mask_prompt=1.5", "likelihood.p_mask_prompt must be in [0, 1]"),
    ("max_steps=0", "max_steps must be ≥ 1"),
    ("replay_steps_per_forward=0", "replay_steps_per_forward must be ≥ 1"),
    ("advantage=batch", "unknown advantage 'batch'"),
    ("compiled_blocks=true deepspeed=zero3", "compiled_blocks=true is not supported under ZeRO-3"),
])
def test_bad_values_name_the_key_before_a_model_loads(tmp_path, capsys, no_model, override, expected):
    line = cli_error(capsys, *override.split(" "), f"output_dir={tmp_path}", *SMALL)
    assert expected in line


@pytest.mark.parametrize("overrides,expected", [
    (["max_completion_length=40"], "max_completion_length (40) must be a multiple of block_length (16)"),
    (["diffusion_steps=10"], "diffusion_steps (10) must be a positive multiple of the number of blocks (3)"),
    (["sampler=cached", "block_length=20"], "max_completion_length (48) must be a multiple of block_length (20)"),
])
def test_length_and_block_errors_name_the_keys_the_user_sets(tmp_path, capsys, no_model, overrides, expected):
    line = cli_error(capsys, *overrides, f"output_dir={tmp_path}", *SMALL)
    assert expected in line and "sampler." not in line


def test_length_errors_of_the_python_api_name_the_config_keys(tmp_path, no_model):
    from rl_dlm import DiffuGRPOConfig, DiffuGRPOTrainer

    args = DiffuGRPOConfig(output_dir=str(tmp_path), max_completion_length=40, block_length=16)
    with pytest.raises(ConfigError, match=r"^max_completion_length \(40\) must be a multiple of block_length \(16\)"):
        DiffuGRPOTrainer(model=str(EMBEDDED), reward_funcs=[len], args=args, train_dataset=_rows())


def test_an_unknown_key_names_the_closest_valid_key_and_never_suggests_plus_key(tmp_path, capsys):
    line = cli_error(capsys, "max_stepz=2")
    assert "unknown key 'max_stepz'; did you mean 'max_steps'?" in line and "+max_stepz" not in line
    line = cli_error(capsys, "task.rewards.correct.weightt=2")
    assert "did you mean 'task.rewards.correct.weight'?" in line
    line = cli_error(capsys, "beta=0.1")  # a knob of this composition's objective
    assert "unknown key 'beta': component knobs sit on their component: did you mean objective.beta?" in line
    line = cli_error(capsys, "elbo_nodes=5")  # a flat key of earlier versions
    assert "unknown key 'elbo_nodes': it is now likelihood.nodes" in line
    line = cli_error(capsys, "likelihood.nodes=5")  # a knob of another component of the group
    assert "likelihood.nodes is a knob of likelihood=elbo, not of the chosen likelihood=one_step" in line
    line = cli_error(capsys, "algo=gdpoo")
    assert "unknown algo 'gdpoo'; did you mean algo=gdpo?" in line
    line = cli_error(capsys, "recipe=quickstrat")
    assert "unknown recipe 'quickstrat'; did you mean recipe=quickstart?" in line
    line = cli_error(capsys, "max_steps")
    assert "cannot parse override 'max_steps'" in line and "key=value" in line


def test_eval_refuses_a_missing_adapter_before_the_model_loads(tmp_path, capsys, no_model):
    line = cli_error(capsys, f"model.adapter={tmp_path / 'final'}", f"output_dir={tmp_path}", "task.eval_size=3",
                     command="eval")
    assert f"no such local adapter directory: {tmp_path / 'final'} (model.adapter)" in line


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["train", "-h"]])
def test_help_lists_the_groups_recipes_and_most_used_keys(capsys, argv):
    main(argv)
    out = capsys.readouterr().out
    assert "Traceback" not in out
    for text in ("recipes (recipe=NAME", "  quickstart ", "  tiny_gdpo ", "config groups",
                 "  algo       " + ", ".join(sorted(p.stem for p in (ROOT / "conf" / "algo").glob("*.yaml"))),
                 "  likelihood coupled, elbo, espo, gdsd, one_step, prediction_replay, spg, trajectory_replay", "  task ", "  sampler ", "max_steps=180",
                 "learning_rate=0.0004", "num_generations=8", "--debug"):
        assert text in out, text


def test_cli_errors_are_short_and_debug_or_hydra_full_error_shows_the_traceback(tmp_path):
    """The one subprocess test: what a user's terminal shows."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    run = lambda *argv, **extra: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "rl_dlm.cli", "train", *argv], capture_output=True, text=True, cwd=tmp_path,
        env={**env, **extra}, timeout=300)
    short = run("num_generations=0")
    assert short.returncode == 2 and short.stdout == ""
    lines = short.stderr.strip().splitlines()
    assert len(lines) == 2 and "num_generations must be ≥ 2" in lines[0] and "--debug" in lines[1]
    for full in (run("num_generations=0", "--debug"), run("num_generations=0", HYDRA_FULL_ERROR="1")):
        assert full.returncode == 1 and "Traceback" in full.stderr and "num_generations" in full.stderr


# -- finding 8: settings that quietly ruin learning ----------------------------------------------------------
def test_algo_x_takes_its_own_settings_not_the_quickstarts_diffu_grpo_ones():
    from rl_dlm.hydra_app import compose_config

    quick = compose_config([])
    assert (quick.learning_rate, quick.objective.beta, quick.num_iterations) == (4e-4, 0.04, 6)
    gdpo = compose_config(["algo=gdpo"])
    assert (gdpo.learning_rate, gdpo.objective.beta, gdpo.num_iterations) == (2.5e-4, 0.0, 4)  # recipes/tiny_gdpo.yaml's
    assert "algo_settings" not in gdpo
    mdpo = compose_config(["algo=mdpo"])
    assert (mdpo.objective.beta, mdpo.num_iterations, mdpo.temperature) == (0.02, 1, 0.4)  # MDPO's paper values
    chosen = compose_config(["algo=gdpo", "learning_rate=1e-4", "num_iterations=2"])
    assert (chosen.learning_rate, chosen.num_iterations, chosen.objective.beta) == (1e-4, 2, 0.0)  # the command line wins


def test_plain_string_prompts_on_a_chat_model_warn_once_with_the_fix(tokenizer):
    from rl_dlm.data.prompts import encode_prompts

    assert tokenizer.chat_template
    with pytest.warns(UserWarning, match=r"prompts are plain strings .* \[\{'role': 'user', 'content': text\}\]"):
        encode_prompts(tokenizer, ["2 + 3 =", "4 * 5 ="], 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encode_prompts(tokenizer, ["2 + 3 ="], 64)  # once per tokenizer
        encode_prompts(tokenizer, [[{"role": "user", "content": "2 + 3 ="}]], 64)  # conversational: no warning


def test_every_table_row_fails_on_a_json_dataset_too(tmp_path, capsys, no_model):
    """The CLI path reads local files through the same row checks: an empty prompt in row 10 of a jsonl file."""
    rows = [{"prompt": "x " * 3, "answer": "1"} for _ in range(12)]
    rows[10]["prompt"] = ""
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    line = cli_error(capsys, "task=gsm8k", "diffusion_steps=64", "task.source=json", "task.format=null",
                     f"task.data_files.train={path}",
                     f"task.data_files.test={path}", f"output_dir={tmp_path}", *SMALL)
    assert "row 10, column 'prompt'" in line and "empty string" in line


def test_a_model_neither_local_nor_on_the_hub_says_both(tmp_path, monkeypatch):
    """From a directory where the path does not exist, a hub-shaped name fails at the hub: the message says it
    is not a local directory either (the hub's own error reads like a network problem only)."""
    from transformers import PreTrainedConfig

    from rl_dlm.models.policy import read_config

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(PreTrainedConfig, "get_config_dict", offline)
    with pytest.raises(OSError, match=r"model 'checkpoints/tiny-lada' is not a local directory \(from .+\) and could "
                                      r"not be loaded from the hub: We couldn't connect"):
        read_config("checkpoints/tiny-lada")
