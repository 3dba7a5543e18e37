"""LLaDA's semi-autoregressive low-confidence sampler with a block KV cache, parallel decoding and early stop.

It is `semi_ar.SemiARSampler` (same schedule, same per-row float64 Gumbel noise, same untempered-softmax
confidence, same top-k commits, so identical draws) plus three speed flags, each with a stated effect on
exactness (Fast-dLLM, Wu et al. 2025, arXiv 2505.22618; reference code NVlabs/Fast-dLLM `llada/generate.py`):

| flag | effect | exactness |
|---|---|---|
| `cache="none"` | full forward every step | exact: equals `SemiARSampler` |
| `cache="prefix"` | refresh at block start; later steps forward block + masked suffix | exact if 1 step per block or 1 layer; else approximate (stale K/V before the block) |
| `cache="dual"` | refresh at block start; later steps forward only the block | as prefix, plus stale K/V of the masked suffix |
| `refresh_every=k` | also refresh every k-th step of a block | k = 1 is exact; larger k is faster and staler |
| `threshold=τ` | also commit every masked block position with confidence ≥ τ | changes the schedule (fewer steps); None = exact schedule |
| `early_stop=True` | stop once every row has a committed end-of-turn with nothing masked before it | exact for every token up to and including the first end-of-turn; the rest become pad_id |

Deviations from Fast-dLLM, on purpose:
- Threshold decoding commits max(scheduled k, #confident) per step, never fewer than the exact schedule, so a
  block never takes more than `steps / num_blocks` steps (Fast-dLLM commits at least one, which on an
  unconfident model takes `block_length` steps per block, slower than the schedule it replaces).
- The cache is batch- and left-padding-safe and Dream-aware (see rl_dlm/models/kv_cache.py).
- `cache="none"` asks for the block's logits only (`Policy.logits(keep=...)`), an all-ones key mask is dropped
  once per rollout and commit steps are written without boolean indexing; every mode draws at the still masked
  positions only (`semi_ar.draw_masked`): same draws as before (tests/test_exact_speedups.py), about half the
  float64 work per step, for one host synchronisation per step that sizes the draw (besides the early-stop
  check's).
- `unmask_step` counts scheduled steps (block b, step s → b·steps_per_block + s), as the exact sampler does, even
  when threshold decoding or early stop skips steps; `extras["forwards"]` counts the model calls made.

    sampler = CachedSemiARSampler(gen_length=256, block_length=32, steps=128, cache="dual", threshold=0.9)
    rollout = sampler.sample(policy, prompt_ids, prompt_mask, row_seeds)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from rl_dlm.components import Rollout
from rl_dlm.models.kv_cache import BlockKVCache, block_logits, canvas_positions, supports_block_cache
from rl_dlm.sampling.rollout import start_canvas
from rl_dlm.sampling.semi_ar import commit_top_k, draw_masked, masked_positions, transfer_counts

CACHE_MODES = ("none", "prefix", "dual")


def finished_rows(completion: Tensor, mask_id: int, stop_id: int) -> Tensor:
    """[N, L] → [N] bool: a stop token is committed and no position before it is still masked."""
    length = completion.shape[1]
    idx = torch.arange(length, device=completion.device).expand_as(completion)
    first_stop = torch.where(completion == stop_id, idx, length).min(1).values
    first_mask = torch.where(completion == mask_id, idx, length).min(1).values
    return first_stop < first_mask


@dataclass
class CachedSemiARSampler:
    gen_length: int = 256
    block_length: int = 32
    steps: int = 128
    temperature: float = 0.0
    remasking: str = "low_confidence"  # or "random"
    cache: str = "dual"  # "none" | "prefix" | "dual"
    threshold: float | None = None  # confidence-threshold parallel decoding (Fast-dLLM uses 0.9)
    early_stop: bool = True
    refresh_every: int | None = None  # refresh the cache every k steps within a block (None: once per block)
    records: frozenset = frozenset({"unmask_step"})
    # Fast-dLLM ships block-cached decoding for LLaDA and for Dream (NVlabs/Fast-dLLM `llada/`, `dream/`).
    families: ClassVar[frozenset] = frozenset({"llada", "dream"})

    def __post_init__(self):
        if self.cache not in CACHE_MODES:
            raise ValueError(f"sampler.cache must be one of {CACHE_MODES}, got {self.cache!r}")
        if self.remasking not in ("low_confidence", "random"):
            raise ValueError(f"sampler.remasking must be 'low_confidence' or 'random', got {self.remasking!r}")
        if self.refresh_every is not None and self.refresh_every < 1:
            raise ValueError(f"sampler.refresh_every must be ≥ 1 or null, got {self.refresh_every}")
        if self.threshold is not None and self.remasking == "random":
            raise ValueError("sampler.threshold needs remasking='low_confidence' (random confidence is not a score)")
        if self.gen_length % self.block_length:
            raise ValueError(f"sampler.gen_length ({self.gen_length}) must be a multiple of sampler.block_length "
                             f"({self.block_length})")
        num_blocks = self.gen_length // self.block_length
        if self.steps % num_blocks or self.steps < num_blocks:
            raise ValueError(f"sampler.steps ({self.steps}) must be a positive multiple of the number of blocks "
                             f"({num_blocks})")

    @torch.no_grad()
    def sample(self, policy, prompt_ids: Tensor, prompt_mask: Tensor, row_seeds: Tensor,
               hint_ids: Tensor | None = None) -> Rollout:
        """hint_ids: optional [N, L] tokens fixed in the canvas (−1 where free); they never count as steps."""
        if self.cache != "none" and not supports_block_cache(policy):
            raise ValueError(f"sampler.cache={self.cache!r} needs a native LLaDA or Dream model (rl_dlm.models); "
                             f"{type(policy.model).__name__} has no block cache: use cache='none'")
        n, p = prompt_ids.shape
        total = p + self.gen_length
        mask_id = policy.mask_id
        canvas = start_canvas(prompt_ids, prompt_mask, row_seeds, self.gen_length, mask_id, hint_ids)
        x, key_mask, hint_mask = canvas.x, canvas.key_mask, canvas.hint_mask
        unmask_step, gens = canvas.unmask_step, canvas.gens
        positions = canvas_positions(key_mask)
        model_mask = None if bool(key_mask.all()) else key_mask  # checked once, not at every forward
        # kept across rollouts where the steps replay from CUDA graphs, which read and write its buffers
        cache = policy.graph_state(("block_kv_cache", n, total), BlockKVCache, x) if self.cache != "none" else None
        num_blocks = self.gen_length // self.block_length
        steps_per_block = self.steps // num_blocks
        forwards, stopped_at = 0, None
        for b in range(num_blocks):
            lo, hi = p + b * self.block_length, p + (b + 1) * self.block_length
            counts = transfer_counts((x[:, lo:hi] == mask_id).sum(1), steps_per_block)
            for s in range(steps_per_block):
                still_masked = x[:, lo:hi] == mask_id
                # Threshold decoding may finish a block early. Without it every scheduled step runs, so the
                # per-row noise streams stay in step with SemiARSampler's.
                if self.threshold is not None and not bool(still_masked.any()):
                    break
                drawn = masked_positions(still_masked)  # before the forward is queued: it waits for the last step
                if cache is None:
                    logits = policy.logits(x, model_mask, keep=slice(lo, hi))
                else:
                    end = total if self.cache == "prefix" else hi
                    refresh = s % (self.refresh_every or steps_per_block) == 0
                    logits = block_logits(policy, x, model_mask, positions, cache, lo, hi, end, refresh=refresh)
                forwards += 1
                x0, conf = draw_masked(logits, still_masked, drawn, self.temperature, self.remasking, gens)
                commit = commit_top_k(conf, counts[:, s])
                if self.threshold is not None:
                    commit |= still_masked & (conf >= self.threshold)
                x[:, lo:hi] = torch.where(commit, x0, x[:, lo:hi])
                unmask_step[:, lo - p:hi - p].masked_fill_(commit, b * steps_per_block + s)
                if self.early_stop and bool(finished_rows(x[:, p:], mask_id, policy.stop_id).all()):
                    stopped_at = b * steps_per_block + s
                    break
            if stopped_at is not None:
                break
        completion = x[:, p:]
        if stopped_at is not None:  # everything after each row's first end-of-turn: the family's fill token
            rest = completion == mask_id
            completion[rest] = policy.pad_id
            unmask_step[rest] = stopped_at
        return Rollout.from_canvas(prompt_ids, prompt_mask, completion, row_seeds, policy.stop_id,
                                   unmask_step=unmask_step, hint_mask=hint_mask,
                                   extras={"forwards": forwards, "stopped_at_step": stopped_at})
