"""Atomic, resumable checkpoints.

Layout of `<output_dir>/checkpoint-<step>/`:

    adapter_model.safetensors, adapter_config.json   the LoRA adapter (peft format; `rl-dlm export` merges it)
    tokenizer files
    optimizer.pt, scheduler.pt                       one process; under DeepSpeed: deepspeed/ (ZeRO shards per rank)
    rng_state_<rank>.pt                              torch CPU (dropout) and CUDA, python `random`, numpy generators
    trainer_state.json                               global_step, rollouts drawn (data order), world_size, tracker
                                                     (history, run id, the run's config: `runs.run_config`)

Atomicity: every rank writes into `.checkpoint-<step>.tmp`; after a barrier rank 0 writes `trainer_state.json` last
and renames the directory. A crash or SIGKILL mid-write leaves only the hidden `.tmp` directory, which
`list_checkpoints` never returns and the next save or resume deletes. Rotation (`save_total_limit`) deletes the
oldest complete checkpoints of the same run (same run id), never the one just written and never another run's.

Resume (`resolve_resume`):
- `resume=true` takes the newest intact checkpoint: one that is damaged (a truncated safetensors or torch file, a
  missing file, unreadable `trainer_state.json`) is skipped with a warning naming its path and the reason. With
  no checkpoint at all it warns and the run starts from step 0; with only damaged ones it stops.
- A checkpoint whose run had a different setting of a key that changes the algorithm (any config key except
  those in `FREE_KEYS`: how the run is executed, logged and saved) is refused, naming the keys, unless
  `resume_force=true`.

Not in a checkpoint, on purpose: the frozen base weights (reloaded from the model path) and a half-used rollout.
Checkpoints fall between rollouts (`save_steps` is a multiple of `num_iterations`), so a resumed run redraws
rollout `step // num_iterations` from the same per-row seeds and continues bit for bit (fp32 on CPU).

    path = save_checkpoint("out", step, policy, optimizer, scheduler, {"tracker": ...}, save_total_limit=2)
    state = load_checkpoint(resolve_resume(True, "out"), policy, optimizer, scheduler)
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import struct
import warnings
import zipfile
from pathlib import Path

import torch

_NAME = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"


class _SingleProcess:
    """The part of a runtime a checkpoint needs, for one process."""

    rank, world_size, is_main = 0, 1, True

    def __init__(self, optimizer=None, scheduler=None):
        self.optimizer, self.scheduler = optimizer, scheduler

    def barrier(self):
        pass

    def save_state(self, path: Path, policy):
        save_local_state(path, policy, self.optimizer, self.scheduler)

    def load_state(self, path: Path, policy):
        load_local_state(path, policy, self.optimizer, self.scheduler)


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary `.tmp` directories are never listed)."""
    root = Path(output_dir)
    if not root.exists():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _NAME.match(p.name)) and p.is_dir() and (p / STATE_FILE).exists()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def remove_partial(output_dir: str | Path) -> list[Path]:
    """Deletes temporary directories left by a crash mid-write; returns what it removed."""
    root = Path(output_dir)
    stale = [p for p in root.glob(".checkpoint-*.tmp*") if p.is_dir()] if root.exists() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


# Config keys that say how a run is executed, logged or saved, not what it computes: resume may change them.
FREE_KEYS = frozenset({
    "output_dir", "max_steps", "logging_steps", "save_steps", "save_total_limit", "report_to", "resume",
    "resume_force", "deepspeed", "forward_batch_size", "gradient_checkpointing", "merge_lora_for_inference",
    "cuda_graphs", "fused_projections", "compiled_elementwise", "compiled_blocks",
    "replay_steps_per_forward",
    "per_device_train_batch_size", "gradient_accumulation_steps"})


def wants_latest(resume) -> bool:
    return resume in (True, "true", "True", "latest")


