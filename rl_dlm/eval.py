"""Held-out evaluation: greedy rollouts scored by the task's rewards → accuracy, and the papers' protocol.

The protocol of the LLaDA RL papers (d1 and its successors; docs/evaluation.md): zero-shot, greedy (T = 0), each
of the generation lengths 128 / 256 / 512 with steps = length / 2 and block 32. Any sampler can stand in for the
semi-AR one (`make_sampler`); the protocol only fixes its length, steps, block and temperature.

    result = evaluate(policy, SemiARSampler(gen_length=64, block_length=16, steps=32), rows, runner)
    print(result["accuracy"])

    results = evaluate_protocol(policy, [EvalTask("gsm8k", rows, runner)], gen_lengths=[128, 256, 512],
                                completions_path="outputs/eval/completions.jsonl")
    print(format_results(results))

A row is correct when the task's `correct_reward` reaches the runner's threshold (1.0). The completions file
holds one JSON object per (task, generation length, problem): the prompt, the decoded completion, whether it
was correct, the total reward and each reward function's value (null where a function returned None or failed),
and the row's other columns. `rl-dlm eval` (rl_dlm.hydra_app.eval_main) is the command-line front end.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch
from tqdm.auto import tqdm

from rl_dlm.data.prompts import completion_texts
from rl_dlm.rollout_stage import batch_row_seeds, generate, score_rollout

PAPER_GEN_LENGTHS = (128, 256, 512)
PAPER_BLOCK_LENGTH = 32
PAPER_STEPS_PER_TOKEN = 0.5


@dataclass
class EvalTask:
    """One task to evaluate: its held-out rows, its reward runner (with `correct` set) and, optionally, its own
    protocol settings (None: the ones given to `evaluate_protocol`)."""

    name: str
    rows: list[dict]
    rewards: object  # RewardRunner
    max_prompt_length: int | None = None
    gen_lengths: Sequence[int] | None = None
    block_length: int | None = None
    steps_per_token: float | None = None


def protocol_steps(gen_length: int, steps_per_token: float, block_length: int) -> int:
    """Denoising steps for one generation length: gen_length × steps_per_token, checked against the blocks."""
    if gen_length % block_length:
        raise ValueError(f"eval.gen_lengths: {gen_length} is not a multiple of eval.block_length={block_length}; "
                         f"use lengths divisible by {block_length} or set eval.block_length")
    steps = round(gen_length * steps_per_token)
    blocks = gen_length // block_length
    if steps < blocks or steps % blocks:
        raise ValueError(f"eval.steps_per_token={steps_per_token} gives {steps} steps for gen_length={gen_length}, "
                         f"which is not a positive multiple of its {blocks} blocks of {block_length}")
    return steps


def semi_ar_greedy(gen_length: int, steps: int, block_length: int):
    """The papers' sampler: LLaDA semi-AR, low-confidence remasking, T = 0."""
    from rl_dlm.sampling.semi_ar import SemiARSampler

    return SemiARSampler(gen_length=gen_length, block_length=block_length, steps=steps, temperature=0.0)


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else x


def _jsonable(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "prompt"}


@torch.no_grad()
def _run(policy, sampler, rows: list[dict], rewards, batch_size: int, max_prompt_length: int | None, seed: int,
         desc: str, sink: IO | None, meta: dict) -> dict:
    if rewards.correct is None:
        raise ValueError("evaluation needs task.correct_reward: the reward whose value marks a correct answer")
    correct, totals = [], []
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, leave=False, disable=len(rows) <= batch_size):
        batch = rows[start:start + batch_size]
        seeds = batch_row_seeds(seed, start, len(batch))
        rollout = generate(policy, sampler, batch, 1, seeds, max_prompt_length)
        result = score_rollout(policy, rewards, rollout, batch, 1)
        ok = rewards.is_correct(result.per_function)
        correct += ok.tolist()
        totals += result.total.tolist()
        if sink is not None:
            texts = completion_texts(policy.tokenizer, rollout.completion_ids, rollout.completion_mask)
            for i, (row, text) in enumerate(zip(batch, texts)):
                record = {**meta, "index": start + i, "prompt": row["prompt"], "completion": text,
                          "correct": bool(ok[i]), "reward": _finite(float(result.total[i])),
                          "rewards": {k: _finite(float(v[i])) for k, v in result.per_function.items()},
                          "columns": _jsonable(row)}
                sink.write(json.dumps(record, default=str) + "\n")
            sink.flush()
    finite = [t for t in totals if not math.isnan(t)]
    return {"accuracy": sum(correct) / max(len(correct), 1), "reward": sum(finite) / max(len(finite), 1),
            "n": len(correct)}


