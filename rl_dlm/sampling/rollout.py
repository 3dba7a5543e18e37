"""Where every sampler starts: per-row random streams (`row_generator`) and the masked canvas (`start_canvas`).

`Rollout`, what a sampler returns, is one of the shared types in rl_dlm/components.py (re-exported here).
Shapes: N rows, P prompt length (left padded), L completion length.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rl_dlm.components import OPTIONAL_FIELDS, Rollout, completion_mask_from

__all__ = ["OPTIONAL_FIELDS", "Canvas", "Rollout", "completion_mask_from", "row_generator", "start_canvas"]


def row_generator(seed: int, stream: str, device: torch.device | str = "cpu") -> torch.Generator:
    """An independent generator for one row and one named stream ("rollout", "mask/3", ...)."""
    import hashlib

    digest = hashlib.blake2b(f"{int(seed)}/{stream}".encode(), digest_size=8).digest()
    gen = torch.Generator(device=device)
    gen.manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
    return gen


@dataclass
class Canvas:
    """The start of every sampler: the prompt ⊕ L mask slots (hints filled in), and its bookkeeping."""

    x: Tensor  # [N, P + L] tokens
    key_mask: Tensor  # [N, P + L] bool: False only at left padding
    hint_mask: Tensor | None  # [N, L] bool: slots fixed by `hint_ids` (None: no hints)
    unmask_step: Tensor  # [N, L] long: the step that committed each slot (−1: not yet / hinted)
    gens: list  # one "rollout" generator per row


def start_canvas(prompt_ids: Tensor, prompt_mask: Tensor, row_seeds: Tensor, gen_length: int, mask_id: int,
                 hint_ids: Tensor | None = None) -> Canvas:
    """hint_ids: optional [N, L] tokens fixed in the canvas (−1 where free)."""
    n, p = prompt_ids.shape
    device = prompt_ids.device
    x = torch.cat([prompt_ids, torch.full((n, gen_length), mask_id, device=device, dtype=prompt_ids.dtype)], 1)
    hint_mask = None
    if hint_ids is not None:
        hint_mask = hint_ids >= 0
        x[:, p:] = torch.where(hint_mask, hint_ids, x[:, p:])
    key_mask = torch.cat([prompt_mask, torch.ones(n, gen_length, dtype=torch.bool, device=device)], 1)
    return Canvas(x=x, key_mask=key_mask, hint_mask=hint_mask,
                  unmask_step=torch.full((n, gen_length), -1, dtype=torch.long, device=device),
                  gens=[row_generator(int(s), "rollout", device) for s in row_seeds])
