"""Stage 2 of the loop: call the reward functions and combine them.

Reward functions follow TRL's signature, `f(prompts, completions, completion_ids, **columns) -> list[float |
None]`, so any TRL reward function plugs in unchanged. `None` means "not applicable to this row".

What can go wrong is recorded, never hidden, and never stops the run:
- a function that raises (`SystemExit` included) on the batch is retried row by row; rows that still raise
  become `None`, are counted in `reward/<name>/errors` (logged every step, 0 when all is well), and a warning
  names the function and the first error;
- a function that exceeds its `timeout` (seconds per call) on the batch is retried row by row, each row with
  the same `timeout`; rows that time out become `None`, counted the same way. After `MAX_ROW_TIMEOUTS` row
  timeouts the remaining rows are not retried (they become `None` too), so a function that hangs on every row
  costs about (1 + MAX_ROW_TIMEOUTS) × timeout per step;
- a NaN or ±inf value is an error too, not "not applicable": the row becomes `None`, counted in the same
  `reward/<name>/errors`, and the first time a function returns one, a warning names the function;
- a wrong-length return is a bug in the function and raises at once.

Timeouts run the call in a daemon thread, so a hung function never blocks the interpreter's exit; a thread
cannot be killed, though, so it keeps its CPU until it returns. Rewards that may loop forever on model output
(running generated code) should bound themselves in a subprocess, as `rewards.code` does. Async reward
functions (TRL allows them) are awaited.

The total reward of a row is Σ weight · value over the functions that returned a number; a row where every
function returned `None` gets NaN, which the advantage stage turns into a zero advantage
(`reward/none_rows` counts them).
"""
from __future__ import annotations

import asyncio
import inspect
import math
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class RewardFunction:
    func: Callable
    weight: float = 1.0
    name: str = ""
    timeout: float | None = None  # seconds for one batch call; None = no limit

    def __post_init__(self):
        self.name = self.name or getattr(self.func, "__name__", type(self.func).__name__)


@dataclass
class RewardResult:
    total: torch.Tensor  # [N] weighted sum, NaN where no function applied
    per_function: dict[str, torch.Tensor]  # name → [N], NaN for None
    stats: dict[str, float] = field(default_factory=dict)


def _as_float(value) -> float:
    """None → NaN ("not applicable"); a number → float. A non-finite number stays non-finite for the caller
    to count (`_finite`)."""
    if value is None:
        return math.nan
    return float(value)


def _finite(values: list, floats: list[float]) -> tuple[list[float], int]:
    """NaN for every value that was a number but not finite; (values, how many there were)."""
    bad = [v is not None and not math.isfinite(f) for v, f in zip(values, floats)]
    return [math.nan if b else f for f, b in zip(floats, bad)], sum(bad)


