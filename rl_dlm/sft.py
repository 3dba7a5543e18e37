"""Masked-diffusion SFT (LLaDA's supervised objective) and the recipe that builds the embedded tiny model.

Loss (LLaDA eq. 5, completion-only): for each row draw t ~ U(ε, 1), mask each completion token independently
with probability t (the prompt is never masked), and minimise

    − (1 / L) Σ_{k masked} log p_θ(o_k | x_t) / t

where the completion is the answer, `<|eot_id|>`, then `<|endoftext|>` filling the canvas to
`gen_length` — exactly how LLaDA-Instruct was trained, so the model learns to stop by emitting the fill.

`build_embedded_model` writes a complete model directory (config.json, safetensors, tokenizer) that loads
through the same `from_pretrained(local_dir)` path as a hub checkpoint:

    rl-dlm sft                                          # → a new outputs/sft-<time>/ (the shipped model is kept)
    rl-dlm sft --output checkpoints/tiny-llada          # rebuild the committed embedded model, on purpose
"""
from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rl_dlm.data.prompts import encode_prompts
from rl_dlm.data.tasks import GEN_LENGTH, SHIPPED_TASKS, make_split
from rl_dlm.data.tokenizer import build_tokenizer
from rl_dlm.models.policy import Policy, family_of


@dataclass
class SFTSettings:
    output: str | None = None  # None: a new directory outputs/sft-<time>; the shipped model only when named
    tasks: dict[str, int] = field(default_factory=lambda: {"countdown": 3000, "arithmetic": 3000, "sudoku": 3000})
    steps: int = 1500
    batch_size: int = 64
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    eps: float = 1e-3
    seed: int = 0
    bf16: bool = False  # bf16 autocast; fast on GPUs, slow on CPUs without avx512_bf16
    device: str = "cpu"
    model: dict = field(default_factory=dict)  # overrides of tiny_llada_config
    snapshot_every: int = 0  # also save `<output>-step<N>` every N steps (to pick a checkpoint)
    # Noisy demonstrations: this fraction of countdown SFT rows end in a defective answer (`defective_answer`).
    # The rows used by RL and evaluation are never altered.
    defective_countdown_answers: float = 0.45


def completion_targets(tokenizer, texts: list[str], gen_length: int, stop_id: int) -> torch.Tensor:
    """answer + <|eot_id|> + <|endoftext|> fill → [n, gen_length]; raises if an answer does not fit."""
    out = torch.full((len(texts), gen_length), tokenizer.eos_token_id, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [stop_id]
        if len(ids) > gen_length:
            raise ValueError(f"completion {i} has {len(ids)} tokens, more than gen_length={gen_length}")
        out[i, :len(ids)] = torch.tensor(ids)
    return out


def defective_answer(row: dict) -> dict:
    """A copy of a countdown row whose answer carries its result (`3*5+7=22` instead of `3*5+7`): a format
    defect that real SFT'd models show and that the countdown reward scores as unparseable (0). The embedded
    model is taught it on purpose, in a fraction of its demonstrations, so that RL has a failure to remove."""
    from rl_dlm.data.tasks import format_completion

    answer = f"{row['answer']}={row['target']}"
    return {**row, "answer": answer, "completion": format_completion(row["reasoning"], answer)}


def sft_loss(policy: Policy, prompt_ids, prompt_mask, targets, generator: torch.Generator, eps: float = 1e-3):
    """The 1/t-weighted masked-diffusion loss on completion tokens, averaged over rows."""
    n, length = targets.shape
    t = eps + (1 - eps) * torch.rand(n, 1, generator=generator)
    masked = torch.rand(n, length, generator=generator) < t
    noisy = torch.where(masked, torch.full_like(targets, policy.mask_id), targets)
    ids = torch.cat([prompt_ids, noisy], 1)
    attn = torch.cat([prompt_mask, torch.ones_like(masked)], 1)
    logits = policy.logits(ids.to(policy.device), attn.to(policy.device))[:, prompt_ids.shape[1]:]
    ce = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), targets.to(policy.device),
                                           reduction="none")
    weighted = (ce * masked.to(policy.device)) / t.to(policy.device)
    return weighted.sum() / (n * length)


