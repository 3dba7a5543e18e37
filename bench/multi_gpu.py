"""Multi-GPU bench: 3 diffu-GRPO steps on a randomly initialised 1.55B-parameter LLaDA, on 1 GPU and on 2 GPUs under
DeepSpeed ZeRO-2 and ZeRO-3; per-GPU throughput of each, and the 2-GPU runs' scaling against the 1-GPU run.

    python bench/multi_gpu.py                      # driver: the three runs, then bench/results/multi_gpu.json
    python bench/multi_gpu.py --size smoke         # the same on CPU with a tiny model (checks the script, not speed)
    torchrun --standalone --nproc_per_node 2 bench/multi_gpu.py --worker --deepspeed zero3 --record r.json

What runs: the real trainer (`DiffuGRPOTrainer`, semi-AR rollouts, one-step estimator, clipped objective with k3
KL), LoRA r 16 on every linear layer, bf16, μ = 1, 16 rows per GPU per step (G = 4), prompts of 64 tokens and
completions of 128 (block 32, 32 denoising steps). The 1-GPU run is the plain single-process path (no DeepSpeed);
the 2-GPU runs keep 16 rows per GPU, so ideal scaling is 2× the rows per second at the same per-GPU rate.

Model: LLaDA's architecture (`rl_dlm.models.llada.LLaDAModelLM`) at d 2048, 20 layers, 16 heads, SwiGLU 5632,
LLaDA's vocabulary size 126464 (untied head), random weights; a synthetic word-level tokenizer of the same size
(`t0` … `t126463` plus LLaDA's special tokens), random prompts, and a reward that varies within a group (token sum
mod 7) so every step has real gradients. Random weights are never confident, so every rollout runs all its steps.

Reported per run (steps 2..3; step 1 includes CUDA warm-up): seconds per optimizer step, rows/s per GPU, rollout
tokens/s per GPU (generated), update tokens/s per GPU (forwarded with grad), and peak GPU memory.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.record import write_record  # noqa: E402

SIZES = {
    "1.5b": dict(d_model=2048, n_layers=20, n_heads=16, mlp_hidden_size=5632, vocab_size=126464),
    "smoke": dict(d_model=64, n_layers=2, n_heads=4, mlp_hidden_size=128, vocab_size=512),
}
RUN = dict(per_device=16, group=4, prompt_len=64, gen_len=128, block=32, diffusion_steps=32, steps=3)
SMOKE_RUN = dict(per_device=4, group=4, prompt_len=8, gen_len=16, block=8, diffusion_steps=4, steps=3)


def synthetic_tokenizer(vocab_size: int):
    """Word-level: `t<i>` is token i, with LLaDA's end-of-text, end-of-turn and mask tokens at the top of the range."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    specials = {"<|endoftext|>": vocab_size - 3, "<|eot_id|>": vocab_size - 2, "<|mdm_mask|>": vocab_size - 1}
    vocab = {f"t{i}": i for i in range(vocab_size - 3)} | specials
    tok = Tokenizer(WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", mask_token="<|mdm_mask|>",
                                   additional_special_tokens=["<|eot_id|>"])


def build_policy(size: str, device: torch.device):
    from rl_dlm.models.llada import LLaDAModelLM, tiny_llada_config
    from rl_dlm.models.policy import LoraSettings, load_policy

    shape = SIZES[size]
    tokenizer = synthetic_tokenizer(shape["vocab_size"])
    config = tiny_llada_config(mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id,
                               pad_token_id=tokenizer.pad_token_id, embedding_size=shape["vocab_size"],
                               max_sequence_length=1024, **shape)
    torch.manual_seed(0)
    with torch.device(device):
        model = LLaDAModelLM(config)
    if device.type == "cuda":
        model = model.to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    policy = load_policy(model, tokenizer=tokenizer, lora=LoraSettings(r=16, alpha=32, dropout=0.0), device=device)
    return policy, params


def token_sum_reward(completion_ids, **kw):
    return [float(sum(ids) % 7) for ids in completion_ids]