class RewardRunner:
    def __init__(self, functions: list[RewardFunction], correct: str | None = None, correct_threshold: float = 1.0):
        if not functions:
            raise ValueError("at least one reward function is needed (task.rewards is empty)")
        names = [f.name for f in functions]
        if len(set(names)) != len(names):
            raise ValueError(f"reward function names must be unique, got {names}")
        if correct is not None and correct not in names:
            raise ValueError(f"task.correct_reward={correct!r} is not one of the task's rewards {names}")
        self.functions = functions
        self.correct = correct
        self.correct_threshold = correct_threshold
        self._warned_nonfinite: set[str] = set()  # functions already warned about NaN / inf values

    def _call(self, fn: RewardFunction, kwargs: dict) -> list:
        if fn.timeout is None:
            return _materialize(fn.func(**kwargs))
        return _run_with_timeout(lambda: _materialize(fn.func(**kwargs)), fn.timeout, fn.name)

    def _score_one(self, fn: RewardFunction, kwargs: dict, n: int, stats: dict) -> list[float]:
        values, errors = self._score_rows(fn, kwargs, n)
        values, nonfinite = _finite(values[0], values[1])
        stats[f"reward/{fn.name}/errors"] = float(errors + nonfinite)
        if nonfinite and fn.name not in self._warned_nonfinite:
            self._warned_nonfinite.add(fn.name)
            warnings.warn(f"reward function {fn.name!r} returned NaN or inf on {nonfinite}/{n} rows; they count as "
                          f"errors (None, in reward/{fn.name}/errors). Return None for 'not applicable', or fix the "
                          "function (warned once per function)", stacklevel=3)
        return values

    def _score_rows(self, fn: RewardFunction, kwargs: dict, n: int) -> tuple[tuple[list, list], int]:
        """((raw values, their floats), rows that raised or timed out): one batch call, else row by row."""
        batch_timed_out = False
        try:
            values = self._call(fn, kwargs)
        except _Timeout:
            values, batch_timed_out = None, True
        except (Exception, SystemExit):  # noqa: BLE001 - a user function may raise anything
            values = None
        if values is not None:
            if len(values) != n:
                raise ValueError(f"reward function {fn.name!r} returned {len(values)} values for {n} completions")
            try:
                return (list(values), [_as_float(v) for v in values]), 0
            except (TypeError, ValueError):
                pass
        # Isolate the failing rows.
        raw, out, raised, timeouts, skipped, first = [], [], 0, 0, 0, None
        for i in range(n):
            value = None
            if timeouts >= MAX_ROW_TIMEOUTS:
                skipped += 1
                raw.append(value)
                out.append(math.nan)
                continue
            row = {k: (v[i:i + 1] if isinstance(v, list) else v) for k, v in kwargs.items()}
            try:
                (value,) = self._call(fn, row)
                out.append(_as_float(value))
            except _Timeout:
                timeouts += 1
                first = first or f"timed out after {fn.timeout}s on row {i}"
                value = None
                out.append(math.nan)
            except (Exception, SystemExit) as exc:  # noqa: BLE001
                raised += 1
                first = first or f"row {i}: {type(exc).__name__}: {exc}"
                value = None
                out.append(math.nan)
            raw.append(value)
        errors = raised + timeouts + skipped
        if errors:
            detail = f"{raised} raised" + (f", {timeouts} timed out after {fn.timeout}s" if fn.timeout else "")
            if skipped:
                detail += f", {skipped} not retried after {MAX_ROW_TIMEOUTS} timeouts"
            warnings.warn(f"reward function {fn.name!r} gave None on {errors}/{n} rows ({detail}; first: {first})",
                          stacklevel=4)
        elif batch_timed_out:
            warnings.warn(f"reward function {fn.name!r} timed out after {fn.timeout}s on a batch of {n} but not on "
                          "single rows; raise its timeout", stacklevel=4)
        return (raw, out), errors

    def __call__(self, prompts: list, completions: list, completion_ids: list[list[int]],
                 columns: dict[str, list]) -> RewardResult:
        n = len(completions)
        stats: dict[str, float] = {}
        per_function = {}
        for fn in self.functions:
            kwargs = {"prompts": prompts, "completions": completions, "completion_ids": completion_ids, **columns}
            if not _accepts_var_kwargs(fn.func):
                allowed = set(inspect.signature(fn.func).parameters)
                kwargs = {k: v for k, v in kwargs.items() if k in allowed}
            per_function[fn.name] = torch.tensor(self._score_one(fn, kwargs, n, stats), dtype=torch.float32)
        stacked = torch.stack([per_function[f.name] * f.weight for f in self.functions])
        valid = ~torch.isnan(stacked)
        total = torch.where(valid, stacked, torch.zeros_like(stacked)).sum(0)
        total = torch.where(valid.any(0), total, torch.full_like(total, math.nan))
        for name, values in per_function.items():
            finite = values[~torch.isnan(values)]
            stats[f"reward/{name}"] = finite.mean().item() if finite.numel() else math.nan
        stats["reward/none_rows"] = float((~valid.any(0)).sum())
        finite_total = total[~torch.isnan(total)]
        stats["reward"] = finite_total.mean().item() if finite_total.numel() else math.nan
        if self.correct is not None:
            stats["accuracy"] = self.is_correct(per_function).float().mean().item()
        return RewardResult(total, per_function, stats)

    def is_correct(self, per_function: dict[str, torch.Tensor]) -> torch.Tensor:
        values = per_function[self.correct]
        return torch.nan_to_num(values, nan=-math.inf) >= self.correct_threshold


MAX_ROW_TIMEOUTS = 2  # row timeouts after which a function's remaining rows are not retried


class _Timeout(Exception):
    pass


def _run_with_timeout(call: Callable, timeout: float, name: str):
    box: dict = {}

    def target():
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"reward:{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise _Timeout
    if "error" in box:
        raise box["error"]
    return box["value"]


def _materialize(values) -> list:
    """A reward's return value as a list; an async reward's coroutine is awaited first."""
    if inspect.isawaitable(values):
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread
            values = asyncio.run(_awaited(values))
        else:  # called from inside a running loop (a notebook): await it on a loop of its own
            values = _run_with_timeout(lambda: asyncio.run(_awaited(values)), None, "async")
    return list(values)


async def _awaited(awaitable):
    return await awaitable


def _accepts_var_kwargs(func: Callable) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
