"""The RMS normalisation both native families share, with exact fast paths with and without autograd.

What it computes
    LLaDA's RMSLayerNorm and Qwen2's RMSNorm (Dream) normalise the same way before their affine part:
    `n = (h · rsqrt(mean(h²) + eps)).to(x.dtype)` with `h = x.float()` (rl_dlm/models/llada.py, dream.py).

Speed, bit-identical to that textbook code (tests/test_exact_speedups.py)
    - Outside autograd the fp32 product is rounded into x's dtype as it is stored (`scale_into_dtype`): 4
      instead of 14 bytes per element in bf16.
    - Under autograd in half precision (the update, and its recompute under gradient checkpointing) `_Normalize`
      runs that fast forward and a hand-written backward that does, operation for operation, what autograd does
      for the textbook graph (MulBackward, RsqrtBackward `-0.5 · g · s³`, MeanBackward `g / d`, PowBackward
      `g · (2 · h)`, the two gradients of h summed, cast back): the same bits in about 64 instead of 112 bytes
      per element over forward and backward, and it keeps x and the [.., 1] scale instead of an fp32 copy of
      the activations per norm.

    n = normalize(x, eps)
"""
from __future__ import annotations

import torch

from rl_dlm.models.rope import needs_grad

__all__ = ["normalize", "scale_into_dtype"]


def scale_into_dtype(x: torch.Tensor, h: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(h · scale).to(x.dtype) for h = x.float(). Outside autograd the fp32 product is rounded into x's dtype as
    it is stored (type promotion converts x exactly): the same values in fewer passes."""
    if needs_grad(x) or torch.promote_types(x.dtype, torch.float32) != torch.float32:
        return (h * scale).to(x.dtype)
    return torch.mul(x, scale, out=torch.empty_like(x))


def _scale(h: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)


class _Normalize(torch.autograd.Function):
    """normalize(x) under autograd: the fast forward, the textbook graph's backward by hand (see module doc).

    For a half-precision x only: there `x.float()` is a copy, so the textbook graph hands x one gradient and the
    sum with the residual's is the same. An fp32 x is its own `x.float()`: autograd would sum the pow, mul and
    residual gradients of x in its own order, which a combined gradient cannot reproduce bit for bit, so fp32
    keeps the textbook graph (CPU runs; GPU runs are bf16)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            scale = _scale(x.float(), eps)
            ctx.save_for_backward(x, scale)
            return torch.mul(x, scale, out=torch.empty_like(x))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, scale = ctx.saved_tensors
        with torch.autocast(device_type=x.device.type, enabled=False):
            # a half-precision operand next to an fp32 one is converted exactly, so each product below is the
            # textbook's fp32 product without an fp32 copy of x or of the gradient
            grad_scale = grad.float().mul_(x).sum(-1, keepdim=True)  # MulBackward (other): g·h, summed to [.., 1]
            grad_mean = -0.5 * grad_scale * scale.pow(3)  # RsqrtBackward; AddBackward (+ eps) passes it on
            grad_square = grad_mean / x.shape[-1]  # MeanBackward: expanded, divided by d
            # MulBackward (self) g·s plus PowBackward g_sq·(2·h), which is (2·g_sq)·h exactly; the sum rounded
            # into x's dtype as it is stored (ToCopyBackward)
            return torch.add(grad * scale, (2.0 * grad_square) * x, out=torch.empty_like(x)), None


def normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """(x.float() · rsqrt(mean(x.float()²) + eps)).to(x.dtype), with exact fast paths (module docstring)."""
    if needs_grad(x) and x.dtype in (torch.bfloat16, torch.float16):  # `x.float()` is a copy: see _Normalize
        return _Normalize.apply(x, eps)
    with torch.autocast(device_type=x.device.type, enabled=False):
        h = x.float()
        return scale_into_dtype(x, h, _scale(h, eps))
