"""Nothing is lost when a run goes wrong: a non-finite step is skipped, and a run that stops saves a checkpoint.

Non-finite steps (`SkippedSteps`, the loop's stage 6). A non-finite loss makes the runtime's `backward` turn that
step's gradients into NaN, and `Runtime.step()` discards every step whose gradient norm is not finite: the
gradients are zeroed, the optimizer does not step and the learning-rate scheduler does not advance (what DeepSpeed
does on an overflow; the DeepSpeed runtime uses exactly that, and its overflow check is reduced over ranks, so
every rank skips the same steps). The step counter still advances, so data order and checkpoints stay aligned.
The loop logs the running count as `skipped_steps` and warns with the step, the inner iteration and the last
finite loss. `max_skipped_steps` skipped steps in a row raise `NonFiniteLossError`.

Stopping (`checkpoint_on_failure`, around `RLTrainer.train`). On Ctrl-C (`KeyboardInterrupt`), SIGTERM or an
exception, the trainer saves a checkpoint of the last completed optimizer step (atomic, `save_checkpoint`), says
where it is (printed, and as a note on the exception), and the exception goes on. SIGTERM is raised inside the run
as `Terminated`, so that nothing there mistakes it for user code calling exit(), and leaves it after the save as
`SystemExit(143)`, the conventional status of a terminated process. A second Ctrl-C during the save abandons it
(the half-written directory is removed). Resuming from a checkpoint taken between a rollout's μ inner iterations
redraws that rollout's prompts with the saved weights: the run continues, but not bit for bit.

Several processes (DeepSpeed): a checkpoint is collective, so it can only be written when every process stops at
the same point. SIGTERM (what torchrun and schedulers send every process) is deferred to the end of the current
optimizer step, where the processes agree on it (`Runtime.any`) and save together; so is a run that stops on too
many skipped steps (the skip decision is the same on every rank). Ctrl-C or an error reaches one process at an
arbitrary point: nothing is saved, and the message names the latest complete checkpoint, so keep `save_steps` on
for long multi-GPU runs.

    with checkpoint_on_failure(save=lambda exc: "checkpoint saved to ...", say=print, processes=n) as sigterm:
        train(..., on_step=lambda step: sigterm.stop_if_requested(runtime.any))
"""
from __future__ import annotations

import contextlib
import math
import signal
import threading
import warnings
from collections.abc import Callable, Iterator

import torch

SIGTERM_STATUS = 128 + signal.SIGTERM


class Terminated(BaseException):
    """SIGTERM while training. A BaseException, so that neither an `except Exception` nor the reward runner's
    `except SystemExit` (for user code that calls exit()) swallows it; it leaves the run as `SystemExit(143)`.
    `everywhere`: raised on every process at the same point, so they can save a checkpoint together."""

    def __init__(self, everywhere: bool = False):
        super().__init__()
        self.everywhere = everywhere


class NonFiniteLossError(FloatingPointError):
    """`max_skipped_steps` optimizer steps in a row had a non-finite loss or gradient."""


class SkippedSteps:
    """Counts the optimizer steps that `Runtime.step()` discarded, warns about each, and stops a run that keeps
    producing them."""

    def __init__(self, limit: int, history: list[dict] = ()):
        """`history`: the tracker's, so that a resumed run goes on counting `skipped_steps` where it stopped."""
        self.limit, self.in_a_row = limit, 0
        self.total = int(next((h["skipped_steps"] for h in reversed(history) if "skipped_steps" in h), 0))
        self.last_finite: tuple[int, float] | None = None  # (step, loss)
        self.last_skipped = ""

    def record(self, step: int, iteration: int, applied: bool, loss: float, grad_norm: float) -> None:
        if applied:
            self.in_a_row = 0
            if math.isfinite(loss):
                self.last_finite = (step, loss)
            return
        self.total += 1
        self.in_a_row += 1
        last = "none yet" if self.last_finite is None else f"{self.last_finite[1]:.6g} at step {self.last_finite[0]}"
        self.last_skipped = (f"step {step} (inner iteration {iteration}): loss {loss:.6g}, gradient norm "
                             f"{grad_norm:.6g}, last finite loss: {last}")
        warnings.warn(f"skipped {self.last_skipped}; its gradients were discarded ({self.in_a_row} in a row, "
                      f"max_skipped_steps={self.limit})", RuntimeWarning, stacklevel=2)

    def stop_if_too_many(self) -> None:
        if self.in_a_row >= self.limit:
            raise NonFiniteLossError(
                f"{self.in_a_row} optimizer steps in a row had a non-finite loss or gradient (max_skipped_steps="
                f"{self.limit}); the last was {self.last_skipped}. Lower learning_rate or check the rewards")