def evaluate(policy, sampler, rows: list[dict], rewards, batch_size: int = 64, max_prompt_length: int | None = None,
             seed: int = 0, completions_path: str | Path | None = None, desc: str = "eval") -> dict:
    """Accuracy of `policy` on `rows` with one sampler configuration → {accuracy, reward, n}."""
    if completions_path is None:
        return _run(policy, sampler, rows, rewards, batch_size, max_prompt_length, seed, desc, None, {})
    Path(completions_path).parent.mkdir(parents=True, exist_ok=True)
    with open(completions_path, "w") as sink:
        return _run(policy, sampler, rows, rewards, batch_size, max_prompt_length, seed, desc, sink, {})


def evaluate_protocol(policy, tasks: Sequence[EvalTask], gen_lengths: Sequence[int] = PAPER_GEN_LENGTHS,
                      block_length: int = PAPER_BLOCK_LENGTH, steps_per_token: float = PAPER_STEPS_PER_TOKEN,
                      make_sampler: Callable[[int, int, int], object] | None = semi_ar_greedy, batch_size: int = 64,
                      seed: int = 0, completions_path: str | Path | None = None, bf16: bool = False,
                      on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Every task at every generation length → one result dict per (task, length):
    {task, gen_length, steps, block_length, accuracy, reward, n, seconds}.

    `make_sampler(gen_length, steps, block_length)` builds the sampler for one length (default: greedy semi-AR).
    `on_result` is called with each result as soon as it is known (the CLI prints it)."""
    make_sampler = make_sampler or semi_ar_greedy
    # Check every (task, length) before the first rollout: a bad length fails in a second, not after an hour.
    plan = []
    for task in tasks:
        block = task.block_length or block_length
        ratio = task.steps_per_token or steps_per_token
        for length in (task.gen_lengths or gen_lengths):
            plan.append((task, int(length), protocol_steps(int(length), ratio, block), block))
    sink = None
    if completions_path is not None:
        Path(completions_path).parent.mkdir(parents=True, exist_ok=True)
        sink = open(completions_path, "w")
    results = []
    autocast = torch.autocast(policy.device.type, dtype=torch.bfloat16, enabled=bf16)
    try:
        with autocast:
            for task, length, steps, block in plan:
                start = time.time()
                meta = {"task": task.name, "gen_length": length, "steps": steps, "block_length": block}
                out = _run(policy, make_sampler(length, steps, block), task.rows, task.rewards, batch_size,
                           task.max_prompt_length, seed, f"{task.name} L={length}", sink, meta)
                results.append({**meta, **out, "seconds": round(time.time() - start, 2)})
                if on_result is not None:
                    on_result(results[-1])
    finally:
        if sink is not None:
            sink.close()
    return results


def load_for_eval(path: str, adapter: str | None = None, device: str = "auto", bf16: bool | None = None,
                  trust_remote_code: bool = False, check_alignment: bool = True, cuda_graphs: bool = True,
                  fused_projections: bool = True, compiled_elementwise: bool = False):
    """A policy for evaluation, without a trainer: the base model, plus a LoRA adapter merged in when `adapter`
    is given (or when `path` itself is an adapter directory, as `rl-dlm train` saves to `<output_dir>/final`).
    `device="auto"` picks CUDA when available; weights load in bf16 there (`bf16=None`), fp32 on CPU.
    `cuda_graphs`, `fused_projections` and `compiled_elementwise` are the trainer's knobs of the same names
    (rl_dlm/models/cuda_graphs.py, fused_projections.py, elementwise.py): the same tokens as without them (up to
    rounding for the last two), faster."""
    from rl_dlm.models.policy import load_policy

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if bf16 is None:
        bf16 = torch.device(device).type == "cuda"
    local = Path(str(path))
    if adapter is None and (local / "adapter_config.json").exists() and not (local / "config.json").exists():
        adapter = str(local)
        path = json.loads((local / "adapter_config.json").read_text())["base_model_name_or_path"]
    tokenizer = None
    if adapter is not None and (Path(adapter) / "tokenizer_config.json").exists():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(adapter))
    extra = {"trust_remote_code": True} if trust_remote_code else {}
    if not check_alignment:
        extra["check_alignment"] = False
    policy = load_policy(path, tokenizer=tokenizer, lora=None, dtype="bfloat16" if bf16 else "float32",
                         device=device, fused_projections=fused_projections,
                         compiled_elementwise=compiled_elementwise, **extra)
    if adapter is not None:
        from peft import PeftModel

        policy.model = PeftModel.from_pretrained(policy.model, str(adapter)).merge_and_unload()
    policy.model.eval()
    policy.cuda_graphs = cuda_graphs
    return policy


def format_results(results: Sequence[dict]) -> str:
    """A plain-text table: one line per (task, generation length)."""
    lines = [f"{'task':<16} {'gen_length':>10} {'steps':>6} {'block':>6} {'accuracy':>9} {'reward':>8} {'n':>6}"]
    for r in results:
        lines.append(f"{r['task']:<16} {r['gen_length']:>10} {r['steps']:>6} {r['block_length']:>6} "
                     f"{r['accuracy']:>9.3f} {r['reward']:>8.3f} {r['n']:>6}")
    return "\n".join(lines)
