"""Full-canvas MaskGIT sampler that records every denoising step, with optional running confidence remasking
(MDPO, arXiv 2508.13148 §3 and §4 "RCR").

Schedule (linear MaskGIT): after step t, N − ⌊N·(1 − (t+1)/S)⌋ of the N completion tokens are revealed.
At each step the tokens are sampled categorically at temperature T (argmax(logits / T + Gumbel), float64
noise from each row's own generator; MDPO uses T = 0.4); the confidence of a token is its probability under
the *tempered* distribution softmax(logits / T) (untempered at T = 0, where the draw is the argmax), as in the
reference. That one confidence orders the commits, is what RCR remembers, and becomes MDPO's loss weight.
(The untempered confidence is the rule of LLaDA's semi-AR low-confidence remasking, which the
semi-AR and EOSER/ASS samplers keep, as LLaDA's `generate.py` does; this sampler follows MDPO's own code.)
Recorded per step t (S steps, completion coordinates):

- `step_predictions` [N, S, L]: x̂0_t, the sampled tokens at the positions masked in x_t and the committed
  tokens elsewhere — the predicted full completion, which MDPO rewards;
- `confidence` [N, S, L]: p_T(x̂0_t), the tempered probability under the model at step t;
- `step_masked` [N, S, L] bool: the positions masked in the state x_t the model saw, so that
  x_t = where(step_masked_t, MASK, step_predictions_t) (committed tokens are the predictions elsewhere);
- `unmask_step` [N, L]: the step of each token's last commit (declared only without RCR: with RCR a
  token can be committed, re-masked and committed again, so the commit map is not a trajectory).

RCR (`rcr=True`): at each step commit the *whole* remaining budget (every masked position) and remember each
token's confidence at commit; then, unless this is the last step, re-mask the committed tokens with the
lowest remembered confidence, anywhere in the completion, back down to the schedule's count. Prompt positions
are never re-masked. It is training-free: use it in any trainer's rollouts whose estimator does not need
`unmask_step` (e.g. `algo=diffu_grpo sampler=maskgit sampler.rcr=true`) and in evaluation.

Checked against autonomousvision/mdpo@e6ae439 `src/mdlm_generation_utils.py` (`diffusion_generate`, which the
trainer `src/open_r1/mdpo/mdpo_trainer.py` calls): p = softmax(logits / T), x0 ~ Categorical(p), confidence
p[x0], top-k commits by that confidence, and with RCR the remembered `overtime_confidence`. Deviations, on
purpose:
- the schedule is the linear MaskGIT one over the whole canvas; the reference applies the same schedule per
  block of `block_length` (its MDPO recipe sets block_length = gen_length = 512, i.e. one block, the same);
- the draw is argmax(logits / T + Gumbel) with float64 noise from per-row generators, the same distribution
  as the reference's `Categorical` draw from the global RNG;
- the RCR re-mask candidates are exactly the committed completion tokens (the reference marks uncommitted
  positions with a confidence of 1.0 so that they sort last, which also protects a committed token whose
  confidence happens to be 1.0 exactly);
- `confidence` records the step's own confidences under RCR too; at the positions masked in x_t (the only
  ones MDPO trains on) they equal the reference's remembered confidences, since RCR commits every masked
  position at the step;
- the optional top-k / top-p filters and the `entropy` / `topk_margin` confidences of the reference's
  generator are not offered (MDPO's recipe uses neither).

Speed, with the same draws (tests/test_exact_speedups.py): each step asks for the completion's logits only
(`Policy.logits(keep=...)`: the prompt never reaches the LM head), an all-ones key mask is dropped once per
rollout, and the float64 Gumbel draw runs at the masked positions only (`semi_ar.masked_positions`; the
confidences stay per position, since they are recorded).

    sampler = MaskGITSampler(gen_length=512, steps=128, temperature=0.4, rcr=False)
    rollout = sampler.sample(policy, prompt_ids, prompt_mask, row_seeds)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from rl_dlm.components import Rollout, completion_mask_from
from rl_dlm.sampling.rollout import row_generator
from rl_dlm.sampling.semi_ar import commit_top_k, gumbel_argmax, masked_positions


def maskgit_revealed(n: int, steps: int) -> list[int]:
    """Cumulative revealed count after each step: n − ⌊n·(1 − (t+1)/S)⌋ (integer arithmetic, ends at n)."""
    return [n - (n * (steps - t - 1)) // steps for t in range(steps)]


def maskgit_counts(n: int, steps: int) -> list[int]:
    """Tokens revealed at each step (the differences of `maskgit_revealed`)."""
    revealed = maskgit_revealed(n, steps)
    return [r - q for r, q in zip(revealed, [0] + revealed[:-1])]


@dataclass
class MaskGITSampler:
    gen_length: int = 256
    steps: int = 128
    temperature: float = 0.4
    rcr: bool = False
    record_steps: bool = True  # False: only the final completion (cheaper evaluation)
    # MDPO's generator runs LLaDA and Dream (autonomousvision/mdpo `src/mdlm_generation_utils.py`).
    families: ClassVar[frozenset] = frozenset({"llada", "dream"})

    def __post_init__(self):
        if self.steps < 1 or self.steps > self.gen_length:
            raise ValueError(f"sampler.steps ({self.steps}) must be in [1, gen_length = {self.gen_length}]")

    @property
    def records(self) -> frozenset:
        out = set() if self.rcr else {"unmask_step"}
        if self.record_steps:
            out |= {"step_predictions", "confidence", "step_masked"}
        return frozenset(out)

    def confidence(self, logits: Tensor, tokens: Tensor) -> Tensor:
        """[N, L] probability of `tokens` under softmax(logits / T) (T = 0: the untempered softmax), fp32."""
        scaled = logits.float() / self.temperature if self.temperature > 0 else logits.float()
        return torch.softmax(scaled, -1).gather(-1, tokens[..., None]).squeeze(-1)

    @torch.no_grad()
    def sample(self, policy, prompt_ids: Tensor, prompt_mask: Tensor, row_seeds: Tensor) -> Rollout:
        n, p = prompt_ids.shape
        length, device, mask_id = self.gen_length, prompt_ids.device, policy.mask_id
        x = torch.cat([prompt_ids, torch.full((n, length), mask_id, device=device)], 1)
        attention_mask = torch.cat([prompt_mask, torch.ones(n, length, dtype=torch.bool, device=device)], 1)
        gens = [row_generator(int(s), "rollout", device) for s in row_seeds]
        unmask_step = torch.full((n, length), -1, dtype=torch.long, device=device)
        stored = torch.zeros(n, length, dtype=torch.float64, device=device)  # RCR: confidence at commit
        revealed = maskgit_revealed(length, self.steps)
        counts = maskgit_counts(length, self.steps)
        record = [] if self.record_steps else None
        model_mask = None if bool(attention_mask.all()) else attention_mask  # checked once, not per step
        for t in range(self.steps):
            completion = x[:, p:]
            masked = completion == mask_id  # [N, L] positions masked in x_t
            drawn = masked_positions(masked) if self.temperature > 0 else None  # x0 is read where masked only
            logits = policy.logits(x, model_mask, keep=slice(p, None))
            x0 = gumbel_argmax(logits, self.temperature, gens, drawn)
            prediction = torch.where(masked, x0, completion)  # x̂0_t
            conf = self.confidence(logits, prediction)
            if record is not None:
                record.append((prediction, conf, masked))
            if self.rcr:
                stored = torch.where(masked, conf.double(), stored)
                keep = commit_top_k(stored, torch.full((n,), revealed[t], device=device))
                x[:, p:] = torch.where(keep, prediction, torch.full_like(prediction, mask_id))
                unmask_step = torch.where(keep & masked, t, torch.where(keep, unmask_step, -1))
            else:
                ranked = torch.where(masked, conf.double(), torch.full_like(stored, -torch.inf))
                commit = commit_top_k(ranked, torch.full((n,), counts[t], device=device))
                x[:, p:] = torch.where(commit, prediction, completion)
                unmask_step[commit] = t
        completion = x[:, p:]
        rollout = Rollout(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion,
                          completion_mask=completion_mask_from(completion, policy.stop_id),
                          group_ids=torch.zeros(n, dtype=torch.long, device=device), row_seeds=row_seeds,
                          unmask_step=unmask_step)
        if record is not None:
            preds, confs, masks = (torch.stack(parts, 1) for parts in zip(*record))
            rollout.step_predictions, rollout.confidence = preds, confs
            rollout.step_masked = masks
        return rollout
