"""A run that stops keeps its work: on Ctrl-C, SIGTERM or an error inside `train()`, the trainer saves a checkpoint
of the last completed optimizer step, says where it is, and the exception goes on (SIGTERM: `SystemExit(143)`).
A run resumed from that checkpoint goes on to `max_steps`."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from rl_dlm import DiffuGRPOTrainer
from rl_dlm.checkpoint import list_checkpoints
from rl_dlm.data.tasks import make_split

from tests.conftest import EMBEDDED, ROOT
from tests.trainers.test_diffu_grpo_e2e import lora_state, noisy_length_reward, small_config

ROWS = make_split("countdown", "train", 8)


def reward_raising_at(call: int, raise_it):
    """`noisy_length_reward`, but on rollout `call` (0-based) it runs `raise_it()` instead."""
    count = [0]

    def reward(completions, **kw):
        count[0] += 1
        if count[0] == call + 1:
            raise_it()
        return noisy_length_reward(completions)

    return reward


def ctrl_c():
    raise KeyboardInterrupt


def sigterm():
    os.kill(os.getpid(), signal.SIGTERM)


def trainer(tmp_path, reward, **kw):
    return DiffuGRPOTrainer(str(EMBEDDED), reward, args=small_config(tmp_path, max_steps=4, **kw), train_dataset=ROWS)


def saved_state_equals(tmp_path, saved, stopped) -> bool:
    """The checkpoint holds the stopped run's weights (those of its last completed step)."""
    from rl_dlm.checkpoint import load_checkpoint

    fresh = trainer(tmp_path, noisy_length_reward)
    load_checkpoint(saved, fresh.policy)
    stopped_lora, fresh_lora = lora_state(stopped), lora_state(fresh)
    return all(torch.equal(stopped_lora[n], fresh_lora[n]) for n in stopped_lora)


def test_ctrl_c_in_a_reward_function_saves_a_checkpoint_and_re_raises(tmp_path, capsys):
    stopped = trainer(tmp_path, reward_raising_at(2, ctrl_c))  # the third rollout: after steps 1 and 2
    with pytest.raises(KeyboardInterrupt) as raised:
        stopped.train()
    saved = tmp_path / "checkpoint-2"
    assert list_checkpoints(tmp_path) == [saved]
    assert f"checkpoint saved to {saved}" in capsys.readouterr().out
    assert any(str(saved) in note for note in getattr(raised.value, "__notes__", [str(saved)]))
    assert saved_state_equals(tmp_path, saved, stopped)
    resumed = trainer(tmp_path, noisy_length_reward, resume=True)
    history = resumed.train()
    assert [h["step"] for h in history] == [1, 2, 3, 4]  # the saved history, then the rest
    assert history[:2] == stopped.tracker.history


def test_an_error_in_a_callback_saves_the_last_completed_step(tmp_path):
    """The progress callback runs right after the optimizer step: the checkpoint is that step's, not the one before."""
    def fail_at_3(step, info):
        if step == 3:
            raise RuntimeError("disk quota exceeded in my logger")

    stopped = trainer(tmp_path, noisy_length_reward)
    with pytest.raises(RuntimeError, match="disk quota"):
        stopped.train(progress=fail_at_3)
    saved = tmp_path / "checkpoint-3"
    assert list_checkpoints(tmp_path) == [saved]
    assert saved_state_equals(tmp_path, saved, stopped)
    history = trainer(tmp_path, noisy_length_reward, resume=True).train()
    assert [h["step"] for h in history] == [1, 2, 4]  # step 3 trained, but the error came before its log line


def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    stopped = trainer(tmp_path, reward_raising_at(1, sigterm))  # in the second rollout: after step 1
    with pytest.raises(SystemExit) as raised:
        stopped.train()
    assert raised.value.code == 128 + signal.SIGTERM
    assert list_checkpoints(tmp_path) == [tmp_path / "checkpoint-1"]
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is the caller's again


def test_a_stop_before_the_first_step_saves_nothing_and_says_so(tmp_path, capsys):
    stopped = trainer(tmp_path, reward_raising_at(0, ctrl_c))
    with pytest.raises(KeyboardInterrupt):
        stopped.train()
    assert list_checkpoints(tmp_path) == []
    assert "interrupted (Ctrl-C) before an optimizer step: no new checkpoint to save" in capsys.readouterr().out


# -- several processes: SIGTERM to one of them stops all at the end of the step, and they save together ------------
def sigterm_to_rank_0_in_the_second_rollout(completion_ids, **kw):
    calls = getattr(sigterm_to_rank_0_in_the_second_rollout, "calls", 0) + 1
    sigterm_to_rank_0_in_the_second_rollout.calls = calls
    if calls == 2 and os.environ.get("RANK") == "0":
        sigterm()
    return [float(sum(ids) % 7) for ids in completion_ids]


def distributed_main(out: str) -> None:
    """One rank of `torchrun --nproc_per_node 2 -m tests.test_interrupt OUT`: ZeRO-2, 4 steps, SIGTERM in step 2."""
    from tests.distributed_run import config

    args = config(out, deepspeed="zero2", max_steps=4, num_generations=2, per_device_train_batch_size=2)
    trainer = DiffuGRPOTrainer(str(EMBEDDED), sigterm_to_rank_0_in_the_second_rollout, args=args,
                               train_dataset=make_split("countdown", "train", 16))
    try:
        trainer.train()
    finally:
        trainer.close()


def test_sigterm_to_one_deepspeed_process_saves_a_checkpoint_from_all(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tests.test_interrupt", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0  # the workers exit with 143
    saved = tmp_path / "checkpoint-2"
    assert list_checkpoints(tmp_path) == [saved], done.stdout[-3000:] + done.stderr[-6000:]
    assert {p.name for p in saved.glob("rng_state_*.pt")} == {"rng_state_0.pt", "rng_state_1.pt"}
    assert (saved / "deepspeed").is_dir()
    assert f"terminated (SIGTERM) at step 2: checkpoint saved to {saved}" in done.stdout


if __name__ == "__main__":
    distributed_main(sys.argv[1])


@pytest.mark.parametrize("stage,fix", [("update", "gradient_checkpointing=true"),
                                       ("old_logp", "forward_batch_size="), ("rollout", "cuda_graphs=false")])
def test_out_of_memory_names_the_stage_and_what_to_change_on_resuming(tmp_path, monkeypatch, stage, fix):
    """A CUDA out-of-memory error in the third rollout batch (μ = 2: after steps 1 and 2) saves step 2's checkpoint
    and says which stage ran out and which key fixes it."""
    import rl_dlm.loop as loop

    calls, target = [0], {"update": "update_micro_batch", "old_logp": "_score_plans", "rollout": "generate"}[stage]
    real = getattr(loop, target)
    # calls per rollout batch: μ = 2 micro-batches of 4 rows; old and reference log-probs (β > 0); one rollout
    per_batch = {"update": 2, "old_logp": 2, "rollout": 1}[stage]

    def out_of_memory(*args, **kwargs):
        calls[0] += 1
        if calls[0] > 2 * per_batch:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, target, out_of_memory)
    stopped = DiffuGRPOTrainer(str(EMBEDDED), noisy_length_reward, train_dataset=ROWS,
                               args=small_config(tmp_path, max_steps=6, num_iterations=2))
    with pytest.raises(torch.OutOfMemoryError) as raised:
        stopped.train()
    note = " ".join(getattr(raised.value, "__notes__", []))
    assert list_checkpoints(tmp_path) == [tmp_path / "checkpoint-4"]
    assert f"ran out of memory in stage '{stage}'" in note and fix in note, note
