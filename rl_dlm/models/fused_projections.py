"""Fused projection kernels: sibling projections as one GEMM (q/k/v, gate/up) and LoRA folded into fewer passes.

What it does
    A block's q, k and v projections (and its gate and up projections) all multiply the same normed states h.
    Where GEMMs are small, one [M, d] × [d, 3d] GEMM keeps the GPU busier than three [M, d] × [d, d] ones (more
    tiles per wave, one launch instead of three), and in the update one input-gradient GEMM replaces three.
    Measured on an H100 (bench/RESULTS.md): 1.44× at batch size 1 eager (1.03× with CUDA graphs), 7 % off a
    12-row LoRA forward; at 64 rows 3 % slower, since SiLU and its product then read strided halves of the
    packed output in PyTorch's generic element-wise kernels. `fuse_projections(model)` (`load_policy` calls it unless
    `fused_projections: false`) marks each projection a native model declares (`projection_groups`) and
    re-lays each group's weights (and biases) into one buffer, each projection's `weight` a view of its rows:
    the modules, their names, checkpoints and LoRA targets are unchanged (`q_proj` is still a module peft wraps).
    `project(h, *modules)` then runs a group as one GEMM where that is the same computation:
    - the base weights are still views of one buffer, in order (`.to()` onto another device or ZeRO-3
      partitioning undoes that; 4-bit weights are never packed): otherwise each module is called as before;
    - no base weight needs a gradient (frozen under LoRA, or no autograd), since the buffer is not a leaf;
    - each module is a plain `nn.Linear` or peft's LoRA `Linear` in its vanilla form (no DoRA-style variant, not
      merged while disabled), and none has hooks (ZeRO-3 and accelerate's offloading gather weights in them).
    Adapters are added to each projection's output as peft's forward adds them (`result + lora_B(lora_A(
    dropout(x))) * scaling`, adapter by adapter, peft's input cast, dropout masks drawn in the same order),
    with two changes:
    - a power-of-two scaling (α 64 / r 128 = 0.5, every recipe's) multiplies the rank-r activations instead of
      the [.., out] product, `lora_B(lora_A(x) · s)`: bit-identical (scaling by 2^k is exact and commutes with
      the GEMM's roundings), one elementwise pass over r instead of `out` columns, forward and backward;
    - outside autograd (rollouts, old and reference log-probs) lora_B's product is accumulated into the base
      output by its own GEMM (`addmm_`, β = 1): two passes over the output fewer per adapter.
    `project_one` gives the projections without a sibling (attention output, MLP down) the adapter path.
    `add_projection(x, h, module, overwrite)` is a residual connection, x + module(h). Where the caller owns x
    (`overwrite`: the blocks pass it for their own intermediate states and, through `run_blocks`, for the
    previous block's output), no autograd runs and the forward is a rollout's (inside `residual_sums_in_place()`,
    which `Policy.inference()` enters), the GEMM accumulates into x in place (β = 1), LoRA's lora_B product after
    it: one pass over the [M, d] residual stream in the GEMM's epilogue instead of an add kernel's three (read
    both, write the sum). At LLaDA-8B shape the 63 residual adds of a 64-row forward took 14.2 of its 646 ms on
    an H100; with the sums in the GEMM the exact 64-row rollout ran 1.02× faster, at 81.0 % of the matmul rate
    (bench/RESULTS.md, "Residual sums in the output projections' GEMM"). Scoring passes (old and reference
    log-probs) keep the adds: the old log-probs must equal the update's own (autograd) forward bit for bit, so
    that the importance ratio is exactly 1 at each rollout's first inner step (tests/test_ratio_first_step.py).
    A block running only kept queries (the last, before a sliced LM head) keeps the adds too: its input is a
    strided slice.

Exactness
    Each output element is the same dot product over d, and under autograd the LoRA terms are bit-identical to
    peft's; but a GEMM of another width may order its reduction differently, and the no-grad accumulation
    rounds base + LoRA once instead of twice (and a rollout's `add_projection` rounds residual + base once), so
    outputs agree to fp32 rounding in fp32 and to bf16 rounding in bf16, as a change of batch size does; sampled
    tokens are the same unless two candidates tie within that rounding. So the old log-probs (no grad) and the
    update's (autograd) of the same weights may differ by a rounding, as they already could when their
    micro-batch shapes differ. What a rollout records from its logits (MDPO's confidences, which weight its
    objective) moves by that rounding too. tests/models/test_fused_projections.py checks logits, gradients and
    rollouts against the modules called one by one, and the in-place residual against the add.
    `fused_projections: false` (RLConfig) or `unfuse_projections(model)` gives back that path bit for bit (the
    structural fingerprint of the six algorithms before fusion, bench/structural_fingerprint.py with
    `fused_projections=false`).

Why our own code: transformers fuses projections only in checkpoints that ship fused weights (Phi-3, GPT-2)
and peft adapts fused layers only as one module; LLaDA and Dream ship separate projections that users target
separately.

    fuse_projections(model)                       # once, after loading onto its device, before or after LoRA
    q, k, v = project(h, block.q_proj, block.k_proj, block.v_proj)
    out = project_one(att, block.attn_out)
    x = add_projection(x, act, block.ff_out, overwrite=True)   # x + ff_out(act), into x in a rollout's forward
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["add_projection", "fuse_projections", "project", "project_one", "residual_sums_in_place",
           "residuals_in_place", "unfuse_projections"]


def _base(module: nn.Module) -> nn.Module:
    return getattr(module, "base_layer", module)  # peft's LoRA layers keep the original Linear as `base_layer`


def _groups(model: nn.Module):
    """(parent, child names) for every group a native module declares in `projection_groups` (a one-name group
    is a projection with no sibling: attention output, MLP down)."""
    for parent in model.modules():
        for names in getattr(parent, "projection_groups", ()):
            yield parent, names


FUSED = "rl_dlm_fused"  # set on each base Linear that `project` may run its own way


def fuse_projections(model: nn.Module) -> int:
    """Marks every declared projection for `project`'s fused paths and re-lays each group's weights (and
    biases) into one buffer on their device; returns how many multi-projection groups were packed. Groups of
    anything but same-dtype, same-device plain `nn.Linear`s are left as they are (and unmarked). Extra memory:
    one group's weights for the moment of its copy."""
    packed = 0
    for parent, names in _groups(model):
        linears = [_base(getattr(parent, n)) for n in names]
        w0 = linears[0].weight
        if any(type(m) is not nn.Linear or m.weight.dtype != w0.dtype or m.weight.device != w0.device
               or m.in_features != linears[0].in_features or m.weight.is_meta for m in linears):
            continue
        for m in linears:
            setattr(m, FUSED, True)
        if len(linears) == 1:
            continue
        with torch.no_grad():
            for attr in ("weight", "bias"):
                tensors = [getattr(m, attr) for m in linears]
                if any(t is None for t in tensors):
                    continue
                buffer = torch.cat([t.detach() for t in tensors])
                row = 0
                for m, t in zip(linears, tensors):
                    getattr(m, attr).data = buffer[row:row + t.shape[0]]
                    row += t.shape[0]
        packed += 1
    return packed


