"""Inpainting-guided exploration (IGPO, arXiv 2509.10396 §3): when a whole group fails, regenerate it with
pieces of a reference reasoning trace fixed in the canvas, and let correct hinted samples into the group.

`HintRefiner` is a loop stage 2b (`rl_dlm.loop.Refiner`):

1. **Trigger** — only a group in which *no* sample is correct by the correctness reward (the reward named by
   `correct_reward`, correct = value ≥ its threshold; never the total reward, which includes format credit)
   and whose dataset row has a reference trace (`trace_column`, default `reasoning`).
2. **Hints** (`plan_hints`) — tokenise the trace, truncate it to L_eff = L − tail, cut it into chunks of
   U{5..10} tokens (a final remainder shorter than 5 is dropped); per sample draw η ~ U[0.2, 0.6], the draws
   sorted across the group; reveal ⌈η·n⌉ of the n non-final chunks at random; the final chunk (the answer)
   is revealed only with `reveal_answer_chunk=True`. Positions are stretched by min(L_eff / len(trace), 1.5)
   with gaps between revealed chunks capped at 100, inside [0, L_eff).
   The tail left free is the paper's 30 of 256 slots scaled to the canvas, tail = min(30, ⌈30·L/256⌉)
   (6 for L = 48): a fixed 30 would leave almost nothing of a short canvas to hints.
3. **Sampling with hints** — the hint tokens are fixed in the canvas, never re-predicted, and excluded from
   the per-step reveal budget (`SemiARSampler.sample(..., hint_ids=...)`).
4. **Replacement** — a uniformly random subset of ≤ k (= 4) of the group's correct hinted samples replaces
   the first slots of their group (the group size is unchanged), never more than G − 1 so one self-generated
   (wrong) sample remains: with G ≤ k a fully replaced group would be all correct and carry no advantage.
   The subset is drawn per row (`pick_replacements`): each hinted sample draws a key from its own row seed
   (stream "hint/keep"), and the correct ones with the smallest keys win, so the choice depends on no other
   row and on no global RNG. (η is sorted ascending across the group, so keeping the *first* correct ones
   would favour the least-hinted successes.) The mixed rollout is re-scored.
5. **Entropy filter** (`entropy_filter`) — per sample, only the top τ = 20% (max(1, ⌊τ·n⌋) of the n hint
   tokens, the reference's `max(1, int(n·τ))`) by old-policy entropy stay in the loss; self-generated tokens
   always do. The result is `Rollout.loss_mask`, which the loop hands to the objective: a token ratio
   averages over it and a sequence ratio takes its mean over it, so the filter acts in both.

Checked against facebookresearch/igpo@e85eaea (`trainer_igpo.py`: the all-wrong branch of
`_generate_and_score_completions`, the entropy filter; `utils/generate.py`:
`create_spacing_scaled_inpainting_sequence`, `scale_chunk_positions`). Deviations, on purpose:
- the trigger uses the correctness reward's threshold (the reference compares a weighted score to 0.0);
- the final chunk is never revealed by default (the paper's choice; the code always reveals it);
- hints and the replacement subset are drawn from per-row generators, not from a global reseed and the
  global `torch.randperm`;
- at most G − 1 samples of a group are replaced (the reference replaces up to k, all of a group when G ≤ k);
- the free tail is the reference's 30 slots at L = 256, scaled down for short canvases (above);
- the fraction η is taken over the non-final chunks (the reference masks ⌊(1 − η)·n⌋ of all n chunks, the
  final one included, and then reveals the final one regardless);
- the entropy filter also applies to sequence ratios (the reference's GSPO branch averages over all
  positions, which makes the filter a no-op there).

    refiner = HintRefiner(sampler=semi_ar, is_correct=runner.is_correct)   # Components(refiners=[refiner])
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from rl_dlm.components import Rollout
from rl_dlm.sampling.rollout import row_generator
from rl_dlm.sampling.semi_ar import commit_top_k


@dataclass
class HintSettings:
    min_chunk: int = 5
    max_chunk: int = 10
    eta_min: float = 0.2
    eta_max: float = 0.6
    max_stretch: float = 1.5
    max_gap: int = 100
    free_tail: int = 30  # at L = 256; scaled down for shorter canvases
    reveal_answer_chunk: bool = False

    def tail(self, gen_length: int) -> int:
        return min(self.free_tail, math.ceil(self.free_tail * gen_length / 256))


def _randint(lo: int, hi: int, gen: torch.Generator) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=gen))


def plan_hints(trace_ids: list[int], gen_length: int, eta: float, gen: torch.Generator,
               settings: HintSettings = HintSettings()) -> Tensor:
    """One sample's hint canvas: [L] token ids at the hinted positions, −1 where the model generates."""
    out = torch.full((gen_length,), -1, dtype=torch.long)
    effective = gen_length - settings.tail(gen_length)
    trace = list(trace_ids)[:max(effective, 0)]
    chunks, i = [], 0
    while i < len(trace):
        size = min(_randint(settings.min_chunk, settings.max_chunk, gen), len(trace) - i)
        if size < settings.min_chunk:
            break
        chunks.append((i, i + size))
        i += size
    if not chunks:
        return out
    candidates = chunks[:-1]
    count = len(candidates) - int(len(candidates) * (1 - eta))  # at least a fraction η
    order = torch.randperm(len(candidates), generator=gen)[:count].tolist()
    revealed = sorted(candidates[j] for j in order)
    if settings.reveal_answer_chunk:
        revealed.append(chunks[-1])
    stretch = min(max(effective / len(trace), 1.0), settings.max_stretch)
    position, previous_end = None, None
    for start, end in revealed:
        if position is None:
            position = int(start * stretch)
        else:
            position = position + min(int((start - previous_end) * stretch), settings.max_gap)
        stop = min(position + end - start, effective)
        if stop <= position:
            break
        out[position:stop] = torch.tensor(trace[start:start + stop - position])
        previous_end, position = end, position + (end - start)
    return out


