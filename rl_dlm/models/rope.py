"""Rotary position embeddings (RoPE) as both native families compute them, with an exact fast path.

LLaDA (rl_dlm/models/llada.py) and Dream (rl_dlm/models/dream.py) rotate half-and-half (HF Llama's
`rotate_half`); LLaDA in fp32 (`rope_full_precision`), Dream with the tables cast to the activation dtype. The
rotation takes fewer elementwise passes than that textbook code, with and without autograd (a hand-written
backward), with bit-identical results (`apply_rope`; tests/test_exact_speedups.py).
"""
from __future__ import annotations

import torch

__all__ = ["apply_rope", "needs_grad", "query_rope", "rope_cos_sin"]


def needs_grad(t: torch.Tensor) -> bool:
    """Whether autograd records ops on t (the out= fast paths work only outside autograd)."""
    return torch.is_grad_enabled() and t.requires_grad


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 RoPE tables for positions (L,) or (B, L) -> cos, sin of shape [1 or B, 1, L, head_dim]."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float) / head_dim))
    angles = positions.float().unsqueeze(-1) * inv_freq  # [.., L, head_dim/2]
    angles = torch.cat((angles, angles), dim=-1)
    angles = angles.view(-1, 1, *angles.shape[-2:])
    return angles.cos(), angles.sin()


def query_rope(rope, keep: slice | None):
    """The RoPE tables ([1 or B, 1, L, hd] each) of the query positions `keep`."""
    return rope if keep is None else tuple(t[:, :, keep] for t in rope)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rotate(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """t·cos + rotate_half(t)·sin with the tables in the rotation's dtype, written half by half into the output
    (first t1·c − t2·s, second t2·c + t1·s): type promotion converts t exactly without a copy, and the sums are
    rounded into t's dtype as they are stored."""
    half = t.shape[-1] // 2
    t1, t2 = t[..., :half], t[..., half:]
    out = torch.empty_like(t)
    a = t * cos  # computed in the tables' dtype: t is converted exactly, with no copy of it
    torch.sub(a[..., :half], t2 * sin[..., :half], out=out[..., :half])
    torch.add(a[..., half:], t1 * sin[..., half:], out=out[..., half:])
    return out


class _Rotate(torch.autograd.Function):
    """`_rotate` under autograd. The backward is what autograd does for the textbook graph (ToCopy, the two
    MulBackwards, rotate_half's Cat/Neg/Chunk backwards, the two gradients of t summed, ToCopy back), written the
    same way: first half g1·c + g2·s, second g2·c − g1·s, rounded into t's dtype as stored. The tables are all
    it keeps."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return _rotate(t, cos, sin)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        cos, sin = ctx.saved_tensors
        half = grad.shape[-1] // 2
        out = torch.empty_like(grad)
        a, b = grad * cos, grad * sin  # in the tables' dtype, as the textbook's grad.to(dtype) · cos
        torch.add(a[..., :half], b[..., half:], out=out[..., :half])
        torch.sub(a[..., half:], b[..., :half], out=out[..., half:])
        return out, None, None


def apply_rope(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, full_precision: bool = True) -> torch.Tensor:
    """Half rotation (HF Llama's rotate_half): t·cos + rotate_half(t)·sin. Official LLaDA rotates in fp32 and
    casts back.

    The two halves are written straight into the output, the product with the fp32 tables promotes t without an
    fp32 copy, and the sums are rounded into t's dtype as they are stored: 5 elementwise passes instead of 8,
    about 22 instead of 52 bytes per element in bf16, with bit-identical results (a + (−b)·s equals a − b·s
    exactly in IEEE arithmetic; tests/test_exact_speedups.py). Under autograd `_Rotate` adds a backward of the
    same kind, bit-identical to autograd's through the textbook code."""
    dtype = torch.float32 if full_precision else t.dtype
    cos, sin = cos.to(dtype), sin.to(dtype)
    if torch.promote_types(t.dtype, dtype) != dtype or (torch.is_grad_enabled() and (cos.requires_grad
                                                                                      or sin.requires_grad)):
        t_ = t.to(dtype)
        return (t_ * cos + _rotate_half(t_) * sin).to(t.dtype)
    if needs_grad(t):
        return _Rotate.apply(t, cos, sin)
    return _rotate(t, cos, sin)
