"""A non-finite loss skips its optimizer step instead of ending the run: the step's gradients are discarded, the
weights stay finite and untouched by it, `skipped_steps` counts it, and a warning names the step, the inner
iteration and the last finite loss. `max_skipped_steps` in a row save a checkpoint and stop with a message that
says where it is."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rl_dlm import DiffuGRPOTrainer
from rl_dlm.checkpoint import list_checkpoints
from rl_dlm.data.tasks import make_split
from rl_dlm.distributed import LocalRuntime
from rl_dlm.run_guard import NonFiniteLossError

from tests.conftest import EMBEDDED, ROOT
from tests.trainers.test_diffu_grpo_e2e import lora_state, noisy_length_reward, small_config

HUGE = 3e38  # finite, near float32's largest: ±HUGE advantages overflow the token sum of the loss


def reward_that_overflows_on(calls: set[int]):
    """A finite reward that makes the loss non-finite on the given rollouts (0-based call numbers)."""
    count = [0]

    def reward(completions, **kw):
        call, count[0] = count[0], count[0] + 1
        if call in calls:
            return [HUGE * (-1) ** i for i in range(len(completions))]
        return noisy_length_reward(completions)

    return reward


def adam_steps(trainer) -> set[int]:
    return {int(s["step"]) for s in trainer.optimizer.state.values()}


def test_one_non_finite_step_is_skipped_and_the_run_goes_on(tmp_path):
    reward = reward_that_overflows_on({1})  # the second rollout = optimizer step 2 (μ = 1)
    trainer = DiffuGRPOTrainer(str(EMBEDDED), reward, args=small_config(tmp_path, max_steps=3),
                               train_dataset=make_split("countdown", "train", 8))
    weights = []
    record_weights = lambda step, info: weights.append(lora_state(trainer))  # noqa: E731
    with pytest.warns(RuntimeWarning, match=r"skipped step 2 \(inner iteration 0\): loss (nan|inf|-inf).*"
                                            r"last finite loss: \S+ at step 1"):
        history = trainer.train(progress=record_weights)
    assert [h["step"] for h in history] == [1, 2, 3]
    assert not math.isfinite(history[1]["loss"]) and not math.isfinite(history[1]["grad_norm"])
    assert [h["skipped_steps"] for h in history] == [0, 1, 1]
    assert all(math.isfinite(h["loss"]) for h in (history[0], history[2]))
    after_1, after_2, after_3 = weights
    assert all(torch.equal(after_1[n], after_2[n]) for n in after_1)  # step 2 changed nothing
    assert any(not torch.equal(after_2[n], after_3[n]) for n in after_2)  # step 3 trained
    assert all(torch.isfinite(p).all() for p in after_3.values())
    assert adam_steps(trainer) == {2}  # the optimizer stepped twice
    assert trainer.scheduler.last_epoch == 2  # the scheduler waits on a skipped step, as DeepSpeed's does


def test_non_finite_every_time_stops_after_max_skipped_steps_with_a_checkpoint(tmp_path):
    reward = reward_that_overflows_on(set(range(100)))
    trainer = DiffuGRPOTrainer(str(EMBEDDED), reward, args=small_config(tmp_path, max_steps=10),
                               train_dataset=make_split("countdown", "train", 8))
    before = lora_state(trainer)
    with pytest.warns(RuntimeWarning, match="last finite loss: none yet"), \
            pytest.raises(NonFiniteLossError, match=r"3 optimizer steps in a row") as raised:
        trainer.train()
    saved = tmp_path / "checkpoint-3"
    assert list_checkpoints(tmp_path) == [saved]
    assert any(str(saved) in note for note in getattr(raised.value, "__notes__", [str(saved)]))
    assert [h["skipped_steps"] for h in trainer.tracker.history] == [1, 2, 3]
    assert all(torch.equal(before[n], p) for n, p in lora_state(trainer).items())  # never updated, never NaN
    assert adam_steps(trainer) == set()


def test_skipped_steps_go_on_counting_after_a_resume():
    from rl_dlm.run_guard import SkippedSteps

    assert SkippedSteps(3).total == 0
    assert SkippedSteps(3, [{"step": 1, "skipped_steps": 0}, {"step": 2, "skipped_steps": 2}, {"step": 3}]).total == 2


def test_local_runtime_discards_a_step_whose_gradient_is_not_finite():
    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.1)
    runtime = LocalRuntime([w], opt, None, max_grad_norm=1.0)
    runtime.backward((w * torch.tensor([1.0, math.inf])).sum())  # inf loss: NaN gradients, step discarded
    norm, applied = runtime.step()
    assert not applied and math.isnan(norm) and w.grad is None and torch.equal(w, torch.ones(2))
    runtime.backward(w.sum())
    norm, applied = runtime.step()
    assert applied and norm == pytest.approx(math.sqrt(2)) and torch.allclose(w, torch.ones(2) - 0.1 / math.sqrt(2))


# -- under DeepSpeed: one rank's non-finite loss skips the step on every rank ---------------------------------------
def overflow_on_rank_0_first_call(completion_ids, **kw):
    first = not getattr(overflow_on_rank_0_first_call, "called", False)
    overflow_on_rank_0_first_call.called = True
    if first and os.environ.get("RANK") == "0":
        return [HUGE * (-1) ** i for i in range(len(completion_ids))]
    return [float(sum(ids) % 7) for ids in completion_ids]


def distributed_main(out: str) -> None:
    """One rank of `torchrun --nproc_per_node 2 -m tests.test_nonfinite OUT`: 3 ZeRO-2 steps, each rank one group."""
    from tests.distributed_run import config

    args = config(out, deepspeed="zero2", max_steps=3, num_generations=2, per_device_train_batch_size=2)
    trainer = DiffuGRPOTrainer(str(EMBEDDED), overflow_on_rank_0_first_call, args=args,
                               train_dataset=make_split("countdown", "train", 16))
    try:
        history = trainer.train()
        finite = all(bool(torch.isfinite(p).all()) for n, p in trainer.policy.model.named_parameters() if "lora_" in n)
        Path(out, f"rank{trainer.runtime.rank}.json").write_text(json.dumps({"history": history, "finite": finite}))
    finally:
        trainer.close()


def test_deepspeed_one_rank_non_finite_skips_the_step_on_every_rank(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tests.test_nonfinite", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:
        assert [h["skipped_steps"] for h in rank["history"]] == [1, 1, 1] and rank["finite"]
        assert not math.isfinite(rank["history"][0]["grad_norm"])  # DeepSpeed's overflow: inf
        assert all(math.isfinite(h["loss"]) and math.isfinite(h["grad_norm"]) for h in rank["history"][1:])
    assert ranks[0]["history"] == ranks[1]["history"]


if __name__ == "__main__":
    distributed_main(sys.argv[1])