def entropy_filter(entropy: Tensor, hint_mask: Tensor, completion_mask: Tensor, top_frac: float) -> Tensor:
    """[N, L] → loss mask: the completion tokens, less the hint tokens outside each row's top max(1, ⌊τ·n⌋)
    by entropy (the reference's `max(1, int(n·τ))`, in the same float64 arithmetic)."""
    hints = hint_mask & completion_mask
    n = hints.sum(1)
    keep_n = torch.where(n > 0, torch.clamp(torch.floor(n.double() * top_frac).long(), min=1), 0)
    ranked = torch.where(hints, entropy.double(), torch.full_like(entropy, -torch.inf, dtype=torch.float64))
    kept = commit_top_k(ranked, keep_n)
    return completion_mask & (~hint_mask | kept)


def pick_replacements(correct: list[bool], seeds: list[int], cap: int) -> list[int]:
    """Indices of ≤ `cap` correct hinted samples of one group, a uniformly random subset: each sample draws a
    key from its own row seed, and the correct ones with the smallest keys are kept, in index order."""
    keys = [float(torch.rand(1, generator=row_generator(s, "hint/keep"), dtype=torch.float64)) for s in seeds]
    winners = sorted((keys[j], j) for j, ok in enumerate(correct) if ok)[:max(cap, 0)]
    return sorted(j for _, j in winners)


@torch.no_grad()
def completion_entropy(policy, rollout: Rollout, rows: list[int] | None = None) -> Tensor:
    """[N, L] entropy of the old policy at each completion slot, on the one-step view (completion masked);
    only `rows` are computed (the others are 0)."""
    n, p = rollout.prompt_ids.shape
    length = rollout.completion_ids.shape[1]
    out = torch.zeros(n, length, device=rollout.completion_ids.device)
    was_training = policy.model.training
    policy.model.eval()
    try:
        for i in range(n) if rows is None else rows:  # one row at a time: [1, L, V] in fp32 at most
            ids = torch.cat([rollout.prompt_ids[i:i + 1],
                             torch.full((1, length), policy.mask_id, device=rollout.prompt_ids.device)], 1)
            attn = torch.cat([rollout.prompt_mask[i:i + 1], torch.ones(1, length, dtype=torch.bool,
                                                                       device=ids.device)], 1)
            logp = torch.log_softmax(policy.logits(ids, attn)[:, p:].float(), -1)
            out[i] = -(logp.exp() * logp).sum(-1)[0]
        return out
    finally:
        policy.model.train(was_training)