def unfuse_projections(model: nn.Module) -> None:
    """The inverse of `fuse_projections`: every projection on weights of its own and called as a module (the code
    path before fusion, which `fused_projections: false` keeps)."""
    with torch.no_grad():
        for parent, names in _groups(model):
            for m in (_base(getattr(parent, n)) for n in names):
                if getattr(m, FUSED, False):
                    delattr(m, FUSED)
                for p in (m.weight, m.bias):
                    if p is not None:
                        p.data = p.data.clone()


def _stacked(tensors: list[torch.Tensor | None]) -> torch.Tensor | None:
    """The buffer rows the tensors occupy, in order, as one tensor; None if they are not consecutive views, or
    inside code that torch.compile traces: dynamo cannot read storage addresses, so a compiled block calls each
    projection as its module (the same values, up to the rounding of one GEMM against several)."""
    first = tensors[0]
    if torch.compiler.is_compiling():
        return None
    if first is None or not all(t is not None and t.is_contiguous() for t in tensors):
        return None
    storage, offset = first.untyped_storage().data_ptr(), first.storage_offset()
    for t in tensors:
        if (t.untyped_storage().data_ptr() != storage or t.storage_offset() != offset or t.dtype != first.dtype
                or t.shape[1:] != first.shape[1:]):
            return None
        offset += t.numel()
    rows = sum(t.shape[0] for t in tensors)
    return first.as_strided((rows, *first.shape[1:]), first.stride(), first.storage_offset())


