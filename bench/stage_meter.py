"""Per-stage seconds, peak GPU memory, tokens and FLOPs of a real trainer's run, split by rollout batch.

`StageMeter(trainer)` attaches to a built trainer without changing the loop's flow:
- it wraps the trainer's tracker: `tracker.stage(name)` still times the stage for the tracker's own metrics, and
  the meter also synchronises CUDA at the stage's edges (so GPU work is charged to the stage that queued it),
  accumulates the stage's seconds and records its peak memory; `tracker.count` is recorded per stage too;
- it times each refiner of `trainer.components.refiners` (IGPO's hints, MDPO's per-step rewards) as a stage
  `refine` nested in `reward` (reported exclusively: reward = decoding and scoring, refine = the rest);
- a forward pre-hook on the input embedding counts every forward the stages run (rows × tokens), and one on the
  LM head counts the positions it actually projects;
- `on_step` (the `progress` callback of `trainer.train`) closes a rollout batch every `num_iterations` optimizer
  steps.

FLOP count (stated here, used by bench/rl_step.py):
- N_body = non-embedding parameters without the LM head (LoRA adapters included while they are active: not
  under `policy.reference()`, not merged); N_head = V·d. The embedding lookup costs nothing.
- A forward of R rows × T tokens costs 2·N_body·R·T + 2·N_head·R·U, where U = the positions whose logits are
  used: the completion (L) for scoring (stages old_logp and update), the sampler's window for denoising (stages
  rollout and refine: the block of a semi-AR sampler, the completion otherwise), at most T. What the LM head
  projects beyond U is reported as `head_positions_computed` but not counted as useful work. (IGPO's entropy
  pass in `refine` reads a whole completion but is counted with the window: one forward per swapped-in row,
  against the hinted rollout's one per step.)
- A forward with gradients on (stage 5) adds its backward: input gradients 2·N_body·R·T + 2·N_head·R·U, weight
  gradients 2·N_trainable·R·T (the LoRA adapters, or every body weight when the base is trained; + 2·N_head·R·U
  when the head is trained), and, with gradient checkpointing, the recomputed forward 2·N_body·R·T. So a LoRA
  update with checkpointing counts ≈ 6·N·tokens (+ 2·N_lora), a full fine-tune 8·N·tokens.
- Attention scores (4·T·d per token and layer, ≈ 2 % at T = 456) and element-wise work are not counted.
"""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict

import torch

SAMPLING_STAGES = ("rollout", "refine")


def _numel(p) -> int:
    return int(getattr(p, "ds_numel", 0) or p.numel())  # ZeRO-3 partitions report their full size in ds_numel


def _new_stage() -> dict:
    return defaultdict(float)


