"""Multi-process runs: 2 CPU processes (gloo) under DeepSpeed ZeRO-2 and ZeRO-3 match a single-process run.

The 2-process runs are launched with `torchrun` in a subprocess (tests/distributed_run.py). The single-process
reference uses the same rows per optimizer step, split into the same micro-batches (per_device 2 × GA 2·world),
so each rank's micro-batch losses are exactly some of the reference's; what may differ is float rounding from
different batch shapes in the rollout forwards, and the gradient all-reduce order. LoRA starts random (not B = 0),
so the first step's loss has a real KL term: with μ = 1 and B = 0 it would be exactly 0 whatever the runtime did.

Tolerances (stated here, asserted below): first-step loss and gradient norm within 1e-5 absolute + 1e-4
relative; second-step loss and KL (after one distributed optimizer step) within 1e-3 relative; rewards equal.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rl_dlm.distributed import deepspeed_config, rank_share
from tests.conftest import ROOT

TORCHRUN_TIMEOUT = 240  # seconds; a 2-step run takes ~30 s on 2 cores
RUN = dict(max_steps=2, per_device_train_batch_size=2, num_generations=4, random_lora=True)


def close(a: float, b: float, abs_tol: float, rel_tol: float) -> bool:
    return abs(a - b) <= abs_tol + rel_tol * abs(b)


def torchrun(out: Path, *args: str) -> list[list[dict]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tests.distributed_run", "--out", str(out), "--steps", str(RUN["max_steps"]),
           "--per-device", "2", "--group", "4", "--random-lora", *args]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TORCHRUN_TIMEOUT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return [json.loads((out / f"history_rank{r}.json").read_text()) for r in (0, 1)]


def single_process(out: Path, ga: int) -> list[dict]:
    from tests.distributed_run import run

    return run(str(out), gradient_accumulation_steps=ga, **RUN)


def assert_matches(multi: list[list[dict]], single: list[dict]):
    rank0, rank1 = multi
    assert [h["step"] for h in rank0] == [1, 2] == [h["step"] for h in single]
    assert rank0 == rank1, "metrics are reduced over ranks, so every rank records the same history"
    first, ref = rank0[0], single[0]
    assert first["reward"] == ref["reward"] and first["frac_reward_zero_std"] == ref["frac_reward_zero_std"]
    assert first["loss"] != 0.0 and first["kl"] > 0  # LoRA starts random: the policy is not the reference
    assert close(first["loss"], ref["loss"], 1e-5, 1e-4), (first["loss"], ref["loss"])
    assert close(first["grad_norm"], ref["grad_norm"], 1e-5, 1e-4), (first["grad_norm"], ref["grad_norm"])
    for key in ("loss", "kl"):
        assert close(rank0[1][key], single[1][key], 1e-7, 1e-3), (key, rank0[1][key], single[1][key])
    assert all(math.isfinite(h["tokens_per_s/rollout"]) and h["tokens_per_s/update"] > 0 for h in rank0)


def test_zero2_two_processes_match_one(tmp_path):
    """Groups whole on each rank (G = 4 = per_device 2 × GA 2), gradient accumulation under DeepSpeed."""
    multi = torchrun(tmp_path / "zero2", "--deepspeed", "zero2", "--ga", "2")
    assert_matches(multi, single_process(tmp_path / "single", ga=4))


def test_zero2_with_compiled_blocks_matches_one_eager_process(tmp_path):
    """compiled_blocks=true under ZeRO-2 (rl_dlm/models/compiled_blocks.py: the update's block passes compiled,
    DeepSpeed's gradient hooks outside the graph): the eager single-process run's losses and gradient norms, to
    the tolerances above (fp32: the compiled blocks equal eager to float rounding)."""
    multi = torchrun(tmp_path / "zero2", "--deepspeed", "zero2", "--ga", "2", "--compiled-blocks")
    assert_matches(multi, single_process(tmp_path / "single", ga=4))


def test_zero3_two_processes_match_one_and_resume(tmp_path):
    """Each group spans both ranks (G = 4, 2 rows per rank): advantages need the gathered rewards. Then a
    ZeRO-3 checkpoint (sharded optimizer + gathered adapter) resumes and redoes step 2 identically."""
    out = tmp_path / "zero3"
    multi = torchrun(out, "--deepspeed", "zero3", "--ga", "1", "--save-steps", "1")
    assert_matches(multi, single_process(tmp_path / "single", ga=2))
    ckpt = out / "checkpoint-1"
    assert (ckpt / "adapter_model.safetensors").exists() and (ckpt / "deepspeed").is_dir()
    assert {p.name for p in ckpt.glob("rng_state_*.pt")} == {"rng_state_0.pt", "rng_state_1.pt"}

    shutil.rmtree(out / "checkpoint-2")
    resumed = torchrun(out, "--deepspeed", "zero3", "--ga", "1", "--resume")
    assert resumed[0][0] == multi[0][0], "the tracker history up to the checkpoint is restored"
    strip = lambda h: {k: v for k, v in h.items() if not k.startswith(("time/", "tokens_per_s/"))}  # noqa: E731
    assert strip(resumed[0][1]) == strip(multi[0][1])


# -- pieces, in one process -------------------------------------------------------------------------------------
@pytest.mark.parametrize("prompts,group,rows,world", [(3, 2, 6, 1), (2, 4, 2, 4), (3, 4, 6, 2), (4, 2, 4, 2)])
def test_rank_share_partitions_the_expanded_batch(prompts, group, rows, world):
    expanded = [p for p in range(prompts) for _ in range(group)]
    got = []
    for rank in range(world):
        first, counts = rank_share(prompts, group, rows, rank)
        assert sum(counts) == rows
        got += [first + i for i, c in enumerate(counts) for _ in range(c)]
    assert got == expanded


def test_rank_share_with_one_process_is_the_plain_batch():
    assert rank_share(3, 6, 18, 0) == (0, [6, 6, 6])
    with pytest.raises(ValueError, match="cannot fill"):
        rank_share(1, 2, 4, 0)


def test_deepspeed_config_takes_batch_precision_and_clipping_from_the_trainer():
    from tests.distributed_run import config

    args = config("unused", per_device_train_batch_size=2, gradient_accumulation_steps=3, num_generations=2,
                  max_grad_norm=0.5, bf16=True)
    for name, stage in (("zero2", 2), ("zero3", 3)):
        cfg = deepspeed_config(name, args, world_size=4)
        assert cfg["zero_optimization"]["stage"] == stage
        assert (cfg["train_micro_batch_size_per_gpu"], cfg["gradient_accumulation_steps"]) == (2, 3)
        assert cfg["train_batch_size"] == 24 and cfg["gradient_clipping"] == 0.5 and cfg["bf16"]["enabled"]
        assert cfg["managed_gradient_accumulation"] is False and cfg["zero_allow_untested_optimizer"]
    with pytest.raises(ValueError, match="zero2"):
        deepspeed_config("zero9", args, world_size=1)


def test_deepspeed_key_composes_from_the_command_line():
    from rl_dlm.hydra_app import compose_config

    assert compose_config([]).deepspeed is None
    for stage in (2, 3):
        assert compose_config([f"deepspeed=zero{stage}"]).deepspeed.zero_optimization.stage == stage


def test_tracker_reports_tokens_per_second_and_reduces():
    from rl_dlm.tracking import Tracker

    tracker = Tracker("unused", "none")
    tracker.reduce = lambda m: {**m, "reduced": 1.0}
    with tracker.stage("rollout"):
        torch.ones(1000).sum()
    tracker.count("rollout", 500)
    tracker.log(1, {"loss": 0.5})
    h = tracker.history[0]
    assert h["reduced"] == 1.0 and h["tokens_per_s/rollout"] == pytest.approx(500 / h["time/rollout"])


# -- where the no-grad passes run (what ZeRO-3's gathered weights serve), in one process -------------------------
@pytest.mark.parametrize("algo,extra,gathers_per_batch", [
    ("diffu_grpo", ["num_iterations=2"], 2),  # rollout, old + reference log-probs on one gather
    ("igpo", ["num_iterations=2"], 3),  # + the hinted regeneration (stage 2b)
    # stage 4 scores nothing (μ = 1, β = 0): no gather; its step-reward refiner forwards nothing, but refiners
    # are components the loop does not probe, so stage 2b gathers (≈ 50 ms of NVLink at 8B on 8 GPUs)
    ("mdpo", ["num_iterations=1", "likelihood.top_k_steps=4", "objective.beta=0.0"], 2),
])
def test_every_no_grad_forward_runs_on_the_gathered_weights(tmp_path, algo, extra, gathers_per_batch):
    """`runtime.gathered` (under ZeRO-3: the full weights, gathered once per stage) wraps every forward without
    gradients (rollout, refinement, old and reference log-probs) and no forward with them (the update)."""
    import contextlib

    from rl_dlm.distributed import LocalRuntime
    from rl_dlm.hydra_app import build, compose_config
    from tests.trainers.test_cj_mdpo_igpo_e2e import SMALL

    class Recording(LocalRuntime):
        inside, gathers = False, 0

        @contextlib.contextmanager
        def gathered(self, policy):
            assert not self.inside, "gathered contexts do not nest"
            self.inside, self.gathers = True, self.gathers + 1
            try:
                yield
            finally:
                self.inside = False

    cfg = compose_config([f"algo={algo}", f"output_dir={tmp_path}", *SMALL, "max_steps=2", *extra])
    trainer = build(cfg)
    optimizer, scheduler = trainer.make_optimizer()
    trainer.optimizer, trainer.scheduler = optimizer, scheduler
    trainer.runtime = runtime = Recording(trainer.policy.trainable_parameters(), optimizer, scheduler, 1.0)
    forwards = []
    trainer.policy.model.register_forward_pre_hook(
        lambda module, args: forwards.append((torch.is_grad_enabled(), runtime.inside)))
    trainer.train()
    assert forwards and all(grad != inside for grad, inside in forwards), sorted(set(forwards))
    batches = 2 // int(next(e for e in extra if e.startswith("num_iterations=")).split("=")[1])
    assert runtime.gathers == gathers_per_batch * batches
