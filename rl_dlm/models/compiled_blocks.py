"""The native models' block loop, with each block's pass under autograd optionally compiled as one graph.

Why
    A checkpointed LoRA r 128 update of 6 rows × 456 tokens at LLaDA-8B shape is host-bound: the GPU waits on
    Python between small kernels (peft's adapter path, the element-wise steps, checkpointing's bookkeeping). On
    an H100, in one run, it ran at 35.9 % of the bf16 matmul rate eager, 35.8 % with the compiled element-wise
    kernels alone (`compiled_elementwise`), and 58.9 % with every block's pass compiled whole, 1.64× faster; in
    `bench/rl_step.py` the diffu-GRPO update went from 37 % to 62 % and GDPO's from 52 % to 59 % (bench/RESULTS.md,
    "Whole blocks compiled"). A no-grad pass is a different case: the exact 64-row rollout ran at 55.4 % with
    compiled blocks, against 78.9 % with the compiled element-wise kernels alone and 58.7 % eager (one run).

What it does
    `run_blocks` is the loop both native models (rl_dlm/models/llada.py, dream.py) run their blocks in.
    `compile_blocks(model)` sets their `compiled_block_call` to `call_block` under torch.compile (`kernel`:
    automatic-dynamic shapes, the eager rounding of every intermediate) and switches the element-wise steps to
    the compiled kernels (`compile_elementwise`: the eager RoPE writes with `out=`, which would split the graph).
    The blocks share their code and their parameters are graph inputs, so one graph serves every block of a
    pass: two compiles per kind of pass (its first sizes, then rows and tokens symbolic), not one per block.
    Three kinds of pass run the blocks eagerly (with the compiled element-wise kernels):
    - a pass without autograd (rollouts, old/ref log-probs): at many rows the GPU, not the host, is the limit,
      and there the compiled element-wise kernels alone measured faster (above);
    - a block with a KV cache (it reads the cache of its own layer index: one compile per block);
    - the last block when it runs only the kept query positions (the slice's start, the prompt length, would be
      a constant of the graph: one compile per prompt length).
    The compiled function calls the block itself, gradient checkpointing included (transformers'
    `GradientCheckpointingLayer.__call__`), so the recompute is part of the compiled graph's backward. Compiling
    each block in place (`nn.Module.compile`) leaves the checkpoint eager around compiled code, and its recompute
    then failed checkpointing's metadata check on an H100 (bench/results/h100_compiled_blocks_2026-12-05/profile).

Equality
    In fp32 on the CPU the logits and LoRA gradients equal the eager ones to float rounding
    (tests/models/test_compiled_blocks.py; in bf16 to bf16 rounding). In bf16 Inductor fuses the block's
    element-wise steps and sums in its own order: on an H100, with every block's pass compiled (no-grad ones
    too), stage-4 log-probs of random 8B weights differed by at most 0.22 nats from eager (0.10 with the compiled
    element-wise kernels alone), where random weights make nearly every position a near tie.
    It is a knob (`compiled_blocks`, off by default; implies the compiled element-wise kernels) because it
    changes rounding and compiles at the first passes (tens of seconds at 8B).

    from rl_dlm.models.compiled_blocks import compile_blocks
    compile_blocks(policy.model)   # every native model's blocks run compiled from the next forward on
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn

from rl_dlm.models.elementwise import compile_elementwise, compiled, kernel

__all__ = ["call_block", "compile_blocks", "compiled_call", "run_blocks"]


def call_block(block: nn.Module, x: torch.Tensor, **kwargs) -> torch.Tensor:
    """One block's pass: `block(x, **kwargs)`, checkpointing included when the block has it on."""
    return block(x, **kwargs)


@functools.cache
def compiled_call() -> Callable[..., torch.Tensor]:
    """`call_block` under torch.compile (one per process; compiled at the first call of each kind of pass)."""
    compiled()  # raises dynamo's per-function recompile limit as the element-wise kernels need
    return kernel(call_block)


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, *, rope, attn_mask, kv_cache, last_keep: slice | None,
               hidden_states: list | None, block_call: Callable | None) -> torch.Tensor:
    """x [B, L, d] through every block; the last block runs only the query positions `last_keep` (→ [B, |keep|,
    d]). `hidden_states`, when a list, receives each block's input. `block_call` (the model's
    `compiled_block_call`) runs the passes that compile once for all blocks (under autograd, without a KV cache
    or kept queries); None runs every block eagerly. In a rollout's forward a block may accumulate its residual
    sums into its input (`overwrite`, rl_dlm/models/fused_projections.py `add_projection`) where that input is an
    earlier block's output that nothing else reads: not the first block's (the caller's embeddings), nor a kept
    hidden state."""
    grad = torch.is_grad_enabled()
    compiling = block_call is not None and kv_cache is None and grad
    for i, block in enumerate(blocks):
        if hidden_states is not None:
            hidden_states.append(x)
        keep = last_keep if i == len(blocks) - 1 else None
        call = block_call if compiling and keep is None else call_block
        overwrite = i > 0 and hidden_states is None and not grad
        x = call(block, x, rope=rope, attn_mask=attn_mask, kv_cache=kv_cache, keep=keep, overwrite=overwrite)
    return x


def compile_blocks(model: nn.Module, enabled: bool = True) -> int:
    """Runs every native model inside `model` with compiled block passes and compiled element-wise kernels (or,
    with enabled=False, eager blocks; the element-wise kernels are left as they are). Returns how many models
    it switched: 0 for another library's model, which runs as it is."""
    models = [m for m in model.modules() if hasattr(type(m), "compiled_block_call")]
    for m in models:
        if enabled:
            m.compiled_block_call = compiled_call()
        else:
            m.__dict__.pop("compiled_block_call", None)
    if enabled and models:
        compile_elementwise(model)
    return len(models)