def fresh_output_dir(root: str | Path = "outputs") -> Path:
    """`<root>/sft-<YYYYmmdd-HHMMSS>`, with `-2`, `-3`, ... when that exists already."""
    base = Path(root) / time.strftime("sft-%Y%m%d-%H%M%S")
    path, n = base, 2
    while path.exists():
        path, n = base.with_name(f"{base.name}-{n}"), n + 1
    return path


def build_embedded_model(settings: SFTSettings) -> Path:
    from rl_dlm.models.llada import LLaDAModelLM, tiny_llada_config

    if settings.output is None:
        settings = replace(settings, output=str(fresh_output_dir()))
    torch.manual_seed(settings.seed)
    # the vocabulary comes from the shipped tasks only, so a task registered later (a plug-in, a benchmark's
    # synthetic one) never changes the embedded tokenizer
    tokenizer = build_tokenizer(row["prompt"][0]["content"] + row["completion"] for task in SHIPPED_TASKS
                                for row in make_split(task, "train", 2000, seed=12345))
    config = tiny_llada_config(vocab_size=len(tokenizer), mask_token_id=tokenizer.mask_token_id,
                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                               **settings.model)
    model = LLaDAModelLM(config).to(settings.device)
    policy = Policy(model, tokenizer, family_of(model, tokenizer))
    data = {}  # task → (prompt ids, prompt mask, targets); every batch holds one task, one canvas length
    for task, n in settings.tasks.items():
        rows = make_split(task, "train", n, settings.seed)
        if task == "countdown" and settings.defective_countdown_answers > 0:
            rng = random.Random(f"defective/{settings.seed}")
            rows = [defective_answer(r) if rng.random() < settings.defective_countdown_answers else r
                    for r in rows]
        ids, mask = encode_prompts(tokenizer, [r["prompt"] for r in rows], None)
        data[task] = (ids, mask, completion_targets(tokenizer, [r["completion"] for r in rows], GEN_LENGTH[task],
                                                    policy.stop_id))
    names = list(data)
    weights = torch.tensor([float(settings.tasks[t]) for t in names])
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, betas=(0.9, 0.95),
                                  weight_decay=0.1)
    schedule = lambda s: min(1.0, (s + 1) / settings.warmup_steps) * 0.5 * (  # noqa: E731
        1 + math.cos(math.pi * min(s / settings.steps, 1.0)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    gen = torch.Generator().manual_seed(settings.seed)
    model.train()
    start, bar = time.time(), tqdm(range(settings.steps), desc="sft")
    for step in bar:
        prompt_ids, prompt_mask, targets = data[names[int(torch.multinomial(weights, 1, generator=gen))]]
        idx = torch.randint(len(targets), (settings.batch_size,), generator=gen)
        p_ids, p_mask = _trim_left(prompt_ids[idx], prompt_mask[idx])
        with torch.autocast(settings.device.split(":")[0], dtype=torch.bfloat16, enabled=settings.bf16):
            loss = sft_loss(policy, p_ids, p_mask, targets[idx], gen, settings.eps)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if settings.snapshot_every and (step + 1) % settings.snapshot_every == 0 and step + 1 < settings.steps:
            _save(model, tokenizer, Path(f"{settings.output}-step{step + 1}"), settings, loss.item(), start)
    return _save(model, tokenizer, Path(settings.output), settings, loss.item(), start)


def _save(model, tokenizer, out: Path, settings: SFTSettings, loss: float, start: float) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    # bf16 on disk keeps the committed checkpoint small; it is loaded back in the caller's dtype.
    export = copy.deepcopy(model).to("cpu", torch.bfloat16)
    export.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta = {"settings": asdict(settings), "final_loss": loss, "seconds": round(time.time() - start, 1),
            "parameters": sum(p.numel() for p in model.parameters())}
    (out / "sft_info.json").write_text(json.dumps(meta, indent=1))
    return out


def _trim_left(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop columns that are padding in every row of the batch."""
    first = int((~mask).all(0).long().cumprod(0).sum())
    return ids[:, first:], mask[:, first:]
