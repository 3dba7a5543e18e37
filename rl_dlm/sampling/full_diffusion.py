"""Full-diffusion low-confidence sampler with EOS early rejection (EOSER) and ascending step size (ASS)
(CJ-GRPO, arXiv 2509.23924 §3.2–3.3). Schedules and factors are in `rl_dlm.sampling.ascending`.

One class covers CJ-GRPO's three non-semi-AR rollouts:

| `conf/sampler/` | step_schedule | eoser | what it does                                                   |
|-----------------|---------------|-------|----------------------------------------------------------------|
| eoser           | linear        | yes   | `steps` even steps over the whole canvas, end tokens ranked × γ(s) |
| ass             | ascending     | no    | log2 L steps of 2^s tokens                                      |
| eoser_ass       | ascending     | yes   | both, γ following the decoded fraction                          |

At each step the tokens are argmax(logits / T + Gumbel) with float64 noise from each row's own generator
(T = 0 is argmax); the ranking confidence is the *untempered* softmax probability of the chosen token (or a
uniform draw for `remasking="random"`), multiplied by γ(s) where the chosen token is an end token (the
family's end-of-turn or pad/EOS id) when `eoser`; the top-k still-masked positions of the current window
are committed for good. `unmask_step` records the step that committed each token, so
`TrajectoryReplayEstimator` can rebuild every intermediate state.

Windows: `linear` decodes `gen_length // block_length` blocks left to right (`block_length=None`: one
block, i.e. full-sequence decoding) with LLaDA's even split of each block's steps; `ascending` uses
`block_num` blocks (`ascending_blocks`).

Deviations from the reference code (yjyddq/EOSER-ASS-RL `eval/generate.py`):
- the Gumbel noise is float64 (the reference casts to float32) and drawn per row, as in our semi-AR sampler;
- γ(s) uses the global step index (see `ascending.py`);
- both end tokens are rejected early (the reference scales only `tokenizer.eos_token_id`, LLaDA's padding
  `<|endoftext|>`, not the end-of-turn `<|eot_id|>` that ends the completion just the same).

Speed, with the same draws (tests/test_exact_speedups.py): each step asks for the window's logits only
(`Policy.logits(keep=...)`), an all-ones key mask is dropped once per rollout, and the draws run at the still
masked positions only (`semi_ar.draw_masked`).

    sampler = FullDiffusionSampler(gen_length=256, step_schedule="ascending", eoser=True)   # EOSER+ASS
    rollout = sampler.sample(policy, prompt_ids, prompt_mask, row_seeds)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from rl_dlm.components import Rollout, completion_mask_from
from rl_dlm.sampling.ascending import (ascending_blocks, ascending_counts, ascending_gamma, ascending_steps,
                                       eos_rejection, linear_gamma)
from rl_dlm.sampling.rollout import start_canvas
from rl_dlm.sampling.semi_ar import commit_top_k, draw_masked, masked_positions, transfer_counts

SCHEDULES = ("linear", "ascending")


@dataclass
class FullDiffusionSampler:
    gen_length: int = 256
    steps: int = 128  # linear schedule only; the ascending schedule takes ⌊log2 gen_length⌋ steps
    step_schedule: str = "ascending"  # "linear" or "ascending"
    eoser: bool = True
    eos_gamma_min: float = 0.01
    eos_gamma_max: float = 1.0
    block_length: int | None = None  # linear: semi-AR blocks (None = the whole canvas)
    block_num: int = 1  # ascending: blocks that restrict where tokens are committed
    temperature: float = 0.0
    remasking: str = "low_confidence"  # or "random"
    records: frozenset = frozenset({"unmask_step"})
    # EOSER and ASS come from CJ-GRPO's LLaDA-only code (yjyddq/EOSER-ASS-RL).
    families: ClassVar[frozenset] = frozenset({"llada"})

    def __post_init__(self):
        if self.step_schedule not in SCHEDULES:
            raise ValueError(f"sampler.step_schedule must be one of {SCHEDULES}, got {self.step_schedule!r}")
        if self.remasking not in ("low_confidence", "random"):
            raise ValueError(f"sampler.remasking must be 'low_confidence' or 'random', got {self.remasking!r}")
        self.windows()  # validates the block settings

    @property
    def num_steps(self) -> int:
        return self.steps if self.step_schedule == "linear" else ascending_steps(self.gen_length)

    def windows(self) -> list[tuple[int, int, list[int]]]:
        """(lo, hi, global steps) of each block, in completion coordinates."""
        if self.step_schedule == "ascending":
            out, lo = [], 0
            for size, steps in ascending_blocks(self.gen_length, self.block_num):
                out.append((lo, lo + size, steps))
                lo += size
            return out
        block = self.block_length or self.gen_length
        if self.gen_length % block:
            raise ValueError(f"sampler.gen_length ({self.gen_length}) must be a multiple of "
                             f"sampler.block_length ({block})")
        num_blocks = self.gen_length // block
        if self.steps % num_blocks or self.steps < num_blocks:
            raise ValueError(f"sampler.steps ({self.steps}) must be a positive multiple of the number of "
                             f"blocks ({num_blocks})")
        per = self.steps // num_blocks
        return [(b * block, (b + 1) * block, list(range(b * per, (b + 1) * per))) for b in range(num_blocks)]

    def gamma(self, step: int) -> float:
        if not self.eoser:
            return 1.0
        if self.step_schedule == "ascending":
            return ascending_gamma(step, self.num_steps, self.eos_gamma_min, self.eos_gamma_max)
        return linear_gamma(step, self.num_steps, self.eos_gamma_min, self.eos_gamma_max)

    @torch.no_grad()
    def sample(self, policy, prompt_ids: Tensor, prompt_mask: Tensor, row_seeds: Tensor) -> Rollout:
        n, p = prompt_ids.shape
        device = prompt_ids.device
        canvas = start_canvas(prompt_ids, prompt_mask, row_seeds, self.gen_length, policy.mask_id)
        x, unmask_step, gens = canvas.x, canvas.unmask_step, canvas.gens
        attention_mask = None if bool(canvas.key_mask.all()) else canvas.key_mask  # checked once, not per step
        eos_ids = torch.tensor(sorted({policy.stop_id, policy.pad_id}), device=device)
        fixed = ascending_counts(self.gen_length) if self.step_schedule == "ascending" else None
        for lo, hi, steps in self.windows():
            window = slice(p + lo, p + hi)
            still = x[:, window] == policy.mask_id
            counts = (torch.tensor(fixed, device=device)[steps].expand(n, -1) if fixed is not None
                      else transfer_counts(still.sum(1), len(steps)))
            for j, step in enumerate(steps):
                still = x[:, window] == policy.mask_id
                drawn = masked_positions(still)  # before the forward is queued: it waits for the last step
                logits = policy.logits(x, attention_mask, keep=window)
                x0, conf = draw_masked(logits, still, drawn, self.temperature, self.remasking, gens)
                ranked = torch.where(still, eos_rejection(conf, x0, eos_ids, self.gamma(step)), conf)  # γ may be 0
                commit = commit_top_k(ranked, counts[:, j])
                x[:, window] = torch.where(commit, x0, x[:, window])
                unmask_step[:, lo:hi].masked_fill_(commit, step)
        completion = x[:, p:]
        return Rollout(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion,
                       completion_mask=completion_mask_from(completion, policy.stop_id),
                       group_ids=torch.zeros(n, dtype=torch.long, device=device), row_seeds=row_seeds,
                       unmask_step=unmask_step)
