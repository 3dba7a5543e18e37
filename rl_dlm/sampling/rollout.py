"""`Rollout`: what a sampler hands to the rest of the loop.

Shapes use one alphabet: N = B·G rows, P prompt length (left padded), L completion length, S denoising steps.
Optional fields are filled only by samplers that declare them in `Sampler.records`; an estimator that needs a
field states it in `requires`, and the trainer checks the pair at start-up. `extras` holds anything else a
component records or derives (per-step rewards, masks of each denoising state, the advantages); its tensors
with one entry per row are sliced and concatenated with the rows like the fields.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch
from torch import Tensor

OPTIONAL_FIELDS = ("unmask_step", "step_predictions", "confidence", "hint_mask", "loss_mask")


@dataclass
class Rollout:
    prompt_ids: Tensor  # [N, P] left padded
    prompt_mask: Tensor  # [N, P] bool, False on padding
    completion_ids: Tensor  # [N, L]
    completion_mask: Tensor  # [N, L] bool, up to and including the first end-of-turn token
    group_ids: Tensor  # [N] index of the prompt each row answers
    row_seeds: Tensor  # [N] int64; every per-row random stream (masks, ...) derives from it
    unmask_step: Tensor | None = None  # [N, L] step at which each token was committed
    step_predictions: Tensor | None = None  # [N, S, L] predicted full completion at each step
    confidence: Tensor | None = None  # [N, S, L] confidence of each step's prediction
    hint_mask: Tensor | None = None  # [N, L] bool, tokens fixed by a hint (never sampled)
    loss_mask: Tensor | None = None  # [N, L] bool, tokens the objective trains on (None: completion_mask)
    extras: dict = field(default_factory=dict)

    @classmethod
    def from_canvas(cls, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor, row_seeds: Tensor,
                    stop_id: int, **optional) -> "Rollout":
        """A sampler's finished canvas → Rollout: the completion mask runs through the first `stop_id`;
        group ids are set by the loop (stage 1)."""
        return cls(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
                   completion_mask=completion_mask_from(completion_ids, stop_id),
                   group_ids=torch.zeros(completion_ids.shape[0], dtype=torch.long, device=completion_ids.device),
                   row_seeds=row_seeds, **optional)

    @property
    def num_rows(self) -> int:
        return self.completion_ids.shape[0]

    def rows(self, index: Tensor | slice) -> "Rollout":
        """The sub-rollout of some rows (a micro-batch); every tensor field is indexed the same way."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value[index] if isinstance(value, Tensor) else value
        out["extras"] = {k: v[index] if self._per_row(v) else v for k, v in self.extras.items()}
        return replace(self, **out)

    def _per_row(self, value) -> bool:
        return isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == self.num_rows

    @staticmethod
    def cat(parts: list["Rollout"]) -> "Rollout":
        out = {}
        for f in fields(Rollout):
            values = [getattr(p, f.name) for p in parts]
            if isinstance(values[0], Tensor):
                out[f.name] = torch.cat(values)
            else:
                out[f.name] = values[0]
        out["extras"] = {k: torch.cat([p.extras[k] for p in parts]) if parts[0]._per_row(v) else v
                         for k, v in parts[0].extras.items()}
        return Rollout(**out)


def completion_mask_from(completion_ids: Tensor, stop_id: int) -> Tensor:
    """[N, L] bool: True up to and including the first `stop_id`; the whole row if there is none."""
    is_stop = completion_ids == stop_id
    after_stop = (is_stop.cumsum(-1) - is_stop.long()) > 0  # strictly after the first stop
    return ~after_stop


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
