"""Start-up validation: everything that can be checked before a model loads, with a message that names the key,
column, row or path, and the fix.

`rl-dlm train` / `rl-dlm eval` (rl_dlm/hydra_app.py) run these checks on the composed config, and `RLTrainer`'s
constructor runs `check_trainer_start` before it loads the model, so a Python user gets the same checks:

- **config values**: each field's type, from the config dataclass's annotations (`lora_r=abc` names `lora_r` and
  "an integer"), its range (`RANGES`: `temperature ≥ 0`, `learning_rate > 0`, `beta ≥ 0`, ...), and the batch
  geometry (rows per optimizer step a multiple of `num_generations`, which is ≥ 2 as in TRL);
- **sampler geometry**: the sampler is built once, and its errors name the keys the user sets
  (`max_completion_length`, `block_length`, `diffusion_steps`), not the sampler's own (`sampler_keys_as`);
- **paths**: the model (a path that is not shaped like a hub id, or whose first folder exists here, must be a
  local model directory; `org/name` goes to the hub), task data files, a resume checkpoint, a DeepSpeed config
  file, and the output directory, which is created and written to;
- **data**: every row of the train and eval datasets (a `prompt` that is a non-empty string or a list of
  {role, content} messages; the same columns in every row), and the columns each reward function needs.

Every failure raises `ConfigError`. The CLI prints it as one line plus a hint (rl_dlm/cli.py); `start_up()` turns
the other errors of the start-up phase (a `ValueError` from a config dataclass, an `OSError` from a model
loader) into one too. After start-up, errors keep their traceback.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import inspect
import os
import re
import tempfile
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path


class ConfigError(ValueError):
    """A bad setting, path or dataset row found at start-up; the message names it and the fix."""


@contextlib.contextmanager
def start_up():
    """Errors raised inside become `ConfigError` (the CLI prints them short), their cause kept for `--debug`."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        yield
    except ConfigError:
        raise
    except (ValueError, OSError, ImportError, HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(str(exc).strip() or type(exc).__name__) from exc


# -- config values ---------------------------------------------------------------------------------------------
def _at_least(low):
    return lambda v: v >= low, f"≥ {low}"


def _above(low):
    return lambda v: v > low, f"> {low}"


def _unit(closed_high: bool):
    if closed_high:
        return lambda v: 0 <= v <= 1, "in [0, 1]"
    return lambda v: 0 <= v < 1, "in [0, 1)"


# Ranges of RLConfig fields and of component knobs (rl_dlm/component_groups.py checks those by name, e.g.
# `objective.beta`); None passes where the type allows.
RANGES: dict[str, tuple[Callable, str]] = {
    "max_steps": _at_least(1), "per_device_train_batch_size": _at_least(1), "gradient_accumulation_steps": _at_least(1),
    "num_generations": _at_least(2), "num_iterations": _at_least(1), "learning_rate": _above(0),
    "weight_decay": _at_least(0), "adam_beta1": _unit(False), "adam_beta2": _unit(False), "max_grad_norm": _at_least(0),
    "warmup_steps": _at_least(0), "beta": _at_least(0), "epsilon": _above(0), "epsilon_high": _above(0),
    "max_prompt_length": _at_least(1), "max_completion_length": _at_least(1), "block_length": _at_least(1),
    "diffusion_steps": _at_least(1), "temperature": _at_least(0), "p_mask_prompt": _unit(True),
    "forward_batch_size": _at_least(1), "replay_steps_per_forward": _at_least(1),
    "lora_r": _at_least(1), "lora_alpha": _above(0), "lora_dropout": _unit(False),
    "logging_steps": _at_least(1), "save_steps": _at_least(0), "save_total_limit": _at_least(1), "seed": _at_least(0),
    "max_skipped_steps": _at_least(1),
}
CHOICES: dict[str, tuple[str, ...]] = {"remasking": ("low_confidence", "random"), "scale_rewards": ("none", "group"),
                                     "kl": ("k1", "k2", "k3")}
# Values the consumers accept beyond the field's annotation: one sink as a string (TRL's `report_to="wandb"`), and
# no gradient clipping as null (0 means the same).
ALSO_ACCEPTED: dict[str, type] = {"report_to": str, "max_grad_norm": type(None)}
WHY = {"num_generations": " (completions per prompt: a group of one has zero advantage)"}


def _type_name(hint) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    hint = typing.get_origin(hint) or hint
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
            dict: "a mapping", type(None): "null"}.get(hint, getattr(hint, "__name__", str(hint)))


