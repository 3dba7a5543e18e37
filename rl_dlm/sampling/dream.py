"""Dream's diffusion sampler (`diffusion_generate`; Dream 7B, DiffuCoder), batched with left padding.

The canvas is [prompt | mask × L], decoded as a whole (not in blocks). The time grid is
linspace(1, eps, steps + 1); step i goes from t to s. At each step every masked position gets a token from the
processed distribution: logits / T (if T > 0) → top-p (the smallest set whose cumulative probability reaches p)
→ top-k → softmax; sampled if T > 0, else argmax. Which positions are revealed depends on `alg`:

- `origin`: each masked position independently with probability 1 − s/t (all on the last step);
- `maskgit_plus` / `topk_margin` / `entropy`: the k = floor(m · (1 − s/t)) most confident of a row's m masked
  positions (all on the last step), or k sampled from softmax(confidence / alg_temp) when alg_temp > 0.
  Confidence is the chosen token's probability (maskgit_plus), top-1 minus top-2 probability (topk_margin),
  or Σ p log p, the negative entropy (entropy), all under the processed distribution.

Reference code: Dream-org/Dream `generation_utils.py` (`_sample`, `sample_tokens`, `top_p_logits`,
`top_k_logits`), reused unchanged by apple/ml-diffucoder. Deviations, on purpose:
- k uses each row's own masked count m, not the batch mean, so a row's rollout does not depend on its batch
  mates (they coincide when no row has hints, since every row then has the same count);
- tokens are drawn with float64 Gumbel noise from one generator per row (the same distribution as the
  official `Categorical` draw), so rollouts are reproducible per row; softmax and confidences are fp32, not bf16;
- left padding gets a key-padding mask and aligned position ids via `Policy.logits` (which also applies the
  family's logit shift); a step with nothing left to reveal is skipped instead of running the model.

Speed, with the same draws (tests/test_exact_speedups.py): each step asks for the completion's logits only
(`Policy.logits(keep=...)`, the prompt never reaches the LM head), and an all-ones key mask is dropped once per
rollout instead of being checked at every forward.

    sampler = DreamSampler(gen_length=256, steps=256, temperature=0.2, top_p=0.95, alg="entropy")
    rollout = sampler.sample(policy, prompt_ids, prompt_mask, row_seeds)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from rl_dlm.components import Rollout
from rl_dlm.sampling.rollout import start_canvas

ALGS = ("origin", "maskgit_plus", "topk_margin", "entropy")


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """Keep the smallest set of tokens whose cumulative probability reaches top_p (at least the top one)."""
    sorted_logits, order = torch.sort(logits, descending=True)
    cumulative = torch.softmax(sorted_logits, -1).cumsum(-1)
    remove = cumulative > top_p
    remove[..., 1:] = remove[..., :-1].clone()  # shift right: keep the token that crosses top_p
    remove[..., 0] = False
    remove = torch.zeros_like(remove).scatter(-1, order, remove)
    return logits.masked_fill(remove, torch.finfo(logits.dtype).min)


def top_k_filter(logits: Tensor, top_k: int) -> Tensor:
    kth = torch.topk(logits, min(top_k, logits.shape[-1]))[0][..., -1, None]
    return logits.masked_fill(logits < kth, torch.finfo(logits.dtype).min)


def sample_tokens(logits: Tensor, temperature: float, top_p: float | None, top_k: int | None, alg: str,
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """[M, V] logits → (tokens [M], confidence [M] fp32) under the processed distribution (official sample_tokens)."""
    logits = logits.float()
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        logits = top_p_filter(logits, top_p)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    probs = torch.softmax(logits, -1)
    if temperature > 0:
        u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=torch.float64)
        x0 = (torch.log_softmax(logits.double(), -1) - torch.log(-torch.log(u.clamp_min(1e-300)))).argmax(-1)
        confidence = probs.gather(-1, x0[:, None]).squeeze(-1)
    else:
        confidence, x0 = probs.max(-1)
    if alg == "topk_margin":
        top2 = probs.topk(2, dim=-1).values
        confidence = top2[:, 0] - top2[:, 1]
    elif alg == "entropy":
        confidence = (probs * torch.log(probs + 1e-10)).sum(-1)
    return x0, confidence


@dataclass
class DreamSampler:
    gen_length: int = 256
    steps: int = 256
    temperature: float = 0.2
    top_p: float | None = 0.95
    top_k: int | None = None
    alg: str = "entropy"  # origin | maskgit_plus | topk_margin | entropy
    alg_temp: float | None = 0.0
    eps: float = 1e-3
    records: frozenset = frozenset({"unmask_step"})
    # Dream's diffusion_generate (Dream, DiffuCoder); on LLaDA it is whole-canvas confidence decoding.
    families: ClassVar[frozenset] = frozenset({"dream", "llada"})

    def __post_init__(self):
        if self.alg not in ALGS:
            raise ValueError(f"sampler.alg must be one of {ALGS}, got {self.alg!r}")
        if self.steps < 1:
            raise ValueError(f"sampler.steps must be ≥ 1, got {self.steps}")

    def reveal(self, conf: Tensor, i: int, t: Tensor, s: Tensor, gen: torch.Generator) -> Tensor:
        """Indices (into a row's masked positions) to reveal at step i."""
        m = conf.shape[0]
        last = i == self.steps - 1
        if self.alg == "origin":
            if last:
                return torch.arange(m, device=conf.device)
            u = torch.rand(m, generator=gen, device=conf.device, dtype=torch.float64)
            return (u < float(1 - s / t)).nonzero().squeeze(-1)
        k = m if last else int(m * (1 - s / t))
        if k <= 0:
            return torch.empty(0, dtype=torch.long, device=conf.device)
        if not self.alg_temp:
            return torch.topk(conf, k).indices
        weights = torch.softmax(conf.double() / self.alg_temp, -1)
        return torch.multinomial(weights, k, replacement=False, generator=gen)

    @torch.no_grad()
    def sample(self, policy, prompt_ids: Tensor, prompt_mask: Tensor, row_seeds: Tensor,
               hint_ids: Tensor | None = None) -> Rollout:
        """hint_ids: optional [N, L] tokens fixed in the canvas (−1 where free)."""
        n, p = prompt_ids.shape
        device = prompt_ids.device
        mask_id = policy.mask_id
        canvas = start_canvas(prompt_ids, prompt_mask, row_seeds, self.gen_length, mask_id, hint_ids)
        x, hint_mask = canvas.x, canvas.hint_mask
        key_mask = None if bool(canvas.key_mask.all()) else canvas.key_mask  # checked once, not per step
        unmask_step, gens = canvas.unmask_step, canvas.gens
        timesteps = torch.linspace(1, self.eps, self.steps + 1, device=device)  # fp32, as the official code
        for i in range(self.steps):
            masked = x[:, p:] == mask_id
            if not bool(masked.any()):
                break
            logits = policy.logits(x, key_mask, keep=slice(p, None))  # aligned: position p + j scores token j
            t, s = timesteps[i], timesteps[i + 1]
            for row, gen in enumerate(gens):
                pos = masked[row].nonzero().squeeze(-1)
                if pos.numel() == 0:
                    continue
                x0, conf = sample_tokens(logits[row, pos], self.temperature, self.top_p, self.top_k, self.alg, gen)
                chosen = self.reveal(conf, i, t, s, gen)
                x[row, p + pos[chosen]] = x0[chosen]
                unmask_step[row, pos[chosen]] = i
        completion = x[:, p:]
        return Rollout.from_canvas(prompt_ids, prompt_mask, completion, row_seeds, policy.stop_id,
                                   unmask_step=unmask_step, hint_mask=hint_mask)
