"""Where the loop runs: one process, or N processes under DeepSpeed ZeRO-2/3 through accelerate.

The loop talks to a `Runtime` and never to torch.distributed or DeepSpeed directly:

    runtime.rank, runtime.world_size, runtime.is_main
    with runtime.gathered(policy): ...       stages 1, 2b, 4: under ZeRO-3 the full weights, gathered once per stage
    runtime.gather(t)                        stage 3: a per-rank [n, ...] tensor → [world·n, ...] in rank order
    runtime.backward(loss)                   stage 5: accumulate gradients (any number of calls per step)
    runtime.step() -> grad_norm, applied     stage 6: clip, optimizer step, scheduler step, zero grad
    runtime.mean(metrics)                    metrics averaged over ranks (every key any rank reports)
    runtime.any(flag)                        whether any rank's flag is set (a stop every rank must agree on)
    runtime.save_state(dir) / load_state(dir)   weights, optimizer and scheduler (`checkpoint.py` adds the rest)
    runtime.save_adapter(dir, policy)        the LoRA adapter in peft format, for serving

How work is split (`rank_share`): every rank draws the same global batch of
`per_device_train_batch_size × gradient_accumulation_steps × world_size / num_generations` prompts, expands it to
rows (each prompt G times, a group's rows contiguous) and keeps rows [rank·n, (rank+1)·n). A group may span ranks,
so rewards and group ids are all-gathered before the advantage, which then equals the single-process one. Row seeds
are global row indices, so a row's rollout and masks do not depend on the number of ranks.

DeepSpeed facts relied on (tests/test_distributed.py runs them on CPU):
- on CPU the process group is gloo (`InitProcessGroupKwargs(backend="gloo")`), and a torch optimizer needs
  `zero_allow_untested_optimizer` (no fused-Adam JIT);
- ZeRO-3 aborts at exit unless `engine.destroy()` then `destroy_process_group()` run: `close()` does both, and is
  registered with atexit;
- the loop owns gradient accumulation (`managed_gradient_accumulation: false`): `backward` only accumulates, each
  `engine.step()` is a boundary that reduces and updates, and DeepSpeed does not rescale the loss
  (`scale_wrt_gas=False`; the loop already divides by the number of micro-batches). So a stage may call backward
  any number of times per step (once per group of views, say). `gradient_clipping` is `max_grad_norm`.
- a step whose gradient norm is not finite is an overflow: the ZeRO optimizer all-reduces the check, discards the
  gradients on every rank, and the engine skips the scheduler step (`was_step_applied()` is False). A non-finite
  loss is back-propagated as NaN (`poisoned`), so it always reaches that check and never half-updates a step.

Launching (see docs/distributed.md):

    torchrun --nproc_per_node 2 -m rl_dlm.cli train deepspeed=zero2 ...
    accelerate launch --config_file conf/accelerate/zero3.yaml -m rl_dlm.cli train deepspeed=zero3 ...
"""
from __future__ import annotations

import atexit
import contextlib
import copy
import json
import math
import os
from pathlib import Path

import torch
from torch import Tensor

from rl_dlm.checkpoint import load_local_state, save_local_state
from rl_dlm.resources import ROOT

CONF_DIR = ROOT / "conf" / "deepspeed"


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def default_device() -> torch.device:
    """This process's GPU (`cuda:LOCAL_RANK`) when there is one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def rank_share(num_prompts: int, group_size: int, rows_per_rank: int, rank: int) -> tuple[int, list[int]]:
    """This rank's part of a global prompt batch: (index of its first prompt, rows it takes of each of its prompts).

    Rows [rank·n, (rank+1)·n) of the expanded batch; with one rank: (0, [G] · B)."""
    lo, hi = rank * rows_per_rank, (rank + 1) * rows_per_rank
    if hi > num_prompts * group_size:
        raise ValueError(f"{num_prompts} prompts × {group_size} generations cannot fill rows [{lo}, {hi}) of rank {rank}")
    first, last = lo // group_size, (hi - 1) // group_size
    counts = [min(hi, (p + 1) * group_size) - max(lo, p * group_size) for p in range(first, last + 1)]
    return first, counts


def poisoned(loss: Tensor) -> Tensor:
    """A non-finite loss is multiplied by NaN: every gradient it reaches is then NaN (0·NaN is NaN), so `step()`
    discards the whole step. Every rank still runs the same backward passes, so DeepSpeed's collectives match."""
    return loss if bool(torch.isfinite(loss)) else loss * math.nan