def _adapter_terms(module: nn.Module):
    """The (dropout, lora_A, lora_B, scaling) terms peft's vanilla LoRA forward adds to the base output, in its
    order; [] for a plain Linear, a disabled or merged adapter; None when the module must be called as it is."""
    if type(module) is nn.Linear:
        return []
    from peft.tuners.lora.layer import Linear as LoraLinear

    if type(module) is not LoraLinear:
        return None
    if module.disable_adapters or module.merged:
        return None if module.disable_adapters and module.merged else []  # that case unmerges first
    terms = []
    for name in module.active_adapters:
        if name not in module.lora_A.keys():
            continue
        if name in module.lora_variant:  # DoRA and the like compute more than B·A·x
            return None
        terms.append((module.lora_dropout[name], module.lora_A[name], module.lora_B[name], module.scaling[name]))
    return terms


def _scale_first(lora_b: nn.Module, scaling: float) -> bool:
    """Whether `lora_B(a · s)` is bit for bit `lora_B(a) · s`: s a power of two (scaling is then exact and
    commutes with every rounding of the GEMM) and no bias in lora_B (peft's `lora_bias`)."""
    return math.frexp(scaling)[0] == 0.5 and getattr(lora_b, "bias", None) is None


def _with_adapters(module: nn.Module, result: torch.Tensor, x: torch.Tensor, terms) -> torch.Tensor:
    """peft's vanilla LoRA forward after its base layer: the same operations in the same order, except that
    - a power-of-two scaling multiplies the rank-r activations instead of the [.., out] product: the same values
      (`_scale_first`), one pass over r instead of `out` columns, forward and backward (α 64 / r 128 = 0.5);
    - outside autograd, `lora_B`'s product is accumulated into the base output by the GEMM itself
      (`_accumulated`): two passes over the output fewer, one rounding instead of two."""
    if not terms:
        return result
    dtype = result.dtype
    cast = getattr(module, "cast_input_dtype_enabled", True)  # peft.helpers.disable_input_dtype_casting
    for dropout, lora_a, lora_b, scaling in terms:
        if cast and x.dtype != lora_a.weight.dtype:
            x = x.to(lora_a.weight.dtype)
        a = lora_a(dropout(x))
        if _accumulated(result, a, lora_b, scaling):
            continue
        if _scale_first(lora_b, scaling):
            result = result + lora_b(a * scaling)
        else:
            result = result + lora_b(a) * scaling
    return result.to(dtype)


def _accumulated(result: torch.Tensor, a: torch.Tensor, lora_b: nn.Module, scaling: float) -> bool:
    """result += scaling · a @ lora_Bᵀ as one in-place GEMM (β = 1 in its epilogue), where that needs no autograd
    and result has a matrix view; False (nothing done) otherwise. lora_B's weight is cast to result's dtype, as
    autocast casts it for the module call."""
    if torch.is_grad_enabled() and (result.requires_grad or a.requires_grad or lora_b.weight.requires_grad):
        return False
    if a.dtype != result.dtype or getattr(lora_b, "bias", None) is not None or _hooked(lora_b):
        return False
    try:
        out2d = result.view(-1, result.shape[-1])
    except RuntimeError:  # not viewable as a matrix: the module path
        return False
    out2d.addmm_(a.reshape(-1, a.shape[-1]), lora_b.weight.to(result.dtype).t(), alpha=scaling)
    return True