# What to change after running out of GPU memory in a stage of the loop (docs/performance.md, "If it does not fit").
# Every key named is one a run may change when it resumes (rl_dlm.checkpoint.FREE_KEYS).
OUT_OF_MEMORY_FIXES = {
    "rollout": "cuda_graphs=false (captured graphs keep their logits and K/V buffers) or fewer rollout rows per "
               "process (per_device_train_batch_size × gradient_accumulation_steps, or more processes)",
    "reward": "cuda_graphs=false or fewer rollout rows per process (a refiner regenerates rows here)",
    "old_logp": "forward_batch_size=<rows> (the old and reference log-probs in chunks of that many rows)",
    "update": "gradient_checkpointing=true, or a smaller per_device_train_batch_size with more "
              "gradient_accumulation_steps (the same rows per optimizer step), or replay_steps_per_forward=1",
}


def out_of_memory_fix(exc: BaseException, stage: str | None) -> str:
    """For a CUDA out-of-memory error: which stage ran out and what to change on resuming; '' otherwise."""
    if not isinstance(exc, torch.OutOfMemoryError):
        return ""
    fix = OUT_OF_MEMORY_FIXES.get(stage or "", "gradient_checkpointing=true or fewer rows per micro-batch")
    where = f" in stage '{stage}'" if stage else ""
    return f" The GPU ran out of memory{where}: resume with {fix} (docs/performance.md)."


def describe(exc: BaseException) -> str:
    if isinstance(exc, Terminated):
        return "terminated (SIGTERM)"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    return f"stopped by {type(exc).__name__}"


class SigtermFlag:
    """Where SIGTERM goes while training. One process: raised at once as `Terminated`. Several processes: a
    checkpoint needs all of them at the same point, so the signal only sets `requested`, and the trainer turns it
    into `Terminated(everywhere=True)` on every process after the next optimizer step (`stop_if_requested`)."""

    def __init__(self, deferred: bool):
        self.deferred, self.requested = deferred, False

    def __call__(self, signum, frame):
        if not self.deferred:
            raise Terminated()
        self.requested = True

    def stop_if_requested(self, anywhere: Callable[[bool], bool]) -> None:
        """`anywhere`: this process's flag → whether any process has it (a collective: call it on every one)."""
        if anywhere(self.requested):
            raise Terminated(True)


@contextlib.contextmanager
def checkpoint_on_failure(save: Callable[[BaseException], str], say: Callable[[str], None],
                          processes: int = 1) -> Iterator[SigtermFlag]:
    """Runs the body with SIGTERM handled by a `SigtermFlag` (main thread only). On an exception, Ctrl-C or
    SIGTERM inside it, calls `save(exc)`, which saves what it can and returns a sentence saying where; that
    sentence is printed with `say` and added to the exception as a note, and the exception goes on (SIGTERM:
    `SystemExit(143)`)."""
    flag = SigtermFlag(deferred=processes > 1)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, flag) if main else None
    try:
        yield flag
    except (Exception, KeyboardInterrupt, Terminated) as exc:
        try:
            note = save(exc)
        except Exception as err:  # keep the original error; say why nothing was saved
            note = f"{describe(exc)}; could not save a checkpoint ({type(err).__name__}: {err})"
        say(note)
        if hasattr(exc, "add_note"):  # Python ≥ 3.11: shown under the traceback
            exc.add_note(note)
        if isinstance(exc, Terminated):
            raise SystemExit(SIGTERM_STATUS) from exc
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