def resolve_resume(resume, output_dir: str | Path, config: dict | None = None, force: bool = False) -> Path | None:
    """`resume` → the checkpoint to load. True/"true"/"latest": the newest intact one in `output_dir` (None, with a
    warning, when there is none yet, so a preempted job can be relaunched with the same command); a path: that
    checkpoint. With `config` (this run's `runs.run_config`), a checkpoint of a run that differs in a key
    outside FREE_KEYS is refused unless `force`."""
    if resume in (None, False, "", "false", "False"):
        return None
    if wants_latest(resume):
        found = list_checkpoints(output_dir)
        if not found:
            warnings.warn(f"resume={resume}: no checkpoint in {output_dir}; starting from step 0", stacklevel=2)
            return None
        path = None
        for candidate in reversed(found):
            problem = damage(candidate)
            if problem is None:
                path = candidate
                break
            warnings.warn(f"resume: skipping damaged checkpoint {candidate}: {problem}", stacklevel=2)
        if path is None:
            raise FileNotFoundError(f"resume={resume}: every checkpoint in {output_dir} is damaged "
                                    f"({[p.name for p in found]}); resume from a path or start a new run")
    else:
        path = Path(resume)
        if not (path / STATE_FILE).exists():
            raise FileNotFoundError(f"resume={resume!r} is not a complete checkpoint (no {STATE_FILE}); "
                                    f"complete ones in {output_dir}: {[p.name for p in list_checkpoints(output_dir)]}")
        problem = damage(path)
        if problem is not None:
            raise ValueError(f"resume={resume!r}: damaged checkpoint {path}: {problem}")
    if config is not None:
        check_same_run(path, config, force)
    return path


def check_same_run(path: Path, config: dict, force: bool = False) -> None:
    """Refuses (ValueError) a checkpoint whose run's config differs from `config` outside FREE_KEYS."""
    saved = json.loads((path / STATE_FILE).read_text()).get("tracker", {}).get("config")
    if saved is None:
        return  # written without a config (by an older version, or a trainer given its own tracker)
    differ = [k for k in sorted(set(saved) | set(config)) if k not in FREE_KEYS
              and not _same_value(k, saved.get(k, "<unset>"), config.get(k, "<unset>"))]
    if not differ:
        return
    detail = ", ".join(f"{k}: {saved.get(k, '<unset>')!r} in the checkpoint, {config.get(k, '<unset>')!r} now"
                       for k in differ)
    if force:
        warnings.warn(f"resume_force=true: resuming {path} although the run differs in {detail}", stacklevel=3)
        return
    raise ValueError(f"resume: {path} was written by a run with other settings ({detail}); these change the "
                     "algorithm. Resume with the checkpoint's settings, start a new run (another output_dir), or set "
                     "resume_force=true to resume anyway.")


def _same_value(key: str, a, b) -> bool:
    if key == "model" and isinstance(a, str) and isinstance(b, str) and a != b:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    return a == b or json.dumps(a, default=str) == json.dumps(b, default=str)


