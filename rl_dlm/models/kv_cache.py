"""Block KV cache for semi-autoregressive rollouts (Fast-dLLM's prefix and dual caches, batch- and padding-safe).

What it does
    A semi-AR sampler decodes the canvas [prompt | block 0 | block 1 | ...] one block at a time. At the first
    step of a block, one full forward (the *refresh*) stores every layer's post-RoPE K/V of the whole canvas
    [N, H_kv, T, head_dim]. The block's later steps forward only a *window* of queries, whose K/V overwrite
    their slice of the cache, and attend to the whole cache:

    - prefix window = [block start, T): the block and the masked suffix are recomputed; the prompt and the
      finished blocks come from the cache (Fast-dLLM "prefix cache");
    - dual window = [block start, block end): only the block is recomputed (Fast-dLLM "dual cache").

Exactness
    A cached step differs from the exact forward only through stale K/V: those of the positions outside the
    window were computed at the refresh, before this block's later commits. So the result is exact when a
    block has one step (every step is a refresh), and for a one-layer model (layer-0 K/V depend only on each
    position's own token, and tokens outside the block do not change within a block). Otherwise it is an
    approximation; tests/sampling/test_cached.py states the measured tolerance.

Reference code
    Fast-dLLM (NVlabs/Fast-dLLM, `llada/generate.py` `generate_with_prefix_cache` / `generate_with_dual_cache`,
    `dream/model/generation_utils_block.py`). Deviations, on purpose:
    - K/V are cached AFTER RoPE and windows get their true position ids, instead of caching pre-RoPE K/V and
      re-rotating the whole cache every step (equivalent, cheaper);
    - left padding: the key-padding mask covers the cache and positions are cumsum(mask) - 1, so a padded row
      computes what it would alone (Fast-dLLM ignores padding, and its in-place write only works at batch 1);
    - shifted families (Dream): the window starts one position early, so the first block position's logit comes
      from the token before it, as in the uncached forward (Fast-dLLM commits that token at the refresh).

A refresh refills the buffers the first one made (same canvas shape), so a cache kept across rollouts keeps its
memory, which CUDA-graph replay needs (rl_dlm/models/cuda_graphs.py; `block_logits` goes through
`Policy.graphed`).

    cache = BlockKVCache()
    logits = block_logits(policy, x, key_mask, positions, cache, lo, hi, end=hi, refresh=True)   # [N, hi-lo, V]
"""
from __future__ import annotations

from torch import Tensor

from rl_dlm.models.lora_casts import lora_input_casts_skipped_if_redundant


class BlockKVCache:
    """Per-layer post-RoPE K/V of the whole canvas. `window=None` means the next forward is a refresh."""

    def __init__(self):
        self.keys: dict[int, Tensor] = {}  # layer → [N, H_kv, T, head_dim]
        self.values: dict[int, Tensor] = {}
        self.window: tuple[int, int] | None = None

    def update(self, layer_idx: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Called by each attention layer with the K/V of its input positions; returns the K/V to attend to."""
        if self.window is None:  # refresh: the input is the whole canvas
            if layer_idx in self.keys and self.keys[layer_idx].shape == k.shape:  # refill the same buffers, which
                self.keys[layer_idx].copy_(k)  # graphs captured for this canvas read and write
                self.values[layer_idx].copy_(v)
            else:
                self.keys[layer_idx], self.values[layer_idx] = k, v
            return self.keys[layer_idx], self.values[layer_idx]
        lo, hi = self.window
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys[:, :, lo:hi] = k
        values[:, :, lo:hi] = v
        return keys, values


def supports_block_cache(policy) -> bool:
    model = policy.model.get_base_model() if hasattr(policy.model, "get_base_model") else policy.model
    return bool(getattr(model, "supports_block_cache", False))


def canvas_positions(attention_mask: Tensor) -> Tensor:
    """[N, T] key mask → [N, T] position ids: a left-padded row's first real token is position 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def block_logits(policy, x: Tensor, key_mask: Tensor | None, positions: Tensor, cache: BlockKVCache, lo: int,
                 hi: int, end: int, refresh: bool) -> Tensor:
    """Aligned logits [N, hi - lo, V] of canvas positions [lo, hi) (position i scores token i).

    key_mask: [N, T] key-padding mask, or None when no row is padded (positions still come from `positions`).
    refresh: one full forward of x [N, T] that refills the cache. Otherwise only the window [lo - shift, end)
    is forwarded against the cache (end = T: prefix cache; end = hi: dual cache)."""
    shift = 1 if policy.family.shift_logits else 0
    if lo - shift < 0:
        raise ValueError("a shifted family needs at least one token before the first block")
    if refresh:
        window, ids, pos, keep = None, x, positions, slice(lo - shift, hi - shift)
    else:
        start = lo - shift
        window, ids, pos, keep = (start, end), x[:, start:end], positions[:, start:end], slice(0, hi - lo)

    def forward(ids: Tensor, pos: Tensor, mask: Tensor | None) -> Tensor:
        cache.window = window
        try:
            with lora_input_casts_skipped_if_redundant(policy.model, ids.device.type):
                return policy.model(input_ids=ids, attention_mask=mask, position_ids=pos, kv_cache=cache,
                                    logits_to_keep=keep).logits
        finally:
            cache.window = None

    mask = None if key_mask is None else key_mask.bool()[:, None, None, :]  # 4-D: no host check per forward
    return policy.graphed(("block_kv", window, keep.start, keep.stop, id(cache)), forward, ids, pos, mask)