class StageMeter:
    def __init__(self, trainer):
        self.trainer, self.tracker, self.policy = trainer, trainer.tracker, trainer.policy
        args = trainer.args
        self.num_iterations = args.num_iterations
        self.gen_length = args.max_completion_length
        self.checkpointing = bool(args.gradient_checkpointing)
        sampler = trainer.components.sampler
        self.window = getattr(sampler, "block_length", None) or getattr(sampler, "gen_length", self.gen_length)
        self.cuda = self.policy.device.type == "cuda"
        model = self.policy.model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        emb, head = base.get_input_embeddings(), base.get_output_embeddings()
        self.d_model = emb.embedding_dim
        skip = {id(emb.weight)} | ({id(head.weight)} if head is not None else set())
        self.n_base = self.n_lora = self.n_trainable_body = 0
        for name, p in model.named_parameters():
            if id(p) in skip:
                continue
            n = _numel(p)
            if "lora_" in name:
                self.n_lora += n
            else:
                self.n_base += n
            self.n_trainable_body += n if p.requires_grad else 0
        self.n_head = _numel(head.weight) if head is not None else _numel(emb.weight)
        self.head_trainable = head is not None and head.weight.requires_grad
        self.n_embedding = _numel(emb.weight)
        self._lora_layer = _first_adapter_layer(model)
        self.stack: list[str] = []
        self.batches: list[dict] = []
        self._last_step = 0
        self.on_batch = None  # called with the meter after each rollout batch (e.g. to save partial results)
        self._new_batch()
        self.tracker.stage = self._wrap_stage(self.tracker.stage)
        self.tracker.count = self._wrap_count(self.tracker.count)
        trainer.components.refiners = [_TimedRefiner(r, self.tracker) for r in trainer.components.refiners]
        self._hooks = [emb.register_forward_pre_hook(self._on_forward)]
        self.policy.graphs = _CountedGraphs(self.policy.graphs, self)
        if head is not None:
            self._hooks.append(head.register_forward_pre_hook(self._on_head))

    # -- parameters ------------------------------------------------------------------------------------------
    def params(self) -> dict:
        return {"body": self.n_base, "lora": self.n_lora, "head": self.n_head, "embedding": self.n_embedding,
                "trainable_body": self.n_trainable_body, "head_trainable": self.head_trainable,
                "d_model": self.d_model, "rollout_window": self.window, "gradient_checkpointing": self.checkpointing}

    def _lora_active(self) -> bool:
        layer = self._lora_layer
        return layer is not None and not layer.disable_adapters and not layer.merged

    # -- hooks -----------------------------------------------------------------------------------------------
    def _stage_name(self) -> str:
        return self.stack[-1] if self.stack else "outside_stages"

    def _on_forward(self, module, args):
        ids = args[0] if args else None
        if ids is None or ids.dim() != 2:
            return
        rows, tokens = ids.shape
        stage = self._stage_name()
        n_body = self.n_base + (self.n_lora if self._lora_active() else 0)
        used = min(tokens, self.window if stage in SAMPLING_STAGES else self.gen_length)
        body, head = 2.0 * n_body * rows * tokens, 2.0 * self.n_head * rows * used
        flops = body + head
        if torch.is_grad_enabled():  # back-propagated (stage 5): input and weight gradients, recompute
            flops += body + head + 2.0 * self.n_trainable_body * rows * tokens
            flops += head if self.head_trainable else 0.0
            flops += body if self.checkpointing else 0.0
        s = self.current[stage]
        s["flops"] += flops
        s["forwards"] += 1
        s["rows_forwarded"] += rows
        s["tokens_forwarded"] += rows * tokens
        s["head_positions_used"] += rows * used

    def _on_head(self, module, args):
        hidden = args[0]
        self.current[self._stage_name()]["head_positions_computed"] += hidden.numel() // hidden.shape[-1]

    # -- stage timing ----------------------------------------------------------------------------------------
    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def _flush_peak(self):
        if not self.cuda:
            return
        peak = torch.cuda.max_memory_allocated()
        for name in self.stack:
            self.current[name]["peak_bytes"] = max(self.current[name]["peak_bytes"], peak)
        self.peak_bytes = max(self.peak_bytes, peak)
        self.peak_reserved_bytes = max(self.peak_reserved_bytes, torch.cuda.max_memory_reserved())
        torch.cuda.reset_peak_memory_stats()

    def _wrap_stage(self, original):
        @contextlib.contextmanager
        def stage(name: str):
            self._sync()
            self._flush_peak()
            self.stack.append(name)
            start = time.perf_counter()
            try:
                with original(name):
                    yield
                    self._sync()
            finally:
                elapsed = time.perf_counter() - start
                self._flush_peak()
                self.stack.pop()
                self.current[name]["seconds"] += elapsed
                if self.stack:  # reported exclusively: the parent's own time excludes its nested stages
                    self.current[self.stack[-1]]["nested_seconds"] += elapsed
        return stage

    def _wrap_count(self, original):
        def count(stage: str, tokens: float):
            self.current[stage]["tracker_tokens"] += tokens
            return original(stage, tokens)
        return count

    # -- rollout batches -------------------------------------------------------------------------------------
    def _new_batch(self):
        self.current: dict[str, dict] = defaultdict(_new_stage)
        self.peak_bytes = self.peak_reserved_bytes = 0
        self._batch_start = time.perf_counter()

    def on_step(self, step: int, info: dict | None = None):
        if step <= self._last_step or step % self.num_iterations:  # train() also reports its start step
            return
        self._last_step = step
        self._sync()
        self._flush_peak()
        wall = time.perf_counter() - self._batch_start
        stages = {}
        for name, s in self.current.items():
            s = dict(s)
            s["seconds"] = s.get("seconds", 0.0) - s.pop("nested_seconds", 0.0)
            s["peak_gib"] = s.pop("peak_bytes", 0.0) / 2**30
            stages[name] = s
        self.batches.append({"wall_seconds": wall, "optimizer_steps": self.num_iterations,
                             "peak_gib": self.peak_bytes / 2**30, "peak_reserved_gib": self.peak_reserved_bytes / 2**30,
                             "stages": stages})
        self._new_batch()
        if self.on_batch is not None:
            self.on_batch(self)

    def close(self):
        for hook in self._hooks:
            hook.remove()
        if isinstance(self.policy.graphs, _CountedGraphs):
            self.policy.graphs = self.policy.graphs.graphs


