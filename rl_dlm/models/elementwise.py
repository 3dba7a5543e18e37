"""The blocks' element-wise steps (RMSNorm with its scale, RoPE, SiLU·mul), eager or as fused compiled kernels.

Why
    At LLaDA-8B shape a third of a 64-row forward's GPU time is not GEMM (bench/RESULTS.md, the profile of the
    exact speed-ups). Most of it is these steps: the fp32 RMSNorm and RoPE factors multiplied with bf16
    activations fall into PyTorch's dynamic-casting element-wise kernel (134.6 of 869 ms on an H100), RoPE's
    casting adds another 39.9 ms, and SiLU and its product read strided halves of the packed gate/up output in
    generic kernels. Eager PyTorch has no faster order for them (rl_dlm/models/rope.py, rms_norm.py already take
    the fewest passes it allows); a fused kernel reads each input once and writes each output once.

What it does
    `EAGER` holds the model code's own functions. `compiled()` holds the same textbook functions under
    `torch.compile` (Inductor: one Triton kernel each on a GPU, C++ on a CPU), with `emulate_precision_casts`
    so that every intermediate is rounded to the activation dtype where eager PyTorch rounds it, and with
    automatic-dynamic shapes (`kernel`): a second batch size or canvas length compiles once more with rows and
    tokens symbolic, and every later one reuses those kernels, while the model's fixed sizes stay constants.
    `compile_elementwise(model)` switches every module of a native model (rl_dlm/models/llada.py, dream.py)
    that has an `elementwise` attribute. Autograd runs through the compiled functions (AOTAutograd derives the
    backward), so the update's forward, its recompute under gradient checkpointing and its backward are fused too.

Equality
    Forward outputs equal the eager ones to rounding: a fused kernel sums RMSNorm's mean of squares in another
    order (on the CPU the forwards came out bit-identical; on a GPU the order differs). The backward of
    RMSNorm's scale keeps fp32 where the eager graph rounds a product to bf16, so its input gradient differs in
    the last bf16 bits. tests/models/test_elementwise.py bounds both and checks a bf16 rollout's tokens on the
    CPU. On a GPU, rounding can flip a sampled token wherever two candidates nearly tie, and a flipped token
    changes the rest of its row: on random 8B weights, where nearly every position is such a tie, 18.4 % of a
    64-row dual-cache rollout's tokens came out equal; stage-4 log-probs differed by at most 0.098 nats. On a GPU
    the first call of a new shape class also autotunes the kernels (Triton times tile sizes), and a reduction
    with another tile sums in another order, so that call may round differently from later ones. It is a
    knob (`compiled_elementwise`, off by default) because it changes rounding and costs compiles per process (at
    a function's first sizes and once more at its second): a few seconds each on the CPU; the first 8B forward
    on an H100 took 6.4 s with it.

Measured on one H100 (bench/RESULTS.md, "Compiled kernels with automatic-dynamic shapes"), against eager in the
same run: the exact 64-row rollout 1.34× (58.7 → 78.5 % of the matmul rate), the dual-cache one with CUDA graphs
1.27× (51.7 → 65.4 %), batch size 1 with CUDA graphs 1.33× (112.6 → 150.0 tokens/s; "The rollout targets
again"), a 6-row checkpointed update only 1.03×, because at 6 rows the host, not the GPU, is the limit (which
`compiled_blocks`, rl_dlm/models/compiled_blocks.py, addresses). GDPO's 8B rollout batch took 39.9 s with the
knob (48.9 s eager in an earlier run on the same kind of card). With every dimension symbolic (`dynamic=True`)
the two rollouts had gained only 1.15× and 1.18×.

    from rl_dlm.models.elementwise import compile_elementwise
    compile_elementwise(policy.model)   # every native block and norm uses the fused kernels from now on
"""
from __future__ import annotations

import functools
import importlib.util
import os
import shutil
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from rl_dlm.models.rms_norm import normalize
from rl_dlm.models.rope import apply_rope

__all__ = ["EAGER", "Elementwise", "check_compilable", "compile_elementwise", "compiled", "compiled_modules", "kernel",
           "textbook_norm", "textbook_rope"]


