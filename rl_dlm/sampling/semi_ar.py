"""LLaDA's semi-autoregressive low-confidence sampler (LLaDA `generate.py`; d1 §3 rollouts).

The canvas is `[prompt | mask × L]`, cut into blocks of `block_length` decoded left to right. Each block gets
`steps // num_blocks` steps; a step reveals `masked_in_block // steps_per_block` tokens of each row, the
remainder going one extra token to each of the first steps. At each step the tokens are
`argmax(logits / T + Gumbel)` with the Gumbel noise drawn in float64 (T = 0 is argmax), the confidence is the
*untempered* softmax probability of the chosen token (or a uniform draw for `remasking="random"`), positions
outside the block or already revealed get −∞, and the top-k per row are committed for good.

Deviations from the reference code, on purpose:
- Noise comes from one generator per row (seeded from the row's seed), so a row's rollout does not depend on
  which other rows share the batch, on left padding, or on the micro-batch layout.
- Only the current block's logits enter the Gumbel draw, so the float64 noise is [N, block, V], not
  [N, P + L, V].
- Left-padded prompts get a key-padding attention mask and aligned position ids (the reference runs
  without a mask); CFG works with or without padding (the reference hits an unbound variable).
- The commit step of every token is always recorded (`unmask_step`), because it is free.

Speed, with the same draws (tests/test_exact_speedups.py compares against the previous implementation):
- Each step asks the model for the current block's logits only (`Policy.logits(keep=...)`): the LM head
  projects 32 positions instead of the whole canvas, and no [N, P + L, V] tensor is written (7.4 GB per step at
  64 × 456 × 126k in bf16).
- An all-ones key mask is dropped once per rollout instead of being checked at every forward, and commit steps
  are written with `masked_fill_` instead of boolean indexing.
- The float64 Gumbel noise is built in place (one [block, V] buffer per row instead of four), and the noise,
  argmax and softmax run at the still masked positions only (`draw_masked`): each row still draws its noise
  for the whole block, so the tokens are the same, for about half the float64 and softmax work over a block's
  steps (the block's first step draws every position). Sizing that draw is the step's one host
  synchronisation.

    sampler = SemiARSampler(gen_length=64, block_length=16, steps=32, temperature=0.9)
    rollout = sampler.sample(policy, prompt_ids, prompt_mask, row_seeds)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from rl_dlm.components import Rollout
from rl_dlm.sampling.rollout import start_canvas


def transfer_counts(masked: Tensor, steps: int) -> Tensor:
    """[N] masked counts → [N, steps] tokens to reveal per step; the remainder goes to the first steps."""
    base = masked // steps
    rem = masked % steps
    step_idx = torch.arange(steps, device=masked.device)
    return base[:, None] + (step_idx[None, :] < rem[:, None]).long()


def commit_top_k(confidence: Tensor, k: Tensor) -> Tensor:
    """[N, W] confidence, [N] counts → [N, W] bool selecting the k most confident positions of each row."""
    order = torch.argsort(confidence, dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(confidence.shape[-1], device=order.device).expand_as(order))
    return (ranks < k[:, None]) & torch.isfinite(confidence)


def masked_positions(still_masked: Tensor) -> Tensor | None:
    """[N, W] bool → [N, M] window positions, M the most positions any row has masked: each row's masked
    positions in order, then (a row with fewer) its first unmasked ones; None when M = W. One host
    synchronisation per call (M sizes the tensors; a drawn mask token can leave a position masked, so no
    schedule bounds M in advance): the samplers call it before queueing the step's forward, so that it waits
    for the previous step only."""
    width = still_masked.shape[1]
    most = int(still_masked.sum(1).max()) if still_masked.numel() else width
    if most >= width:
        return None
    return torch.argsort((~still_masked).to(torch.uint8), dim=1, stable=True)[:, :max(most, 1)]


def at_positions(logits: Tensor, positions: Tensor) -> Tensor:
    """[N, W, V] logits → [N, M, V] at positions [N, M]: whole rows of V copied by one `index_select` over the
    N·W rows (a `gather` with an index expanded over V computes an offset per element)."""
    n, w, v = logits.shape
    rows = (positions + torch.arange(n, device=positions.device)[:, None] * w).flatten()
    return logits.reshape(n * w, v).index_select(0, rows).view(n, positions.shape[1], v)


def gumbel_argmax(logits: Tensor, temperature: float, generators: list[torch.Generator],
                  positions: Tensor | None = None, chosen: Tensor | None = None) -> Tensor:
    """argmax(logits / T + Gumbel) with float64 noise drawn per row; T = 0 is plain argmax. logits: [N, W, V].

    positions [N, M]: draw only there (the tokens elsewhere are 0). Each row still draws its noise for the whole
    [W, V] window and uses it at its positions, so those tokens are the ones the full draw gives, from the same
    float64 operations, for M/W of the float64 work. `chosen`: `at_positions(logits, positions)`, where the
    caller has it already."""
    if temperature <= 0:
        return logits.argmax(-1)
    if chosen is None:
        chosen = logits if positions is None else at_positions(logits, positions)
    scores = chosen.to(torch.float64, copy=True).div_(temperature)
    for n, gen in enumerate(generators):
        u = torch.rand(logits.shape[1:], generator=gen, device=scores.device, dtype=torch.float64)
        if positions is not None:
            u = u.index_select(0, positions[n])
        scores[n] -= u.clamp_min_(1e-300).log_().neg_().log_()  # log(−log u), in place
    drawn = scores.argmax(-1)
    return drawn if positions is None else logits.new_zeros(logits.shape[:2], dtype=drawn.dtype).scatter_(
        1, positions, drawn)


def draw_masked(logits: Tensor, still_masked: Tensor, positions: Tensor | None, temperature: float, remasking: str,
                generators: list[torch.Generator]) -> tuple[Tensor, Tensor]:
    """One low-confidence step's draw over a window: logits [N, W, V], still_masked [N, W], positions
    `masked_positions(still_masked)` → (tokens [N, W], confidence [N, W] float64, −∞ where not still masked).

    Tokens and confidences (the untempered softmax probability of the drawn token, or a uniform draw for
    `remasking="random"`) are computed at the masked positions only (`masked_positions`), not the whole window:
    the same values there (the row's full noise draw, a softmax per position), for about half the float64 and
    softmax work over a block's steps. Elsewhere the tokens are 0; no step commits them."""
    n, w, _ = logits.shape
    used = positions is not None and (temperature > 0 or remasking != "random")
    chosen = at_positions(logits, positions) if used else None  # once, for the draw and the softmax
    x0 = gumbel_argmax(logits, temperature, generators, positions, chosen)
    if remasking == "random":
        conf = torch.stack([torch.rand(w, generator=g, device=logits.device, dtype=torch.float64)
                            for g in generators])
    elif positions is None:
        conf = torch.softmax(logits.float(), -1).gather(-1, x0[..., None]).squeeze(-1).double()
    else:
        probs = torch.softmax(chosen.float(), -1)
        conf = probs.gather(-1, x0.gather(1, positions)[..., None]).squeeze(-1).double()
        conf = torch.full((n, w), -torch.inf, dtype=conf.dtype, device=conf.device).scatter_(1, positions, conf)
    return x0, torch.where(still_masked, conf, torch.full_like(conf, -torch.inf))


@dataclass
class SemiARSampler:
    gen_length: int = 256
    block_length: int = 32
    steps: int = 128
    temperature: float = 0.0
    remasking: str = "low_confidence"  # or "random"
    cfg_scale: float = 0.0
    records: frozenset = frozenset({"unmask_step"})
    # LLaDA's generate.py; every paper that samples with it (d1, GDPO, IGPO, CJ-GRPO) runs LLaDA.
    families: ClassVar[frozenset] = frozenset({"llada"})

    def __post_init__(self):
        if self.remasking not in ("low_confidence", "random"):
            raise ValueError(f"sampler.remasking must be 'low_confidence' or 'random', got {self.remasking!r}")
        if self.gen_length % self.block_length:
            raise ValueError(
                f"sampler.gen_length ({self.gen_length}) must be a multiple of sampler.block_length ({self.block_length})"
            )
        num_blocks = self.gen_length // self.block_length
        if self.steps % num_blocks or self.steps < num_blocks:
            raise ValueError(
                f"sampler.steps ({self.steps}) must be a positive multiple of the number of blocks ({num_blocks})"
            )

    def logits(self, policy, x: Tensor, attention_mask: Tensor | None, prompt_len: int, keep: slice) -> Tensor:
        """Aligned logits of positions `keep` [N, |keep|, V], with classifier-free guidance if cfg_scale > 0."""
        if self.cfg_scale <= 0:
            return policy.logits(x, attention_mask, keep=keep)
        uncond = x.clone()
        uncond[:, :prompt_len] = policy.mask_id
        both_mask = None if attention_mask is None else torch.cat([attention_mask, attention_mask])
        both = policy.logits(torch.cat([x, uncond]), both_mask, keep=keep)
        cond, unc = both.chunk(2)
        return unc + (self.cfg_scale + 1) * (cond - unc)

    @torch.no_grad()
    def sample(self, policy, prompt_ids: Tensor, prompt_mask: Tensor, row_seeds: Tensor,
               hint_ids: Tensor | None = None) -> Rollout:
        """hint_ids: optional [N, L] tokens fixed in the canvas (−1 where free); they never count as steps."""
        p = prompt_ids.shape[1]
        canvas = start_canvas(prompt_ids, prompt_mask, row_seeds, self.gen_length, policy.mask_id, hint_ids)
        x, hint_mask = canvas.x, canvas.hint_mask
        attention_mask = None if bool(canvas.key_mask.all()) else canvas.key_mask  # checked once, not per step
        unmask_step, gens = canvas.unmask_step, canvas.gens
        num_blocks = self.gen_length // self.block_length
        steps_per_block = self.steps // num_blocks
        step = 0
        for b in range(num_blocks):
            lo, hi = p + b * self.block_length, p + (b + 1) * self.block_length
            counts = transfer_counts((x[:, lo:hi] == policy.mask_id).sum(1), steps_per_block)
            for s in range(steps_per_block):
                still_masked = x[:, lo:hi] == policy.mask_id
                drawn = masked_positions(still_masked)  # before the forward is queued: it waits for the last step
                block_logits = self.logits(policy, x, attention_mask, p, keep=slice(lo, hi))
                x0, conf = draw_masked(block_logits, still_masked, drawn, self.temperature, self.remasking, gens)
                commit = commit_top_k(conf, counts[:, s])
                x[:, lo:hi] = torch.where(commit, x0, x[:, lo:hi])
                unmask_step[:, lo - p:hi - p].masked_fill_(commit, step)
                step += 1
        completion = x[:, p:]
        return Rollout.from_canvas(prompt_ids, prompt_mask, completion, row_seeds, policy.stop_id,
                                   unmask_step=unmask_step, hint_mask=hint_mask)