def _matches(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if (origin or hint) is list:
        args = typing.get_args(hint)
        return isinstance(value, (list, tuple)) and (not args or all(_matches(v, args[0]) for v in value))
    if (origin or hint) is dict:
        return isinstance(value, Mapping)
    return True  # a type this check does not model: the dataclass or its user checks it


def check_values(config_cls, values: Mapping, prefix: str = "") -> None:
    """Type and range of every field of `config_cls` present in `values`, then the batch geometry. Messages name
    `prefix + field` (a component's knobs: `objective.beta`)."""
    hints = typing.get_type_hints(config_cls)
    defaults = {f.name: f.default for f in dataclasses.fields(config_cls) if f.default is not dataclasses.MISSING}
    for key, value in values.items():
        if key not in hints:
            continue  # unknown keys are refused, with a suggestion, by config.dataclass_kwargs
        name = prefix + key
        example = f"; e.g. {name}={defaults[key]!r}" if defaults.get(key) is not None else ""
        if not _matches(value, hints[key]) and not isinstance(value, ALSO_ACCEPTED.get(key, ())):
            raise ConfigError(f"{name} must be {_type_name(hints[key])}, got {value!r} "
                              f"({type(value).__name__}){example}")
        if value is None:
            continue
        if key in CHOICES and value not in CHOICES[key]:
            raise ConfigError(f"{name} must be one of {', '.join(CHOICES[key])}; got {value!r}")
        if key in RANGES and isinstance(value, (int, float)) and not isinstance(value, bool):
            ok, text = RANGES[key]
            if not ok(value):
                raise ConfigError(f"{name} must be {text}{WHY.get(key, '')}, got {value!r}{example}")
    check_batch(values, defaults)


def check_batch(values: Mapping, defaults: Mapping) -> None:
    """Rows per optimizer step (over all processes) a multiple of num_generations: groups never straddle steps."""
    from rl_dlm.distributed import env_world_size

    group, rows_per, accumulation = (values.get(k, defaults.get(k)) for k in (
        "num_generations", "per_device_train_batch_size", "gradient_accumulation_steps"))
    if None in (group, rows_per, accumulation):
        return
    world = env_world_size()
    rows = rows_per * accumulation * world
    if rows % group:
        processes = f" × {world} processes" if world > 1 else ""
        raise ConfigError(
            f"per_device_train_batch_size × gradient_accumulation_steps{processes} = {rows} rows per optimizer "
            f"step is not a multiple of num_generations = {group}; set per_device_train_batch_size to a multiple "
            f"of {group} (e.g. {group * max(1, rows_per // group)})")


def check_config(args) -> None:
    """`check_values` on a config dataclass instance."""
    check_values(type(args), {f.name: getattr(args, f.name) for f in dataclasses.fields(args)})


# -- sampler geometry ------------------------------------------------------------------------------------------
# What RLTrainer.default_sampler builds its sampler from: sampler field → config key.
DEFAULT_SAMPLER_KEYS = {"gen_length": "max_completion_length", "block_length": "block_length",
                        "steps": "diffusion_steps", "temperature": "temperature", "remasking": "remasking"}


def interpolated_keys(node: Mapping) -> dict[str, str]:
    """{sampler field: top-level key} for each field of an (unresolved) sampler node that is `${key}`."""
    out = {}
    for field, value in node.items():
        match = re.fullmatch(r"\$\{([\w.]+)\}", value) if isinstance(value, str) else None
        if match:
            out[field] = match.group(1)
    return out


@contextlib.contextmanager
def sampler_keys_as(names: Mapping[str, str]):
    """A sampler's `sampler.<field>` errors, reworded with the key the user sets (`names[field]`)."""
    try:
        yield
    except ValueError as exc:
        message = re.sub(r"\bsampler\.(\w+)", lambda m: names.get(m.group(1), m.group(0)), str(exc))
        if message == str(exc):
            raise
        raise ConfigError(message) from exc


# -- paths -----------------------------------------------------------------------------------------------------
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def _near(path: Path) -> str:
    parent = path.parent
    if not parent.is_dir():
        return ""
    close = difflib.get_close_matches(path.name, [p.name for p in parent.iterdir()], n=1)
    return f"; did you mean {str(parent / close[0])!r}?" if close else ""


def check_model_path(path, key: str = "model.path", marker: str = "config.json") -> None:
    """A local model directory must exist and hold `marker`; a hub id (`org/name`) is left to the hub."""
    text = str(path)
    local = Path(os.path.expanduser(text))
    if local.exists():
        if not (local / marker).is_file():
            raise ConfigError(f"{key}={text}: {local} is not a model directory (it has no {marker})")
        return
    first = text.split("/", 1)[0]
    if HUB_ID.fullmatch(text) and not ("/" in text and Path(first).is_dir()):
        return  # looks like a hub id: the loader fetches it (or finds it in the hub cache)
    what = "adapter" if marker.startswith("adapter") else "model"
    raise ConfigError(f"no such local {what} directory: {text} ({key}){_near(local)}")


def _file_ancestor(path: Path) -> Path | None:
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def check_output_dir(path, key: str = "output_dir") -> None:
    """Creates `path` and writes a file in it, so a bad output directory fails now, not at the final save."""
    target = Path(os.path.expanduser(str(path)))
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target, prefix=".rl_dlm-write-test-") as probe:
            probe.write(b"ok")
    except OSError as exc:
        blocker = _file_ancestor(target)
        why = f"{blocker} is a file, not a directory" if blocker else (exc.strerror or str(exc))
        raise ConfigError(f"{key}={path} cannot be created or written: {why}; set {key} to a writable "
                          "directory") from exc