@dataclass(frozen=True)
class Elementwise:
    """norm(x, weight, eps) = weight · RMSNorm(x); rope(t, cos, sin, full_precision) rotates half and half;
    silu_mul(gate, up) = SiLU(gate) · up."""

    name: str
    norm: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
    rope: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], torch.Tensor]
    silu_mul: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _eager_norm(x, weight, eps):
    return weight * normalize(x, eps)


def _silu_mul(gate, up):
    return F.silu(gate) * up


EAGER = Elementwise("eager", _eager_norm, apply_rope, _silu_mul)


# The textbook code the kernels are generated from: each line is what the official models compute (also the
# code before rl_dlm/models/rope.py and rms_norm.py took fewer passes: bench/previous_paths.py times it).
def textbook_norm(x, weight, eps):
    h = x.float()
    return weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def textbook_rope(t, cos, sin, full_precision=True):
    dtype = torch.float32 if full_precision else t.dtype
    t_, cos, sin = t.to(dtype), cos.to(dtype), sin.to(dtype)
    half = t.shape[-1] // 2
    rotated = torch.cat((-t_[..., half:], t_[..., :half]), dim=-1)
    return (t_ * cos + rotated * sin).to(t.dtype)


# Each function is compiled once or twice (`kernel`) per combination dynamo guards on (dtype, gradient mode,
# autocast, a dimension of size 1, RoPE's precision flag): a run meets a handful, a test process more. Beyond
# the limit dynamo runs the function eagerly (a warning, the same results to rounding), never a failed run:
# hence no `fullgraph=True`.
RECOMPILE_LIMIT = 64


@functools.cache
def compiled() -> Elementwise:
    """The fused kernels (compiled lazily, at each function's first call; one set per process)."""
    import torch._dynamo

    # dynamo's limit is per function and process-wide; raising it leaves other compiled code as it was
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)

    return Elementwise("compiled", kernel(textbook_norm), kernel(textbook_rope), kernel(_silu_mul))


def kernel(fn: Callable) -> Callable:
    """`fn` under torch.compile as the knob compiles it. Shapes are automatic-dynamic (torch.compile's default,
    not `dynamic=True`): a function is compiled for the sizes of its first call, and at a call with other sizes
    once more with only the dimensions that changed (rows, tokens) symbolic. Heads, head and hidden sizes stay
    constants, so a kernel's index arithmetic divides by constants, not by sizes read at run time: with every
    dimension symbolic the RoPE kernel ran at 1.73 ms per call at 64 rows of the 8B shape on an H100, with
    only rows and tokens symbolic at 0.22 ms (the copy rate allows 0.16; bench/elementwise_kernels.py)."""
    return torch.compile(fn, options={"emulate_precision_casts": True})


def check_compilable(device: str | torch.device, knob: str = "compiled_elementwise") -> None:
    """Raises ValueError, before any model loads, where Inductor cannot build the kernels: a GPU needs Triton, a
    CPU a C++ compiler (`CXX`, or g++ / clang++ / c++ on the PATH). `knob` names the setting in the message."""
    kind = torch.device(device).type
    if kind == "cuda" and importlib.util.find_spec("triton") is None:
        raise ValueError(f"{knob}=true needs Triton on a GPU (pip install triton, the version your torch names); "
                         f"or set {knob}=false")
    if kind == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX"), "g++", "clang++", "c++") if c):
        raise ValueError(f"{knob}=true needs a C++ compiler on the CPU (set CXX, or install g++); or set {knob}=false")


def compiled_modules(model: nn.Module) -> list[nn.Module]:
    """The modules whose element-wise steps `compile_elementwise` switches (those with an `elementwise`)."""
    return [m for m in model.modules() if isinstance(getattr(m, "elementwise", None), Elementwise)]


def compile_elementwise(model: nn.Module, enabled: bool = True) -> int:
    """Points every native block and norm of `model` at the fused kernels (or, with enabled=False, back to its
    class's default, `EAGER`); returns how many modules it switched. A model of another library has none: it
    runs as it is."""
    modules = compiled_modules(model)
    for module in modules:
        if enabled:
            module.elementwise = compiled()
        else:
            module.__dict__.pop("elementwise", None)
    return len(modules)