def _first_adapter_layer(model):
    """A peft adapter layer (its `disable_adapters` / `merged` tell whether the adapters run), or None."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        return None
    return next((m for m in model.modules() if isinstance(m, BaseTunerLayer)), None)


class _TimedRefiner:
    """A refiner run inside the tracker's `refine` stage (nested in `reward`)."""

    def __init__(self, refiner, tracker):
        self.refiner, self.tracker = refiner, tracker

    def __call__(self, *args, **kwargs):
        with self.tracker.stage("refine"):
            return self.refiner(*args, **kwargs)


COUNTED = ("flops", "forwards", "rows_forwarded", "tokens_forwarded", "head_positions_used",
           "head_positions_computed")


class _CountedGraphs:
    """The policy's CUDA graphs (rl_dlm/models/cuda_graphs.py), counted: a replay runs no Python, so no hook
    sees it; it is charged what the hooks counted per forward on the key's last call that ran Python (its eager
    first call, or its capture, whose one recorded pass the GPU then runs as the replay)."""

    def __init__(self, graphs, meter: StageMeter):
        self.graphs, self.meter = graphs, meter
        self.per_forward: dict = {}

    def __getattr__(self, name):
        return getattr(self.graphs, name)

    def __call__(self, key, forward, *inputs):
        shape_key = (key, tuple(None if t is None else tuple(t.shape) for t in inputs))
        counts = self.meter.current[self.meter._stage_name()]
        before = {k: counts[k] for k in COUNTED}
        out = self.graphs(key, forward, *inputs)
        delta = {k: counts[k] - before[k] for k in COUNTED}
        if delta["forwards"]:  # eager, or captured now: the hooks ran
            self.per_forward[shape_key] = {k: v / delta["forwards"] for k, v in delta.items()}
        elif shape_key in self.per_forward:  # replayed
            for k, v in self.per_forward[shape_key].items():
                counts[k] += v
        return out


def matmul_tflops(device: torch.device, size: int = 8192, dtype=torch.bfloat16, warmup: int = 3,
                  repeats: int = 10) -> dict:
    """The rate of one size³ matrix product (mean of `repeats` after `warmup`), in TFLOP/s."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(warmup):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / repeats
    return {"tflops": 2 * size**3 / seconds / 1e12, "size": size, "dtype": str(dtype).replace("torch.", ""),
            "repeats": repeats, "device": str(device)}


def sustained_matmul_tflops(device: torch.device, seconds: float = 4.0, size: int = 8192,
                            dtype=torch.bfloat16) -> float:
    """The size³ matrix product's rate over the last quarter of `seconds` of back-to-back products, in TFLOP/s.
    `matmul_tflops` times a burst of ten (14 ms of an H100) at the highest clock; minutes of dense work draw
    the card's power limit and run at a lower clock (an H100 at 700 W: a median 1 575 to 1 800 MHz under load
    against its 1 980), so this is the rate a long rollout's GEMMs can have."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    marks = [(time.perf_counter(), 0)]  # (time, products done) after each batch of 8
    while marks[-1][0] - marks[0][0] < seconds or len(marks) < 3:
        for _ in range(8):
            a @ b
        sync()
        marks.append((time.perf_counter(), marks[-1][1] + 8))
    t0, n0 = next(m for m in marks[1:] if m[0] - marks[0][0] >= 0.75 * seconds or m is marks[-2])
    t1, n1 = marks[-1]
    return 2 * size**3 * (n1 - n0) / (t1 - t0) / 1e12
