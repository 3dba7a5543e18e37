"""The key-padding mask both native families (rl_dlm/models/llada.py, dream.py) hand to SDPA.

A 2-D 0/1 mask [B, T] is checked on the host once per forward: an all-ones mask is dropped, so SDPA keeps its
mask-free (flash) kernels. A 4-D bool mask [B, 1, Lq, T] is taken as it is, with no host synchronisation: that is
what `Policy.logits` passes once it has found padding itself, so a padded forward can be captured in a CUDA
graph (rl_dlm/models/cuda_graphs.py). Either way a row without a single visible key attends everywhere instead
of returning NaN.
"""
from __future__ import annotations

import torch


def key_mask_4d(attention_mask, device) -> torch.Tensor | None:
    """None / "full" / (B, T) 0/1 key mask / (B, 1, Lq, T) bool → an SDPA bool mask (True = attend) or None."""
    if attention_mask is None or isinstance(attention_mask, str):
        return None
    mask = attention_mask.to(device=device, dtype=torch.bool)
    if mask.ndim == 2:
        if bool(mask.all()):  # one host sync; keeps SDPA on its mask-free (flash) kernels
            return None
        mask = mask[:, None, None, :]
    return mask | ~mask.any(dim=-1, keepdim=True)