def check_data_files(task: Mapping) -> None:
    """Local files named by `task.data_files.<split>` (sources json, parquet, csv) exist."""
    if task.get("source") not in ("json", "parquet", "csv"):
        return
    for split, name in (task.get("data_files") or {}).items():
        if not name or not isinstance(name, str) or "://" in name or any(c in name for c in "*?["):
            continue
        if not Path(name).is_file():
            raise ConfigError(f"task.data_files.{split}={name}: no such file{_near(Path(name))}")


def check_resume_and_deepspeed(args) -> None:
    resume = getattr(args, "resume", None)
    if isinstance(resume, str) and resume not in ("", "true", "True", "false", "False", "latest"):
        if not Path(resume).is_dir():
            raise ConfigError(f"resume={resume}: no such checkpoint directory; use resume=true for the latest "
                              "checkpoint in output_dir, or a checkpoint-<step> directory")
    spec = getattr(args, "deepspeed", None)
    if isinstance(spec, str) and spec.endswith((".json", ".yaml", ".yml")) and not Path(spec).is_file():
        raise ConfigError(f"deepspeed={spec}: no such config file; use deepspeed=zero2, zero3 or a file path")
    if spec and getattr(args, "compiled_blocks", False):
        from rl_dlm.distributed import deepspeed_config

        stage = deepspeed_config(spec, args, 1).get("zero_optimization", {}).get("stage")
        if stage == 3:  # ZeRO-3 gathers each module's weights in hooks around its forward, outside the graph
            raise ConfigError("compiled_blocks=true is not supported under ZeRO-3 (deepspeed=zero3), whose weights "
                              "are gathered by hooks the compiled block cannot run; use compiled_elementwise=true, "
                              "or deepspeed=zero2")


# -- data ------------------------------------------------------------------------------------------------------
def check_rows(rows: Iterable, label: str) -> list[str]:
    """Every row has a usable `prompt` and the columns of row 0; returns row 0's columns."""
    from rl_dlm.data.prompts import prompt_problem

    names = getattr(rows, "column_names", None)  # a datasets.Dataset: no need to read a row to know this
    if names is not None and "prompt" not in names:
        raise ConfigError(f"{label} has no 'prompt' column (columns: {sorted(names)}); name the prompt column "
                          "'prompt' (TRL's convention), e.g. dataset.rename_column('question', 'prompt')")
    columns = None
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ConfigError(f"{label} row {i}: expected a mapping of columns, got {type(row).__name__}")
        if "prompt" not in row:
            where = f"has no 'prompt' column (columns: {sorted(row)})" if i == 0 else f"row {i} has no 'prompt'"
            raise ConfigError(f"{label} {where}; every row needs a 'prompt': a string or a list of "
                              "{role, content} messages")
        problem = prompt_problem(row["prompt"])
        if problem:
            raise ConfigError(f"{label} row {i}, column 'prompt': {problem}; fix or drop that row")
        if columns is None:
            columns = list(row)
        else:
            missing = [c for c in columns if c not in row]
            if missing:
                raise ConfigError(f"{label} row {i} lacks column(s) {missing} that row 0 has")
    if columns is None:
        raise ConfigError(f"{label} is empty")
    return columns


REWARD_ARGUMENTS = {"prompts", "completions", "completion_ids"}


def check_reward_columns(reward_funcs, columns: list[str], label: str) -> None:
    """A reward function's required keyword arguments must be dataset columns (else it fails on every row)."""
    if isinstance(reward_funcs, Mapping):
        funcs = list(reward_funcs.items())
    else:
        items = reward_funcs if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
        funcs = [(getattr(f, "name", None), f) for f in items]
    for name, fn in funcs:
        func = getattr(fn, "func", fn)
        name = name or getattr(func, "__name__", type(func).__name__)
        try:
            params = inspect.signature(func).parameters.values()
        except (TypeError, ValueError):
            continue
        needed = [p.name for p in params if p.default is inspect.Parameter.empty
                  and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        missing = [n for n in needed if n not in REWARD_ARGUMENTS and n not in columns]
        if missing:
            raise ConfigError(f"reward function {name!r} needs column(s) {missing} that {label} lacks (columns: "
                              f"{sorted(columns)}); add them to the rows or give the parameters a default")


# -- the trainer's entry ---------------------------------------------------------------------------------------
def check_trainer_start(args, model=None, train_dataset=None, eval_dataset=None, reward_funcs=None,
                        make_sampler: Callable | None = None) -> None:
    """Everything `RLTrainer` can check before it loads `model` (a path, a hub id, or an already loaded policy).
    `make_sampler` builds the trainer's default sampler (None when the caller passes its own)."""
    check_config(args)
    if make_sampler is not None:
        with sampler_keys_as(DEFAULT_SAMPLER_KEYS):
            make_sampler()
    if isinstance(model, (str, os.PathLike)):
        check_model_path(model, key="model")
    for rows, label in ((train_dataset, "train_dataset"), (eval_dataset, "eval_dataset")):
        if rows is not None:
            columns = check_rows(rows, label)
            if reward_funcs is not None:
                check_reward_columns(reward_funcs, columns, label)
    check_resume_and_deepspeed(args)
    check_output_dir(args.output_dir)