def damage(path: Path) -> str | None:
    """Why a complete-looking checkpoint cannot be loaded (a missing or truncated file), or None when intact."""
    try:
        info = json.loads((path / STATE_FILE).read_text())
        int(info["global_step"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{STATE_FILE} is unreadable ({exc})"
    required = ["adapter_model.safetensors", "adapter_config.json", "rng_state_0.pt"]
    if not (path / "deepspeed").is_dir():
        required += ["optimizer.pt"]
    missing = [name for name in required if not (path / name).is_file()]
    if missing:
        return f"missing {missing}"
    problem = _safetensors_damage(path / "adapter_model.safetensors")
    if problem:
        return problem
    for file in sorted(path.glob("*.pt")):
        try:
            with zipfile.ZipFile(file) as archive:  # torch.save's format; a cut file has no central directory
                archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            return f"{file.name} is truncated or corrupt ({exc})"
    return None


def _safetensors_damage(file: Path) -> str | None:
    """safetensors: an 8-byte header length, a JSON header, then data up to the largest end offset."""
    size = file.stat().st_size
    try:
        with open(file, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size:
                return f"{file.name} is truncated ({size} bytes, header says {n})"
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        return f"{file.name} has an unreadable header ({exc})"
    if size < 8 + n + end:
        return f"{file.name} is truncated ({size} bytes of {8 + n + end})"
    return None


# -- weights, optimizer and scheduler of a single process ------------------------------------------------------
def save_local_state(path: Path, policy, optimizer=None, scheduler=None) -> None:
    policy.model.save_pretrained(path)
    policy.tokenizer.save_pretrained(path)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), path / "optimizer.pt")
    if scheduler is not None:
        torch.save(scheduler.state_dict(), path / "scheduler.pt")


def load_adapter(path: Path, model) -> None:
    """Loads `adapter_model.safetensors` into a peft model in place; every adapter tensor must match."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(path / "adapter_model.safetensors"), device=str(next(model.parameters()).device))
    result = set_peft_model_state_dict(model, weights)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise ValueError(f"{path}: adapter tensors {unexpected[:3]} do not fit the model (different LoRA settings?)")


def load_local_state(path: Path, policy, optimizer=None, scheduler=None) -> None:
    load_adapter(path, policy.model)
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    if scheduler is not None:
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))


# -- random generators ------------------------------------------------------------------------------------------
def rng_state() -> dict:
    """Every global generator: torch CPU (dropout), CUDA, python `random`, numpy (reward code may use them)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state["numpy"] = (kind, torch.from_numpy(keys.astype("int64")), pos, has_gauss, gauss)
    except ImportError:
        pass
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, gauss))


# -- save and load ----------------------------------------------------------------------------------------------
def save_checkpoint(output_dir: str | Path, step: int, policy, optimizer=None, scheduler=None,
                    state: dict | None = None, save_total_limit: int | None = None, runtime=None) -> Path:
    """Writes `checkpoint-<step>` atomically. Every rank calls it (collective under DeepSpeed)."""
    rt = runtime or _SingleProcess(optimizer, scheduler)
    root = Path(output_dir)
    final, tmp = root / f"checkpoint-{step}", root / f".checkpoint-{step}.tmp"
    if rt.is_main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    rt.barrier()
    try:
        rt.save_state(tmp, policy)
        torch.save(rng_state(), tmp / f"rng_state_{rt.rank}.pt")
        rt.barrier()
        if rt.is_main:
            info = {"global_step": step, "world_size": rt.world_size, **(state or {})}
            _write_json(tmp / STATE_FILE, info)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(root)
    except BaseException:
        if rt.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if rt.is_main and save_total_limit:
        run_id = (state or {}).get("tracker", {}).get("run_id")
        own = [p for p in list_checkpoints(root) if _run_id(p) == run_id]
        for old in own[:-save_total_limit]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    rt.barrier()
    return final


def load_checkpoint(path: str | Path, policy, optimizer=None, scheduler=None, runtime=None) -> dict:
    """Restores weights, optimizer, scheduler and this rank's generators; returns `trainer_state.json`."""
    rt = runtime or _SingleProcess(optimizer, scheduler)
    path = Path(path)
    info = json.loads((path / STATE_FILE).read_text())
    if info.get("world_size", 1) != rt.world_size and (path / "deepspeed").exists():
        raise ValueError(f"{path} was written by {info['world_size']} processes and this run has {rt.world_size}; "
                         "DeepSpeed ZeRO shards need the same number of processes to resume")
    rt.load_state(path, policy)
    rng_file = path / f"rng_state_{rt.rank}.pt"
    if not rng_file.exists():
        rng_file = path / "rng_state_0.pt"
    set_rng_state(torch.load(rng_file, weights_only=True))
    return info


def _run_id(path: Path) -> str | None:
    try:
        return json.loads((path / STATE_FILE).read_text()).get("tracker", {}).get("run_id")
    except (OSError, ValueError):
        return "<unreadable>"  # never equal to a run's id: a damaged checkpoint is left alone


def _write_json(path: Path, data: dict) -> None:
    with open(path, "w") as f:
        f.write(json.dumps(data, indent=1))
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
