"""A run directory per run: the default name says the algorithm, a run never mixes with another run's directory,
and it keeps its configuration (`config.yaml`), its metrics (`metrics.jsonl`, flushed at every logged step) and a
plot of reward and accuracy (`metrics.png`). The Python API shows a progress bar; step lines never land on it.
`rl-dlm sft` writes a new directory unless `--output` names one.

Run: .venv/bin/python -m pytest tests/test_run_dir.py -q
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from rl_dlm import DiffuGRPOConfig, DiffuGRPOTrainer
from rl_dlm.data.tasks import make_split
from rl_dlm.hydra_app import compose_config
from rl_dlm.runs import claim_run_dir
from tests.conftest import EMBEDDED, make_tiny_policy

SMALL = dict(max_steps=2, num_generations=2, per_device_train_batch_size=2, num_iterations=1, learning_rate=1e-2,
             max_completion_length=16, block_length=16, diffusion_steps=2, lora_r=4, lora_alpha=8, lora_dropout=0.0,
             report_to=["stdout"])


def correct_reward(completion_ids, **kw):
    return [float(sum(ids) % 2) for ids in completion_ids]


def trainer(tokenizer, rewards=correct_reward, **kw) -> DiffuGRPOTrainer:
    return DiffuGRPOTrainer(make_tiny_policy(tokenizer, lora=True), {"correct": rewards},
                            args=DiffuGRPOConfig(**{**SMALL, **kw}), train_dataset=make_split("countdown", "train", 4),
                            correct_reward="correct")


# -- names -------------------------------------------------------------------------------------------------------
def test_default_run_directories_name_the_algorithm(tokenizer, tmp_path, monkeypatch):
    assert compose_config([]).output_dir == "outputs/countdown-quickstart-diffu_grpo"
    assert compose_config(["algo=gdpo", "task=sudoku"]).output_dir == "outputs/sudoku-quickstart-gdpo"
    monkeypatch.chdir(tmp_path)
    assert trainer(tokenizer).args.output_dir == "outputs/diffu_grpo"  # the Python API


def test_a_used_directory_gets_a_counter_and_resume_takes_the_newest_run_with_a_checkpoint(tmp_path):
    base = tmp_path / "run"
    assert claim_run_dir(base) == base  # new
    base.mkdir()
    assert claim_run_dir(base) == base  # empty
    (base / "metrics.jsonl").write_text("")
    with pytest.warns(UserWarning, match=f"output_dir={base} already holds a run; this run writes into {base}-2"):
        assert claim_run_dir(base) == tmp_path / "run-2"
    (tmp_path / "run-2" / "checkpoint-4").mkdir(parents=True)
    (tmp_path / "run-2" / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (tmp_path / "run-3").mkdir()
    (tmp_path / "run-3" / "config.yaml").write_text("")
    assert claim_run_dir(base, resume=True) == tmp_path / "run-2"
    with pytest.warns(UserWarning, match="writes into .*run-4"):
        assert claim_run_dir(base, resume=False) == tmp_path / "run-4"
    # several processes cannot agree on a counter: they keep the directory and warn
    with pytest.warns(UserWarning, match="already holds a run; this run writes beside it"):
        assert claim_run_dir(base, processes=2) == base


# -- run files ---------------------------------------------------------------------------------------------------
def test_a_run_writes_its_config_metrics_and_plot_and_a_second_run_does_not_mix_with_it(tokenizer, tmp_path,
                                                                                          capsys):
    out = tmp_path / "run"
    seen = []

    def reward(completion_ids, **kw):  # what is on disk while step 2 runs
        metrics = out / "metrics.jsonl"
        seen.append(len(metrics.read_text().splitlines()) if metrics.exists() else None)
        return correct_reward(completion_ids)

    history = trainer(tokenizer, reward, output_dir=str(out), seed=3).train()
    assert seen == [0, 1], "metrics.jsonl exists from the start and holds step 1 before step 2 begins"
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines == history and [h["step"] for h in lines] == [1, 2] and "accuracy" in lines[0]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["trainer"] == "diffu_grpo" and config["seed"] == 3 and config["output_dir"] == str(out)
    assert (out / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    err = capsys.readouterr().err
    assert "train: 100%" in err and "2/2" in err, "the Python API shows a progress bar"

    with pytest.warns(UserWarning, match="already holds a run"):
        second = trainer(tokenizer, output_dir=str(out), seed=4)
    assert second.args.output_dir == f"{out}-2"
    second.train()
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 3, "the first run's files are kept"
    assert yaml.safe_load(Path(f"{out}-2", "config.yaml").read_text())["seed"] == 4


def test_step_lines_and_messages_go_around_the_progress_bar(tmp_path, monkeypatch):
    from rl_dlm import tracking

    written = []
    monkeypatch.setattr(tracking.tqdm, "write", lambda text, *a, **kw: written.append(text))
    tracker = tracking.Tracker(tmp_path, ["stdout"])
    tracker.log(1, {"reward": 0.5})
    tracker.message("held-out accuracy before: 0.1")
    assert written == ["step 1: reward=0.5", "held-out accuracy before: 0.1"]


def test_report_to_none_writes_nothing(tmp_path):
    from rl_dlm.tracking import Tracker

    tracker = Tracker(tmp_path / "quiet", ["none"])
    tracker.log(1, {"reward": 0.5})
    assert tracker.finish() is None and not (tmp_path / "quiet").exists()


# -- plots -------------------------------------------------------------------------------------------------------
def test_rl_dlm_plot_draws_a_run_directory(tmp_path, capsys):
    from rl_dlm.cli import main

    lines = [{"step": 1, "reward": 0.1, "accuracy": 0.0}, {"step": 2, "reward": 0.4, "accuracy": 0.5}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in lines) + '{"step": 3, "rew')
    main(["plot", str(tmp_path)])
    assert (tmp_path / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    assert f"wrote {tmp_path / 'metrics.png'}" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="metrics.jsonl does not exist"):
        main(["plot", str(tmp_path / "nothing")])


def test_without_matplotlib_a_run_says_how_to_get_the_plot(tmp_path, monkeypatch):
    from rl_dlm.plot import write_plot

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    said = []
    assert write_plot([{"step": 1, "reward": 0.1}], tmp_path / "metrics.png", say=said.append) is None
    assert "pip install matplotlib" in said[0] and not (tmp_path / "metrics.png").exists()


# -- sft ---------------------------------------------------------------------------------------------------------
def test_sft_without_output_never_writes_the_shipped_model(tmp_path, monkeypatch):
    from rl_dlm import sft
    from rl_dlm.cli import sft_main

    shipped = {p.name: p.stat().st_mtime_ns for p in EMBEDDED.iterdir()}
    monkeypatch.chdir(tmp_path)
    assert sft.SFTSettings().output is None
    out = sft.build_embedded_model(sft.SFTSettings(steps=1, batch_size=2, warmup_steps=1, tasks={"arithmetic": 8},
                                                   model=dict(d_model=16, n_layers=1, n_heads=2, mlp_hidden_size=32)))
    assert out.parent == Path("outputs") and out.name.startswith("sft-") and (out / "config.json").is_file()
    assert not (tmp_path / "checkpoints").exists()
    assert {p.name: p.stat().st_mtime_ns for p in EMBEDDED.iterdir()} == shipped
    parser_default = []
    monkeypatch.setattr(sft, "build_embedded_model", lambda s: parser_default.append(s.output) or Path("x"))
    sft_main([])
    assert parser_default == [None], "rl-dlm sft's default output is a new directory, not checkpoints/tiny-llada"


def test_a_resumed_run_rewrites_metrics_from_the_checkpoint_history(tmp_path):
    from rl_dlm.tracking import Tracker

    first = Tracker(tmp_path, ["none"])
    first.history = [{"step": 1, "reward": 0.1}, {"step": 2, "reward": 0.2}]
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n')  # step 3: after the checkpoint
    resumed = Tracker(tmp_path, ["stdout"])
    resumed.load_state_dict(first.state_dict())
    assert resumed.run_id == first.run_id
    resumed.log(3, {"reward": 0.3})
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