@dataclass
class HintRefiner:
    sampler: object  # has sample(policy, prompt_ids, prompt_mask, row_seeds, hint_ids=...)
    is_correct: Callable[[dict], Tensor]  # RewardRunner.is_correct: per-function rewards → [N] bool
    trace_column: str = "reasoning"
    max_replacements: int = 4
    entropy_top_frac: float = 0.2
    hints: HintSettings = field(default_factory=HintSettings)
    records: frozenset = frozenset({"hint_mask", "loss_mask"})  # of the rows it rewrites; the rest keep None

    def __post_init__(self):
        if self.is_correct is None:
            raise ValueError("refiner=hints (IGPO) triggers on the correctness reward: set task.correct_reward "
                             "(correct_reward= in Python) to the name of the reward whose value marks a correct answer")
        if "hint_ids" not in inspect.signature(self.sampler.sample).parameters:
            raise ValueError(f"refiner=hints samples with hints: sampler {type(self.sampler).__name__} takes no "
                             "hint_ids; use sampler=semi_ar")
        if not (1 <= self.hints.min_chunk <= self.hints.max_chunk):
            raise ValueError(f"need 1 ≤ hints.min_chunk ≤ hints.max_chunk, got {self.hints.min_chunk}, "
                             f"{self.hints.max_chunk}")
        if not (0.0 <= self.hints.eta_min <= self.hints.eta_max <= 1.0):
            raise ValueError(f"need 0 ≤ hints.eta_min ≤ hints.eta_max ≤ 1, got {self.hints.eta_min}, "
                             f"{self.hints.eta_max}")
        if not 0.0 < self.entropy_top_frac <= 1.0:
            raise ValueError(f"entropy_top_frac must be in (0, 1], got {self.entropy_top_frac}")

    def check_rows(self, rows: list[dict]) -> None:
        """The training rows carry the reference trace the hints come from."""
        if rows and not any(row.get(self.trace_column) for row in rows):
            raise ValueError(f"refiner.trace_column={self.trace_column!r}: no row of train_dataset has this "
                             f"reference-trace column (columns: {sorted(rows[0])}); IGPO hints come from it")

    def hint_canvas(self, tokenizer, trace: str, seeds: list[int], gen_length: int) -> Tensor:
        """[G, L] hints for one group: η drawn per sample, sorted across the group."""
        ids = tokenizer(trace, add_special_tokens=False)["input_ids"]
        gens = [row_generator(s, "hint") for s in seeds]
        etas = sorted(self.hints.eta_min + (self.hints.eta_max - self.hints.eta_min) * float(torch.rand(1, generator=g))
                      for g in gens)
        return torch.stack([plan_hints(ids, gen_length, eta, g, self.hints) for eta, g in zip(etas, gens)])

    def __call__(self, policy, rollout: Rollout, rows: list[dict], result, score_fn):
        length, device = rollout.completion_ids.shape[1], rollout.completion_ids.device
        group_ids = rollout.group_ids.cpu()
        correct = self.is_correct(result.per_function).cpu()
        members = {b: (group_ids == b).nonzero().flatten().tolist() for b in range(len(rows))}
        triggered = [b for b in range(len(rows)) if members[b] and not correct[members[b]].any()
                     and rows[b].get(self.trace_column)]
        stats = {"igpo/triggered_groups": len(triggered) / len(rows), "igpo/replaced": 0.0,
                 "igpo/accuracy_before_hints": correct.float().mean().item()}
        if not triggered:
            result.stats.update(stats)
            return rollout, result
        # Regenerate every triggered group with hints (one sampler call).
        index = [i for b in triggered for i in members[b]]
        seeds = rollout.row_seeds[index].tolist()
        canvases, offset = [], 0
        for b in triggered:
            size = len(members[b])
            canvases.append(self.hint_canvas(policy.tokenizer, rows[b][self.trace_column],
                                             seeds[offset:offset + size], length))
            offset += size
        hint_seeds = torch.tensor([int(torch.randint(0, 2 ** 62, (1,), generator=row_generator(s, "hint/seed")))
                                   for s in seeds], device=device)
        index_t = torch.tensor(index, device=device)
        was_training = policy.model.training
        policy.model.eval()
        try:
            hinted = self.sampler.sample(policy, rollout.prompt_ids[index_t], rollout.prompt_mask[index_t],
                                         hint_seeds, hint_ids=torch.cat(canvases).to(device))
        finally:
            policy.model.train(was_training)
        ok = self.is_correct(score_fn(_with_rows(rollout, index_t, hinted)).per_function).cpu()[index]
        # A random subset of ≤ k correct hinted samples of a group takes its first slots.
        source, target, offset = [], [], 0
        for b in triggered:
            size = len(members[b])
            cap = min(self.max_replacements, size - 1)  # keep ≥ 1 own sample, or the group has no signal
            picked = pick_replacements(ok[offset:offset + size].tolist(), seeds[offset:offset + size], cap)
            winners = [offset + j for j in picked]
            source += winners
            target += members[b][:len(winners)]
            offset += size
        stats["igpo/hinted_correct"] = ok.float().mean().item()
        stats["igpo/replaced"] = len(target) / rollout.num_rows
        if not target:
            result.stats.update(stats)
            return rollout, result
        mixed = _with_rows(rollout, torch.tensor(target, device=device),
                           hinted.rows(torch.tensor(source, device=device)))
        entropy = completion_entropy(policy, mixed, rows=target)  # only the hinted rows have hint tokens
        mixed = replace(mixed, loss_mask=entropy_filter(entropy, mixed.hint_mask, mixed.completion_mask,
                                                        self.entropy_top_frac))
        new_result = score_fn(mixed)
        new_result.stats.update(stats)
        return mixed, new_result


def _with_rows(rollout: Rollout, index: Tensor, new: Rollout) -> Rollout:
    """A copy of `rollout` whose rows `index` take the completion (and commit map, hints) of `new`."""
    def put(old: Tensor | None, value: Tensor | None, fill) -> Tensor | None:
        if value is None:
            return old
        base = old.clone() if old is not None else torch.full_like(rollout.completion_ids, fill, dtype=value.dtype)
        base[index] = value
        return base

    return replace(rollout, completion_ids=put(rollout.completion_ids, new.completion_ids, 0),
                   completion_mask=put(rollout.completion_mask, new.completion_mask, False),
                   unmask_step=put(rollout.unmask_step, new.unmask_step, -1),
                   hint_mask=put(rollout.hint_mask, new.hint_mask, False))


# config-group entries (rl_dlm/component_groups.py)
COMPONENTS = {"refiner/hints": HintRefiner}