def _hooked(module: nn.Module) -> bool:
    """Module hooks (ZeRO-3 gathering, accelerate offloading) must see the module called."""
    return bool(module._forward_hooks or module._forward_pre_hooks)


def project(h: torch.Tensor, *modules: nn.Module) -> tuple[torch.Tensor, ...]:
    """(m(h) for m in modules), as one GEMM over the packed weights where that is the same computation (see the
    module docstring); each output is a view of its columns of the packed output, or its own tensor. A single
    module (an output projection) runs its base layer as a module and its adapters as `_with_adapters` does."""
    linears = [_base(m) for m in modules]
    if not all(getattr(m, FUSED, False) for m in linears):
        return tuple(m(h) for m in modules)
    terms = [_adapter_terms(m) for m in modules]
    if any(t is None for t in terms) or any(_hooked(m) for m in modules):
        return tuple(m(h) for m in modules)
    if len(modules) == 1:
        return (_with_adapters(modules[0], linears[0](h), h, terms[0]),)
    grad = torch.is_grad_enabled()
    weight = _stacked([m.weight for m in linears])
    if (weight is None or any(_hooked(m) for m in linears)
            or (grad and any(m.weight.requires_grad for m in linears))):
        return tuple(m(h) for m in modules)
    biases = [m.bias for m in linears]
    bias = None
    if any(b is not None for b in biases):
        bias = _stacked(biases)
        if bias is None or (grad and any(b.requires_grad for b in biases)):
            return tuple(m(h) for m in modules)
    out = F.linear(h, weight, bias)
    pieces = out.split([m.out_features for m in linears], dim=-1)
    return tuple(_with_adapters(m, piece, h, t) for m, piece, t in zip(modules, pieces, terms))


def project_one(h: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """module(h) for a projection outside any group (attention output, MLP down), with its LoRA adapters added
    as `project` adds them."""
    return project(h, module)[0]


_in_place_depth = 0  # how many `residual_sums_in_place()` are open (a plain global: torch.compile reads it)


@contextlib.contextmanager
def residual_sums_in_place():
    """Inside: the native blocks' forwards without autograd accumulate residual sums into their inputs
    (`add_projection`). `Policy.inference()` (rollouts, evaluation) enters it."""
    global _in_place_depth
    _in_place_depth += 1
    try:
        yield
    finally:
        _in_place_depth -= 1


def residuals_in_place() -> bool:
    """Whether a forward without autograd may accumulate its residual sums in place (`residual_sums_in_place`)."""
    return _in_place_depth > 0


def add_projection(x: torch.Tensor, h: torch.Tensor, module: nn.Module, overwrite: bool = False) -> torch.Tensor:
    """x + module(h), a residual connection. With `overwrite` (x is the caller's own and nothing reads it
    afterwards), inside `residual_sums_in_place()` and without autograd, accumulated into x in place by the GEMM
    (β = 1) where that is the same computation: a fused-marked projection without bias or hooks, x a contiguous
    matrix of the GEMM's dtype. Otherwise x is left alone and the sum is a new tensor, as before."""
    base = _base(module)
    if (not overwrite or torch.is_grad_enabled() or not residuals_in_place() or not getattr(base, FUSED, False)
            or base.bias is not None):
        return x + project_one(h, module)
    terms = _adapter_terms(module)
    if (terms is None or _hooked(module) or _hooked(base) or not x.is_contiguous()
            or not x.dtype == h.dtype == base.weight.dtype):
        return x + project_one(h, module)
    x.view(-1, x.shape[-1]).addmm_(h.reshape(-1, h.shape[-1]), base.weight.t())
    return _with_adapters(module, x, h, terms)
