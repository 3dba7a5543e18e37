"""Metrics, stage timers and progress: the only place (with `checkpoint`) that prints or writes files.

Sinks are chosen by `report_to`: "stdout" (a line per logging step), "tensorboard" (`<output_dir>/runs`),
"wandb" (respects `WANDB_MODE`; `offline` and `disabled` need no account), or "none" (no sink and no run files).
Stage names double as timer names: `time/rollout`, `time/reward`, `time/advantage`, `time/old_logp`,
`time/update`, `time/step`.

Run files: unless `report_to` is "none", the main process writes into `output_dir`, once the run starts,
`config.yaml` (the run's configuration: `snapshot`, by default `config`) and `metrics.jsonl` (one JSON line per
logging step, flushed at once, so a killed run keeps every logged step); `finish()` draws `metrics.png`
(`rl_dlm/plot.py`). A resumed run rewrites `metrics.jsonl` from the checkpoint's history, then appends.

Identity: `run_id` names the run in its checkpoints (rotation deletes only the run's own) and, with `config`,
travels in the checkpoint's tracker state, so a resumed run keeps its id and resume can compare configurations.
Step lines and messages go through `tqdm.write`, so they never land on a progress bar's line (`progress_bar`).

Throughput: `count(stage, tokens)` adds tokens processed in a stage; at each log the tracker reports
`tokens_per_s/<stage>` = tokens / seconds of that stage since the last log (per process).

Several processes: `reduce` (set by the trainer to the runtime's `mean`) turns each rank's metrics into their mean
over ranks before they are recorded, so every rank holds the same history; only the main process writes to the
sinks (`is_main`).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
import uuid
from collections import defaultdict
from pathlib import Path

from tqdm.auto import tqdm

METRICS_FILE, CONFIG_FILE = "metrics.jsonl", "config.yaml"


class Tracker:
    def __init__(self, output_dir: str | Path, report_to: list[str] | str = ("stdout",), config: dict | None = None,
                 run_name: str | None = None, is_main: bool = True):
        self.report_to = [report_to] if isinstance(report_to, str) else list(report_to)
        unknown = set(self.report_to) - {"stdout", "tensorboard", "wandb", "none"}
        if unknown:
            raise ValueError(f"report_to has unknown sink(s) {sorted(unknown)}; use stdout, tensorboard, wandb or none")
        self.output_dir = Path(output_dir)
        self.times: dict[str, float] = defaultdict(float)
        self.tokens: dict[str, float] = defaultdict(float)
        self.history: list[dict] = []
        self.reduce = None  # dict -> dict over ranks (None: this process only)
        self.current_stage: str | None = None  # the stage running, or the one an exception left (failures name it)
        self.is_main = is_main
        if not is_main:
            self.report_to = ["none"]
        self.run_id = uuid.uuid4().hex[:12]
        self.config = config
        self.snapshot = config  # what config.yaml holds (the CLI sets its composed config)
        self._metrics = None  # the open metrics.jsonl, from the run's first stage or log on
        self._tb = self._wandb = None
        if "tensorboard" in self.report_to:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.output_dir / "runs"))
        if "wandb" in self.report_to:
            import wandb

            self._wandb = wandb.init(project="rl_dlm", name=run_name, config=config, dir=str(self.output_dir))

    @property
    def writes_files(self) -> bool:
        return self.is_main and self.report_to != ["none"]

    def _open_run_files(self):
        """config.yaml and metrics.jsonl (with the history so far: a resumed run's steps) on first use."""
        if self._metrics is not None or not self.writes_files:
            return
        from omegaconf import OmegaConf

        self.output_dir.mkdir(parents=True, exist_ok=True)
        plain = json.loads(json.dumps(self.snapshot or {}, default=str))  # objects in a config: their text
        (self.output_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(OmegaConf.create(plain)))
        self._metrics = open(self.output_dir / METRICS_FILE, "w")
        for entry in self.history:
            self._write_metrics(entry)

    def _write_metrics(self, entry: dict):
        self._metrics.write(json.dumps(entry) + "\n")
        self._metrics.flush()
        os.fsync(self._metrics.fileno())

    @contextlib.contextmanager
    def stage(self, name: str):
        self._open_run_files()
        start, outer = time.perf_counter(), self.current_stage
        self.current_stage = name
        try:
            yield
        finally:
            self.times[f"time/{name}"] += time.perf_counter() - start
        self.current_stage = outer  # not reached on an exception: the stage it left stays named

    def count(self, stage: str, tokens: float):
        self.tokens[stage] += tokens

    def log(self, step: int, metrics: dict[str, float]):
        rates = {f"tokens_per_s/{k}": n / self.times[f"time/{k}"] for k, n in self.tokens.items()
                 if self.times.get(f"time/{k}", 0) > 0}
        metrics = {**metrics, **self.times, **rates}
        self.times, self.tokens = defaultdict(float), defaultdict(float)
        if self.reduce is not None:
            metrics = self.reduce(metrics)
        self._open_run_files()  # before the new entry: opening writes the history so far
        self.history.append({"step": step, **metrics})
        if self._metrics is not None:
            self._write_metrics(self.history[-1])
        if "stdout" in self.report_to:
            tqdm.write(f"step {step}: " + "  ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()))
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)

    def message(self, text: str):
        if self.is_main:
            tqdm.write(text)

    def finish(self) -> Path | None:
        """End of training: draws reward and accuracy against step into `metrics.png` (None: nothing drawn)."""
        from rl_dlm.plot import write_plot

        if not self.writes_files or not self.history:
            return None
        path = write_plot(self.history, self.output_dir / "metrics.png", title=self.output_dir.name, say=self.message)
        if path is not None:
            self.message(f"metrics in {self.output_dir / METRICS_FILE}; plot in {path}")
        return path

    def close(self):
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()

    def state_dict(self) -> dict:
        return {"history": self.history, "times": dict(self.times), "tokens": dict(self.tokens),
                "run_id": self.run_id, "config": self.config}

    def load_state_dict(self, state: dict):
        """A resumed run: the checkpoint's history (metrics.jsonl is rewritten from it) and run id."""
        self.history = list(state.get("history", []))
        self.run_id = state.get("run_id") or self.run_id
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        self.times = defaultdict(float, state.get("times", {}))
        self.tokens = defaultdict(float, state.get("tokens", {}))

    def dump(self, path: str | Path):
        Path(path).write_text("\n".join(json.dumps(h) for h in self.history) + "\n")


def progress_bar(total: int, disable: bool = False):
    """A tqdm bar over optimizer steps, fed by the loop's `progress(step, info)` callback; the reward is its
    postfix. Step lines and messages use `tqdm.write`, which clears and redraws the bar around them. The bar is
    drawn at the first call (the trainer makes it with the start step, after resume has said what it loaded),
    so nothing printed before training lands on its line."""
    bar = None

    def update(step: int, info: dict) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="train", unit="step", disable=disable)
        bar.update(step - bar.n)
        if "reward" in info:
            bar.set_postfix(reward=f"{info['reward']:.3f}")
        if step >= total:
            bar.close()

    return update


def _fmt(v: float) -> str:
    if isinstance(v, float) and (math.isnan(v) or abs(v) >= 1e-3 or v == 0):
        return f"{v:.4g}"
    return f"{v:.3e}" if isinstance(v, float) else str(v)