def worker(a) -> None:
    import numpy as np

    from rl_dlm import DiffuGRPOConfig, DiffuGRPOTrainer

    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    run = SMOKE_RUN if a.size == "smoke" else RUN
    policy, params = build_policy(a.size, device)
    vocab = SIZES[a.size]["vocab_size"]
    rng = np.random.default_rng(0)
    rows = [{"prompt": " ".join(f"t{i}" for i in rng.integers(10, vocab - 10, run["prompt_len"]))} for _ in range(64)]
    args = DiffuGRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-multi-gpu-"), max_steps=run["steps"], num_generations=run["group"],
        per_device_train_batch_size=run["per_device"], gradient_accumulation_steps=1, num_iterations=1,
        max_prompt_length=run["prompt_len"], max_completion_length=run["gen_len"], block_length=run["block"],
        diffusion_steps=run["diffusion_steps"], learning_rate=1e-5, bf16=cuda, deepspeed=a.deepspeed,
        lora_r=16, lora_alpha=32, lora_dropout=0.0, report_to=["none"], seed=0)
    trainer = DiffuGRPOTrainer(model=policy, reward_funcs=token_sum_reward, args=args, train_dataset=rows)
    trainable = sum(p.numel() for p in policy.trainable_parameters())
    trainer.setup()  # DeepSpeed engine (or the local optimizer) before the clock starts
    marks = []

    def progress(step, info):
        if cuda:
            torch.cuda.synchronize()
        marks.append(time.perf_counter())

    if cuda:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    marks.append(time.perf_counter())
    history = trainer.train(progress=progress)
    rt = trainer.runtime
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    peaks = [peak]
    if rt.world_size > 1:
        peaks = [None] * rt.world_size
        torch.distributed.all_gather_object(peaks, peak)
    trainer.close()
    if rt.rank:
        return
    wall = [b - a_ for a_, b in zip(marks, marks[1:])]
    steps = [{"step": h["step"], "wall_s": w, **{k: v for k, v in h.items() if k.startswith(("time/", "tokens_per_s/"))},
              "loss": h["loss"], "reward": h["reward"]} for h, w in zip(history, wall)]
    steady = steps[1:] or steps
    mean = lambda key: sum(s[key] for s in steady) / len(steady)  # noqa: E731
    record = {
        "mode": a.deepspeed or "single", "world_size": rt.world_size, "params": params, "trainable_params": trainable,
        "rows_per_gpu_per_step": run["per_device"], "run": run, "model": SIZES[a.size],
        "device": torch.cuda.get_device_name(0) if cuda else "cpu", "peak_mem_gib_per_gpu": peaks,
        "steps": steps,
        "steady": {"step_s": mean("wall_s"), "rows_per_s_per_gpu": run["per_device"] / mean("wall_s"),
                   "rollout_tokens_per_s_per_gpu": mean("tokens_per_s/rollout"),
                   "update_tokens_per_s_per_gpu": mean("tokens_per_s/update")},
    }
    Path(a.record).write_text(json.dumps(record, indent=1))


def driver(a) -> None:
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    me = str(Path(__file__).resolve().relative_to(ROOT))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", me, "--worker"]
    plans = [("single", [sys.executable, me, "--worker"]), ("zero2", [*torchrun, "--deepspeed", "zero2"]),
             ("zero3", [*torchrun, "--deepspeed", "zero3"])]
    runs, commands = {}, {}
    for name, cmd in plans:
        record = Path(tempfile.mkdtemp()) / f"{name}.json"
        cmd = [*cmd, "--size", a.size, "--record", str(record)]
        commands[name] = " ".join(["python" if c == sys.executable else c for c in cmd[:-2]])
        start = time.time()
        try:
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=a.timeout)
            ok = done.returncode == 0 and record.exists()
            log = (done.stdout + done.stderr)[-3000:]
        except subprocess.TimeoutExpired as exc:
            ok, log = False, f"timed out after {a.timeout} s: {str(exc.stderr)[-2000:]}"
        runs[name] = json.loads(record.read_text()) if ok else {"error": log}
        runs[name]["wall_s_total"] = time.time() - start
        print(f"{name}: {'ok' if ok else 'FAILED'} in {time.time() - start:.0f} s", flush=True)
        if not ok:
            print(log, flush=True)
        save(out, runs, commands)  # after every run, so a cut-off driver still leaves what it measured


def save(out: Path, runs: dict, commands: dict) -> None:
    base = runs.get("single", {}).get("steady")
    for name in ("zero2", "zero3"):
        steady = runs.get(name, {}).get("steady")
        if base and steady:
            runs[name]["per_gpu_vs_1gpu"] = steady["rows_per_s_per_gpu"] / base["rows_per_s_per_gpu"]
    revision = {"git_revision": os.environ["RL_DLM_REV"]} if os.environ.get("RL_DLM_REV") else {}
    write_record(out, "multi_gpu", runs, commands=commands, **revision, units={
        "step_s": "seconds per optimizer step (mean of steps 2..3)", "rows_per_s_per_gpu": "rollout rows "
        "(completions) trained per second per GPU", "rollout_tokens_per_s_per_gpu": "generated tokens per second "
        "of the rollout stage per GPU", "update_tokens_per_s_per_gpu": "tokens forwarded with grad per second of "
        "the update stage per GPU", "peak_mem_gib_per_gpu": "GiB (torch max allocated)",
        "per_gpu_vs_1gpu": "rows/s per GPU relative to the 1-GPU run (1.0 = perfect scaling)"})
    print(json.dumps({k: {"steady": v.get("steady"), "per_gpu_vs_1gpu": v.get("per_gpu_vs_1gpu"),
                          "peak": v.get("peak_mem_gib_per_gpu"), "error": v.get("error", "")[-300:]}
                      for k, v in runs.items()}, indent=1), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", action="store_true", help="one run (under torchrun for 2 GPUs)")
    p.add_argument("--deepspeed", default=None, help="zero2 | zero3 (worker)")
    p.add_argument("--size", default="1.5b", choices=sorted(SIZES))
    p.add_argument("--record", default=None, help="worker: where rank 0 writes its record")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "multi_gpu.json"), help="driver: the record")
    p.add_argument("--timeout", type=int, default=150, help="driver: seconds per run")
    a = p.parse_args()
    worker(a) if a.worker else driver(a)


if __name__ == "__main__":
    main()
