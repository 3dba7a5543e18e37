"""Checkpoints: a SIGKILL mid-write leaves no half-written checkpoint, and a resumed run continues bit for bit;
rotation keeps the newest `save_total_limit` of the run's own checkpoints; an exported (merged) adapter computes
what base + adapter computes. Resume skips a damaged checkpoint (naming it), says when there is nothing to resume,
and refuses a checkpoint of a run whose configuration differs in a key that changes the algorithm.

The kill test runs the training process in a subprocess (tests/distributed_run.py) with μ = 2, checkpoints every
2 steps, LoRA dropout on (so the dropout generator matters) and a 4-row dataset (so the data order crosses an
epoch). The process is made to sleep inside the write of checkpoint-4 — after step 4 — and is killed there with
SIGKILL; it resumes from checkpoint-2 (k = 2) and steps 3..5 must equal an uninterrupted run's exactly.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rl_dlm.checkpoint import list_checkpoints, resolve_resume
from tests.conftest import ROOT

ARGS = ["--steps", "5", "--per-device", "4", "--group", "2", "--iterations", "2", "--save-steps", "2",
        "--rows", "4", "--lora-dropout", "0.1"]
TIMEOUT = 240


def worker(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tests.distributed_run", "--out", str(out), *ARGS, *extra]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def finish(out: Path, *extra: str) -> list[dict]:
    done = subprocess.run(worker(out, *extra), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-5000:]
    return json.loads((out / "history_rank0.json").read_text())


def without_timings(h: dict) -> dict:
    return {k: v for k, v in h.items() if not k.startswith(("time/", "tokens_per_s/"))}


def assert_complete(ckpt: Path):
    for name in ("trainer_state.json", "adapter_model.safetensors", "adapter_config.json", "optimizer.pt",
                 "scheduler.pt", "rng_state_0.pt", "tokenizer.json"):
        assert (ckpt / name).is_file(), f"{ckpt.name} lacks {name}"


def test_sigkill_mid_checkpoint_then_resume_matches_uninterrupted_run(tmp_path):
    reference = finish(tmp_path / "reference")

    out = tmp_path / "run"
    proc = subprocess.Popen(worker(out, "--hang-at-save", "4"), cwd=ROOT, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + TIMEOUT
    while not (out / "hanging").exists():
        assert proc.poll() is None, proc.stderr.read()[-5000:]
        assert time.time() < deadline, "the run never reached checkpoint-4"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)  # a real SIGKILL, inside the write of checkpoint-4 (after step 4)
    assert proc.wait(timeout=30) == -signal.SIGKILL

    assert (out / ".checkpoint-4.tmp").is_dir(), "killed mid-write: only the temporary directory exists"
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2"]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert_complete(out / "checkpoint-2")

    resumed = finish(out, "--resume")
    assert not (out / ".checkpoint-4.tmp").exists(), "the half-written directory is removed on resume"
    assert [h["step"] for h in resumed] == [1, 2, 3, 4, 5]
    for got, want in zip(resumed, reference):  # steps 1..k from the tracker state; k+1..k+3 bitwise (CPU, fp32)
        assert without_timings(got) == without_timings(want), got["step"]
    assert_complete(out / "checkpoint-4")
    assert ((out / "checkpoint-4" / "adapter_model.safetensors").read_bytes()
            == (tmp_path / "reference" / "checkpoint-4" / "adapter_model.safetensors").read_bytes())


def test_rotation_resume_resolution_and_merged_export(tmp_path):
    from peft import PeftModel

    from rl_dlm.export import merge_adapter
    from rl_dlm.models.policy import load_policy
    from tests.conftest import EMBEDDED
    from tests.distributed_run import run

    out = tmp_path / "run"
    run(str(out), max_steps=3, save_steps=1, save_total_limit=2, rows=4)
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2", "checkpoint-3"]
    assert resolve_resume(True, out) == out / "checkpoint-3"
    assert resolve_resume(None, out) is None
    with pytest.warns(UserWarning, match="no checkpoint"):
        assert resolve_resume(True, tmp_path / "empty") is None
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        resolve_resume(str(tmp_path / "missing"), out)
    assert json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3

    merged_dir = merge_adapter(out / "checkpoint-3", tmp_path / "merged")
    merged = load_policy(str(merged_dir)).model.eval()
    base = load_policy(str(EMBEDDED))
    ids = torch.randint(0, len(base.tokenizer), (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = base.model.eval()(input_ids=ids).logits
        adapted = PeftModel.from_pretrained(base.model, str(out / "checkpoint-3")).eval()(input_ids=ids).logits
        got = merged(input_ids=ids).logits
    assert not torch.allclose(adapted, plain, atol=1e-4), "the adapter was trained, so merging changes the model"
    torch.testing.assert_close(got, adapted, atol=1e-4, rtol=1e-4)


# -- one run's checkpoints: rotation, damaged checkpoints, configuration checks ---------------------------------
def save_as_run(out: Path, policy, optimizer, run_id: str, steps, limit=None, config=None) -> None:
    from rl_dlm.checkpoint import save_checkpoint

    for step in steps:
        save_checkpoint(out, step, policy, optimizer, None, {"tracker": {"run_id": run_id, "config": config}},
                        save_total_limit=limit)


@pytest.fixture
def lora_policy(tokenizer):
    from tests.conftest import make_tiny_policy

    policy = make_tiny_policy(tokenizer, lora=True)
    return policy, torch.optim.AdamW(policy.trainable_parameters(), lr=1e-3)


def test_rotation_deletes_only_the_runs_own_checkpoints(tmp_path, lora_policy):
    policy, optimizer = lora_policy
    save_as_run(tmp_path, policy, optimizer, "old", [5, 6])
    save_as_run(tmp_path, policy, optimizer, "new", [1, 2, 3], limit=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-3", "checkpoint-5",
                                                            "checkpoint-6"]


def test_resume_skips_a_damaged_checkpoint_and_names_it(tmp_path, lora_policy):
    policy, optimizer = lora_policy
    save_as_run(tmp_path, policy, optimizer, "run", [1, 2, 3])
    weights = tmp_path / "checkpoint-3" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated, as by a full disk
    (tmp_path / "checkpoint-2" / "optimizer.pt").unlink()
    with pytest.warns(UserWarning) as caught:
        assert resolve_resume(True, tmp_path) == tmp_path / "checkpoint-1"
    said = [str(w.message) for w in caught]
    assert any(str(tmp_path / "checkpoint-3") in m and "adapter_model.safetensors is truncated" in m for m in said)
    assert any(str(tmp_path / "checkpoint-2") in m and "optimizer.pt" in m for m in said)
    with pytest.raises(ValueError, match="damaged checkpoint .*checkpoint-3.*truncated"):
        resolve_resume(str(tmp_path / "checkpoint-3"), tmp_path)
    opt = tmp_path / "checkpoint-1" / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[:50])
    with pytest.warns(UserWarning), pytest.raises(FileNotFoundError, match="every checkpoint .* is damaged"):
        resolve_resume(True, tmp_path)


def test_resume_with_nothing_to_resume_says_so(tmp_path):
    with pytest.warns(UserWarning, match=f"resume=True: no checkpoint in {tmp_path}; starting from step 0"):
        assert resolve_resume(True, tmp_path) is None


def test_resume_refuses_a_run_with_another_algorithm_unless_forced(tmp_path, lora_policy):
    policy, optimizer = lora_policy
    saved = {"trainer": "diffu_grpo", "model": "m", "num_generations": 4, "beta": 0.04, "max_steps": 10}
    save_as_run(tmp_path, policy, optimizer, "run", [2], config=saved)
    assert resolve_resume(True, tmp_path, {**saved, "max_steps": 50}) == tmp_path / "checkpoint-2"  # free key
    with pytest.raises(ValueError, match=r"num_generations: 4 in the checkpoint, 6 now.*resume_force=true"):
        resolve_resume(True, tmp_path, {**saved, "num_generations": 6})
    with pytest.raises(ValueError, match=r"trainer: 'diffu_grpo' in the checkpoint, 'gdpo' now"):
        resolve_resume(True, tmp_path, {**saved, "trainer": "gdpo"})
    with pytest.warns(UserWarning, match="resume_force=true: resuming .* num_generations"):
        assert resolve_resume(True, tmp_path, {**saved, "num_generations": 6}, force=True) == tmp_path / "checkpoint-2"


def test_trainer_checkpoints_carry_the_run_config_and_resume_checks_it(tmp_path):
    from tests.distributed_run import run

    out = tmp_path / "run"
    run(str(out), max_steps=1, save_steps=1, rows=4)
    state = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())["tracker"]
    assert state["config"]["trainer"] == "diffu_grpo" and state["config"]["num_generations"] == 2
    assert state["config"]["model"].endswith("tiny-llada") and len(state["run_id"]) == 12
    with pytest.raises(ValueError, match="beta: 0.04 in the checkpoint, 0.1 now"):
        run(str(out), max_steps=2, save_steps=1, rows=4, resume=True, beta=0.1)
    history = run(str(out), max_steps=2, save_steps=1, rows=4, resume=True)  # the same run, continued
    assert [h["step"] for h in history] == [1, 2]
    resumed = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["tracker"]
    assert resumed["run_id"] == state["run_id"], "a resumed run keeps its id, so rotation keeps working"