class LocalRuntime:
    """One process: plain torch. What the loop did before there was a Runtime, operation for operation."""

    rank, world_size, is_main = 0, 1, True

    def __init__(self, params, optimizer, scheduler, max_grad_norm: float | None, backward=Tensor.backward):
        self.params, self.optimizer, self.scheduler = params, optimizer, scheduler
        self.max_grad_norm, self._backward = max_grad_norm, backward

    def gathered(self, policy):
        return contextlib.nullcontext()

    def gather(self, t: Tensor) -> Tensor:
        return t

    def backward(self, loss: Tensor) -> None:
        self._backward(poisoned(loss))

    def step(self) -> tuple[float, bool]:
        """(gradient norm, applied): a non-finite norm discards the step, as DeepSpeed does (the scheduler waits)."""
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm or math.inf))
        applied = math.isfinite(grad_norm)
        if applied:
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm, applied

    def mean(self, metrics: dict) -> dict:
        return metrics

    def any(self, flag: bool) -> bool:
        return flag

    def barrier(self) -> None:
        pass

    def save_state(self, path: Path, policy) -> None:
        save_local_state(path, policy, self.optimizer, self.scheduler)

    def save_adapter(self, path: Path, policy) -> None:
        policy.model.save_pretrained(path)
        policy.tokenizer.save_pretrained(path)

    def load_state(self, path: Path, policy) -> None:
        load_local_state(path, policy, self.optimizer, self.scheduler)

    def close(self) -> None:
        pass


class DeepSpeedRuntime:
    """N processes, one DeepSpeed engine each (ZeRO-2 or ZeRO-3), set up by accelerate."""

    def __init__(self, accelerator, engine, policy):
        import torch.distributed as dist

        self.accelerator, self.engine, self.dist = accelerator, engine, dist
        self.rank, self.world_size = accelerator.process_index, accelerator.num_processes
        self.is_main = accelerator.is_main_process
        self.stage = engine.zero_optimization_stage()
        policy.model = engine  # forwards go through the engine (ZeRO-3 fetches parameters in its hooks)
        self._closed = False
        atexit.register(self.close)

    @contextlib.contextmanager
    def gathered(self, policy):
        """ZeRO-3: gather every parameter once and run the no-grad passes inside (the rollout's denoising steps,
        a refiner's regeneration, the old and reference log-probs) on the bare module without the fetch hooks
        (TRL's `unwrap_model_for_generation`), instead of an all-gather per layer per forward. Costs the full
        weights on every GPU for the stage; the update keeps the sharded engine (its gradients need the hooks)."""
        if self.stage != 3:
            yield
            return
        import deepspeed

        offload = getattr(self.engine.optimizer, "parameter_offload", self.engine.optimizer)
        module = self.engine.module
        with deepspeed.zero.GatheredParameters(list(module.parameters())):
            for p in module.parameters():
                p.ds_active_sub_modules.clear()
            for hook in [*offload.forward_hooks, *offload.backward_hooks]:
                hook.remove()
            offload.forward_hooks, offload.backward_hooks = [], []
            policy.model = module
            try:
                yield
            finally:
                policy.model = self.engine
                coordinator = getattr(offload, "param_coordinator", None)
                if coordinator is not None and not coordinator.is_invalid_trace():
                    coordinator._invalidate_trace()
                offload._register_deepspeed_module(offload.module)

    def gather(self, t: Tensor) -> Tensor:
        local = t.to(self.accelerator.device).contiguous()
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        self.dist.all_gather(parts, local)
        return torch.cat(parts).to(t.device)

    def backward(self, loss: Tensor) -> None:
        self.engine.backward(poisoned(loss), scale_wrt_gas=False)

    def step(self) -> tuple[float, bool]:
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return (math.nan if norm is None else float(norm)), self.engine.was_step_applied()

    def mean(self, metrics: dict) -> dict:
        every = [None] * self.world_size
        self.dist.all_gather_object(every, metrics)
        keys = list(dict.fromkeys(k for m in every for k in m))
        return {k: sum(m[k] for m in every if k in m) / sum(k in m for m in every) for k in keys}

    def any(self, flag: bool) -> bool:
        t = torch.tensor([float(flag)], device=self.accelerator.device)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        self.dist.barrier()

    def save_state(self, path: Path, policy) -> None:
        """DeepSpeed's own sharded checkpoint (optimizer partitions, per rank; frozen base weights left out) plus the
        LoRA adapter in peft format for serving, gathered from the ZeRO-3 shards on every rank, written by rank 0."""
        self.engine.save_checkpoint(str(path), tag="deepspeed", save_latest=False, exclude_frozen_parameters=True)
        self.save_adapter(path, policy)

    def save_adapter(self, path: Path, policy) -> None:
        """Collective: the peft adapter gathered from the ZeRO-3 shards, written by the main process."""
        with self.full_parameters(trainable_only=True):
            if self.is_main:
                self.engine.module.save_pretrained(path)
                policy.tokenizer.save_pretrained(path)
        self.barrier()

    def load_state(self, path: Path, policy) -> None:
        load_path, _ = self.engine.load_checkpoint(str(path), tag="deepspeed", load_module_strict=False,
                                                   load_optimizer_states=True, load_lr_scheduler_states=True)
        if load_path is None:
            raise FileNotFoundError(f"{path} has no DeepSpeed state (deepspeed/); was it written by a 1-process run?")

    def full_parameters(self, trainable_only: bool = False):
        if self.stage != 3:
            return contextlib.nullcontext()
        import deepspeed

        params = [p for p in self.engine.module.parameters() if p.requires_grad or not trainable_only]
        return deepspeed.zero.GatheredParameters(params)

    def close(self) -> None:
        """ZeRO-3 needs `engine.destroy()` before the process group goes, or it aborts at exit."""
        if self._closed:
            return
        self._closed = True
        self.engine.destroy()
        if self.dist.is_initialized():
            self.dist.destroy_process_group()


