"""A run's directory and its identity in checkpoints.

Directory: a run writes into `output_dir` (checkpoints, `final/`, `config.yaml`, `metrics.jsonl`,
`metrics.png`). When `output_dir` already holds another run, a new run does not mix with it: it writes into
the first unused `<output_dir>-2`, `-3`, ... and says so. `resume=true` continues the newest of these that has a
checkpoint. Defaults name the algorithm: `rl-dlm train` uses `outputs/<task>-<recipe>-<algo>`, the Python API
`outputs/<algo>` (`RLConfig.output_dir = None`).

Several processes (torchrun, DeepSpeed) must agree on one directory before any of them can tell whether another
has started writing, so they take `output_dir` as given and only warn when it holds another run; their
checkpoints still carry the run id, so rotation never touches another run's (`rl_dlm/checkpoint.py`).
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

# What marks a directory as holding a run (any run's file; an empty or new directory is unused).
RUN_FILES = ("config.yaml", "metrics.jsonl", "final")
_CHECKPOINT = re.compile(r"^checkpoint-\d+$")


def algo_name(trainer_cls) -> str:
    """The `algo=` name of a trainer class (`diffu_grpo`), or its class name for a trainer outside TRAINERS."""
    from rl_dlm.trainers import TRAINERS

    return next((name for name, (cls, _) in TRAINERS.items() if cls is trainer_cls), trainer_cls.__name__)


def holds_run(path: Path) -> bool:
    if not path.is_dir():
        return False
    return any((path / name).exists() for name in RUN_FILES) or any(
        _CHECKPOINT.match(p.name) for p in path.iterdir())


def _numbered(base: Path):
    yield base
    n = 2
    while True:
        yield base.with_name(f"{base.name}-{n}")
        n += 1


def claim_run_dir(output_dir: str | Path, resume=None, processes: int = 1, is_main: bool = True) -> Path:
    """The directory this run writes into (see the module docstring); creates nothing."""
    from rl_dlm.checkpoint import latest_checkpoint, wants_latest

    base = Path(output_dir)
    if processes > 1:
        if is_main and not wants_latest(resume) and holds_run(base):
            warnings.warn(f"output_dir={base} already holds a run; this run writes beside it (its checkpoints carry "
                          "their own run id). Set output_dir to a new directory to keep runs apart.", stacklevel=3)
        return base
    used = []
    for path in _numbered(base):
        if not holds_run(path):
            break
        used.append(path)
    if wants_latest(resume):
        with_checkpoint = [p for p in used if latest_checkpoint(p) is not None]
        if with_checkpoint:
            return with_checkpoint[-1]
    if used:
        warnings.warn(f"output_dir={base} already holds a run; this run writes into {path} instead "
                      "(resume=true continues the newest run that has a checkpoint).", stacklevel=3)
    return path


def run_config(trainer, model) -> dict:
    """What a checkpoint records about the run that wrote it: algorithm, model, every config field and, for a
    trainer built from config nodes, its components with their knobs."""
    from dataclasses import asdict

    if not isinstance(model, str):
        base = getattr(getattr(trainer, "policy", None), "model", None)
        model = getattr(getattr(base, "config", None), "_name_or_path", None)
    record = {"trainer": trainer.algo, "model": model, **asdict(trainer.args)}
    if trainer.component_nodes is not None:
        record["components"] = trainer.component_nodes
    return record