def deepspeed_config(spec, args, world_size: int) -> dict:
    """A DeepSpeed config from `spec` (a dict, a name in conf/deepspeed/, or a .json/.yaml path), with the batch,
    precision and clipping keys filled from the trainer's config so there is one source of truth for them."""
    if isinstance(spec, str):
        path = CONF_DIR / f"{spec}.yaml" if (CONF_DIR / f"{spec}.yaml").exists() else Path(spec)
        if not path.exists():
            known = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
            raise ValueError(f"deepspeed={spec!r} is neither one of {known} nor a config file path")
        if path.suffix == ".json":
            spec = json.loads(path.read_text())
        else:
            import yaml  # plain YAML, no Hydra needed (GPU images often lack it)

            spec = yaml.safe_load(path.read_text())
    cfg = copy.deepcopy(dict(spec))
    if "zero_optimization" not in cfg:
        raise ValueError("the deepspeed config has no zero_optimization section; use deepspeed=zero2 or zero3")
    cfg.update(
        train_micro_batch_size_per_gpu=args.per_device_train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        train_batch_size=args.per_device_train_batch_size * args.gradient_accumulation_steps * world_size,
        gradient_clipping=float(args.max_grad_norm or 0.0),
        bf16={"enabled": bool(args.bf16)},
        fp16={"enabled": False},
    )
    cfg["managed_gradient_accumulation"] = False
    cfg.setdefault("zero_allow_untested_optimizer", True)
    cfg.setdefault("steps_per_print", 1 << 30)
    return cfg


def make_runtime(args, policy, optimizer, scheduler):
    """The runtime for this process: `LocalRuntime` unless `args.deepspeed` names a config."""
    spec = getattr(args, "deepspeed", None)
    if not spec:
        if env_world_size() > 1:
            raise ValueError(f"WORLD_SIZE={env_world_size()} but no deepspeed config: multi-process runs need "
                             "deepspeed=zero2 or deepspeed=zero3")
        return LocalRuntime(policy.trainable_parameters(), optimizer, scheduler, args.max_grad_norm)
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

    cfg = deepspeed_config(spec, args, env_world_size())
    # `accelerate launch` lists its config file's DeepSpeed fields here, and accelerate then refuses a plugin built
    # from a full config; ours (conf/deepspeed + the trainer's keys) is the one source of truth.
    os.environ.pop("ACCELERATE_CONFIG_DS_FIELDS", None)
    handlers = [] if torch.cuda.is_available() else [InitProcessGroupKwargs(backend="gloo")]
    accelerator = Accelerator(deepspeed_plugin=DeepSpeedPlugin(hf_ds_config=cfg),
                              mixed_precision="bf16" if args.bf16 else "no", kwargs_handlers=handlers)
    if accelerator.process_index:  # distinct dropout streams per rank (rank 0 keeps the single-process one)
        torch.manual_seed(torch.initial_seed() + accelerator.process_index)
    engine, _, _ = accelerator.prepare(policy.model, optimizer, scheduler)
    return DeepSpeedRuntime(accelerator, engine, policy)
