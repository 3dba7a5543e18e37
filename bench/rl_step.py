"""The real trainers end to end at the 8B shapes: seconds, tokens/s, FLOP rate and peak memory per stage and algorithm.

Each algorithm runs through the same code path as `rl-dlm train recipe=<its 8B recipe>`: the recipe is composed with
`rl_dlm.hydra_app.compose_config`, the trainer is made by `rl_dlm.hydra_app.build` (config validation, checkpoint
loading with the family checks, reward functions, data) and `trainer.train()` runs the loop. What the benchmark
changes, and nothing else: the model path (a random checkpoint, below), the task (synthetic prompts and a
benchmark-only random reward, below), `max_steps` (`--rollouts` rollout batches), no evaluation, no checkpoints, no
metric sinks, an explicit `output_dir`, and `max_prompt_length` (`--prompt-length`, default 200: the LLaDA papers'
setting and the shape of the earlier rollout / update measurements; the recipes cap prompts at 512 so that no chat
template is ever cut, and GSM8K/MATH prompts are shorter than that).

| algorithm | recipe | model shape |
|---|---|---|
| diffu_grpo | recipes/llada8b_gsm8k.yaml | LLaDA-8B-Instruct |
| gdpo | recipes/llada8b_gdpo.yaml | LLaDA-8B-Instruct |
| coupled_grpo | recipes/diffucoder_coupled_grpo.yaml | DiffuCoder-7B (Dream-7B geometry) |
| cj_grpo | recipes/llada8b_cj_grpo.yaml | LLaDA-8B-Instruct |
| mdpo | recipes/llada8b_mdpo.yaml | LLaDA-8B-Instruct |
| igpo | recipes/llada8b_igpo.yaml | LLaDA-8B-Instruct |
| spg | recipes/llada8b_spg.yaml | LLaDA-8B-Instruct |
| espo | recipes/llada8b_espo.yaml | LLaDA-8B-Instruct |
| gdsd | recipes/llada8b_gdsd.yaml | LLaDA-8B-Instruct |

- **Checkpoints**: `bench/random_checkpoint.py` writes a randomly initialised checkpoint of each shape in the
  official layout (config.json with architectures / model_type / auto_map, sharded safetensors with the official
  names and an index, a tokenizer with the real vocabulary size, the family's special-token ids and a chat
  template) under `--ckpt-dir`, once per machine (reused when present). 8B: about 16 GB each, written in bf16 on
  the GPU shard by shard.
- **Data and reward**: synthetic prompt rows (`--prompt-length` tokens after the chat template and left
  truncation, a reference trace of the completion length for IGPO's hints), scored by
  `bench/random_reward.py`: BENCHMARK-ONLY seeded random scores, so groups have non-zero advantages and every
  update does its full work (and a random 0/1 "correctness" with p = 0.1 that only IGPO's hint trigger reads).
  Random weights never emit end-of-turn, so every completion has the full length.
- **Runs**: `--rollouts` (default 2) rollout batches per algorithm; the first is the warm-up and the rest are
  averaged. Each algorithm runs in a fresh process (`--no-isolate`: in this process, memory freed in between).
- **Measured** per algorithm (bench/stage_meter.py states the FLOP count): seconds per stage (rollout, reward,
  refine, advantage, old_logp = old and reference log-probs, update = inner updates with their optimizer steps),
  seconds per rollout batch (wall) and per optimizer step, tokens/s per stage (forwarded; generated for the
  rollout), each stage's achieved FLOP rate as a fraction of the bf16 matmul rate measured at start-up (an
  8192³ product), and peak GPU memory (allocated and reserved).
- **Output**: `<out>/rl_step.json` (bench/record.py: metrics, units, command, device, git revision, date; written
  after every algorithm, so a run cut short keeps what finished) and `<out>/rl_step.md` (the tables for
  bench/RESULTS.md), nothing else; each rank's raw result (`<algo>.rank<r>.json`, rewritten after every rollout
  batch) and the trainers' `output_dir` go to `--work-dir`. `--merge A.json B.json --out DIR` joins the records
  of several commands into one; `--collect ALGO` summarises workers launched by hand (several nodes).

On one H200 (each command must end inside the device's 10-minute limit; `bench/gpu_wheels.sh` states the wheel
install that precedes them, and each command writes its own `$OUT/rl_step.json`):

    python bench/rl_step.py --algos diffu_grpo,gdpo --out $OUT --time-budget-s 560    # writes the LLaDA checkpoint
    python bench/rl_step.py --algos cj_grpo --out $OUT --time-budget-s 560
    python bench/rl_step.py --algos igpo,mdpo --out $OUT --time-budget-s 560
    python bench/rl_step.py --algos coupled_grpo --out $OUT --time-budget-s 560        # writes the Dream checkpoint
    python bench/rl_step.py --algos spg,espo --out $OUT --time-budget-s 560
    python bench/rl_step.py --algos gdsd --out $OUT --time-budget-s 560
    python bench/rl_step.py --merge run1/rl_step.json run2/rl_step.json ... --out bench/results

Several GPUs (DeepSpeed ZeRO through the trainer's `deepspeed=` option; per-GPU numbers are each rank's own):

    python bench/rl_step.py --algos diffu_grpo --nproc 8 --deepspeed zero2 --out $OUT
    python bench/rl_step.py --algos diffu_grpo --nproc 8 --deepspeed zero3 --launcher accelerate --out $OUT

CPU check of the script itself (tiny shapes of both families, every algorithm, short canvases, μ ≤ 2):

    python bench/rl_step.py --tiny --out /tmp/rl_step
    python bench/rl_step.py --tiny --algos diffu_grpo --nproc 2 --deepspeed zero2 --out /tmp/rl_step_ds   # gloo

Options for experiments: `--set KEY=VALUE` adds Hydra overrides to every algorithm (e.g. `--set sampler=cached`).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.random_checkpoint import SHAPES, write_checkpoint  # noqa: E402
from bench.rl_step_report import markdown, merge_records, summarize, write_outputs  # noqa: E402
from bench.stage_meter import StageMeter, matmul_tflops  # noqa: E402

ALGOS = {  # algorithm → (recipe, checkpoint shape)
    "diffu_grpo": ("llada8b_gsm8k", "llada8b"),
    "gdpo": ("llada8b_gdpo", "llada8b"),
    "coupled_grpo": ("diffucoder_coupled_grpo", "diffucoder7b"),
    "cj_grpo": ("llada8b_cj_grpo", "llada8b"),
    "mdpo": ("llada8b_mdpo", "llada8b"),
    "igpo": ("llada8b_igpo", "llada8b"),
    "spg": ("llada8b_spg", "llada8b"),
    "espo": ("llada8b_espo", "llada8b"),
    "gdsd": ("llada8b_gdsd", "llada8b"),
}
TINY_SHAPES = {"llada8b": "tiny_llada", "diffucoder7b": "tiny_diffucoder"}
TINY_OVERRIDES = ["max_completion_length=16", "block_length=8", "diffusion_steps=8", "lora_r=4", "lora_alpha=8",
                  "bf16=false"]
TINY_MAX_ITERATIONS, TINY_PROMPT_LENGTH = 2, 8
TASK = "rl_step_prompts"
P_CORRECT = 0.1  # the benchmark-only correctness: IGPO's hint trigger (see bench/random_reward.py)


# -- the benchmark task: synthetic prompts, random rewards ------------------------------------------------------
def register_task(shape_name: str, prompt_length: int, completion_length: int) -> None:
    """Adds the synthetic task to rl_dlm's registry of synthetic tasks, so `build` loads it like any other."""
    from rl_dlm.data.tasks import TASKS

    first_special = min(SHAPES[shape_name].specials.values())
    words = range(9, first_special)  # the random checkpoints' ordinary tokens are `w<i>`

    def generate(rng) -> dict:
        pick = lambda n: " ".join(f"w{rng.choice(words)}" for _ in range(n))  # noqa: E731
        prompt = [{"role": "user", "content": pick(prompt_length + 16)}]  # left-truncated to prompt_length
        return {"key": f"{TASK}/{rng.getrandbits(64)}", "prompt": prompt, "reasoning": pick(completion_length),
                "answer": "0"}

    TASKS[TASK] = generate


def task_node(prompts: int) -> dict:
    reward = "bench.random_reward.benchmark_only_random_"
    return {"name": TASK, "source": "synthetic", "train_size": prompts, "eval_size": 2, "seed": 0,
            "correct_reward": "correct",
            "rewards": {"random": {"_target_": reward + "reward", "weight": 1.0},
                        "correct": {"_target_": reward + "correctness", "p_correct": P_CORRECT, "weight": 0.0}}}


def compose(algo: str, ckpt: Path, work: Path, args) -> "DictConfig":  # noqa: F821
    from omegaconf import OmegaConf, open_dict

    from rl_dlm.hydra_app import compose_config

    recipe = ALGOS[algo][0]
    prompt_length = TINY_PROMPT_LENGTH if args.tiny else args.prompt_length
    overrides = [f"recipe={recipe}", f"model.path={ckpt}", f"output_dir={work / algo}", "report_to=[none]",
                 "save_steps=0", "logging_steps=1", "eval.before=false", "eval.after=false", "resume=null",
                 f"max_prompt_length={prompt_length}"]
    overrides += TINY_OVERRIDES if args.tiny else []
    overrides += [f"deepspeed={args.deepspeed}"] if args.deepspeed else []
    cfg = compose_config(overrides + list(args.set or []))
    with open_dict(cfg):
        if args.tiny:
            cfg.num_iterations = min(cfg.num_iterations, TINY_MAX_ITERATIONS)
        cfg.max_steps = args.rollouts * cfg.num_iterations
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rows = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * world
        cfg.task = OmegaConf.create(task_node(max(64, 4 * args.rollouts * rows // cfg.num_generations)))
    register_task(ALGOS[algo][1] if not args.tiny else TINY_SHAPES[ALGOS[algo][1]], prompt_length,
                  cfg.max_completion_length)
    return cfg


# -- one algorithm (this process, or one rank under torchrun / accelerate launch) ------------------------------------
def run_algorithm(algo: str, ckpt: Path, work: Path, result_path: Path, args) -> dict:
    from omegaconf import OmegaConf

    from rl_dlm.hydra_app import build

    cfg = compose(algo, ckpt, work, args)
    start = time.perf_counter()
    trainer = build(cfg)
    load_seconds = time.perf_counter() - start
    cuda = trainer.policy.device.type == "cuda"
    load_peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    meter = StageMeter(trainer)
    rank = int(os.environ.get("RANK", "0"))
    keys = ("num_generations", "num_iterations", "per_device_train_batch_size", "gradient_accumulation_steps",
            "max_prompt_length", "max_completion_length", "block_length", "diffusion_steps", "lora_r",
            "gradient_checkpointing", "bf16", "learning_rate", "beta", "epsilon", "temperature", "deepspeed",
            "cuda_graphs", "fused_projections", "compiled_elementwise", "compiled_blocks", "merge_lora_for_inference",
            "forward_batch_size", "replay_steps_per_forward")
    result = {"algo": algo, "recipe": ALGOS[algo][0], "checkpoint": str(ckpt), "rank": rank,
              "world_size": int(os.environ.get("WORLD_SIZE", "1")), "load_seconds": load_seconds,
              "load_peak_gib": load_peak,
              "settings": OmegaConf.to_container(OmegaConf.create({k: OmegaConf.select(cfg, k) for k in keys}),
                                                 resolve=True),
              "sampler": OmegaConf.to_container(cfg.sampler, resolve=True), "params": meter.params(),
              "batches": meter.batches, "history": [], "complete": False}

    def save(m: StageMeter, announce: bool = True):
        result["history"] = [{k: v for k, v in h.items() if not k.startswith(("time/", "tokens_per_s/"))}
                             for h in trainer.tracker.history]
        result_path.write_text(json.dumps(result, indent=1, default=str) + "\n")
        if not announce:
            return
        b = m.batches[-1]
        print(f"[{algo} rank {rank}] rollout batch {len(m.batches)}: {b['wall_seconds']:.1f} s, peak "
              f"{b['peak_gib']:.1f} GiB", flush=True)

    meter.on_batch = save
    result_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        trainer.train(progress=meter.on_step)
    finally:
        meter.close()
        trainer.close()
    result["complete"] = True
    save(meter, announce=False)
    del trainer, meter
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


# -- the driver ----------------------------------------------------------------------------------------------------
def worker_command(algo: str, ckpt: Path, work: Path, result: Path, args) -> list[str]:
    script = str(Path(__file__).resolve())
    worker = [script, "--worker", algo, "--ckpt", str(ckpt), "--result", str(result), "--work-dir", str(work),
              "--rollouts", str(args.rollouts), "--prompt-length", str(args.prompt_length)]
    worker += ["--tiny"] if args.tiny else []
    worker += ["--deepspeed", args.deepspeed] if args.deepspeed else []
    worker += [x for item in (args.set or []) for x in ("--set", item)]
    if args.nproc <= 1:
        return [sys.executable, *worker]
    if args.launcher == "accelerate":
        config = ROOT / "conf" / "accelerate" / f"{args.deepspeed}.yaml"
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                "--num_processes", str(args.nproc), *worker]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.nproc),
            *worker]


def run_isolated(algo: str, ckpt: Path, work: Path, args, timeout: float | None) -> tuple[list[dict], str | None]:
    results = [work / f"{algo}.rank{r}.json" for r in range(max(args.nproc, 1))]
    for path in results:
        path.unlink(missing_ok=True)
    cmd = worker_command(algo, ckpt, work, work / f"{algo}.rank{{rank}}.json", args)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    if args.tiny:
        env.setdefault("OMP_NUM_THREADS", "1")
    problem = None
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout)
        if done.returncode:
            problem = f"exit status {done.returncode}"
    except subprocess.TimeoutExpired:
        problem = f"stopped after {timeout:.0f} s (--time-budget-s)"
    workers = [json.loads(p.read_text()) for p in results if p.exists()]
    return workers, problem


def checkpoint_for(algo: str, args, log) -> Path:
    shape = ALGOS[algo][1]
    shape = TINY_SHAPES[shape] if args.tiny else shape
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    path = write_checkpoint(shape, Path(args.ckpt_dir) / shape, device=device, log=log)
    if device == "cuda":
        torch.cuda.empty_cache()  # the workers, not this process, should hold the GPU's memory
    return path


def drive(args) -> dict:
    start = time.perf_counter()
    log = lambda text: print(f"[rl_step {time.perf_counter() - start:6.0f} s] {text}", flush=True)  # noqa: E731
    out, work = Path(args.out), Path(args.work_dir)
    algos = list(ALGOS) if args.algos == "all" else args.algos.split(",")
    unknown = [a for a in algos if a not in ALGOS]
    if unknown:
        raise SystemExit(f"unknown algorithm(s) {unknown}; choose from {list(ALGOS)} or all")
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if device.type == "cuda":
        matmul = matmul_tflops(device)
        torch.cuda.empty_cache()
    else:  # the CPU check only exercises the code path; its rate means nothing for a GPU
        matmul = matmul_tflops(device, size=256, dtype=torch.float32, warmup=1, repeats=3)
    log(f"matmul rate {matmul['tflops']:.1f} TFLOP/s ({matmul['size']}³ {matmul['dtype']} on {device})")
    summaries, problems = {}, {}
    for algo in algos:
        remaining = args.time_budget_s - (time.perf_counter() - start) if args.time_budget_s else None
        if remaining is not None and remaining < 60:
            problems[algo] = "not run: the time budget is spent"
            log(f"{algo}: {problems[algo]}")
            continue
        ckpt = checkpoint_for(algo, args, log)
        log(f"{algo}: recipe {ALGOS[algo][0]}, checkpoint {ckpt}")
        if args.isolate or args.nproc > 1:
            timeout = args.time_budget_s - (time.perf_counter() - start) if args.time_budget_s else None
            workers, problem = run_isolated(algo, ckpt, work, args, timeout)
        else:
            workers, problem = [run_algorithm(algo, ckpt, work, work / f"{algo}.rank0.json", args)], None
        key = algo if args.nproc <= 1 else f"{algo}@{args.deepspeed or 'ddp'}x{args.nproc}"
        if problem:
            problems[key] = problem
        if workers and workers[0]["batches"]:
            summaries[key] = summarize(workers, matmul["tflops"])
            if problem:
                summaries[key]["problem"] = problem
        log(f"{key}: " + (problem or "done"))
        write_outputs(out, summaries, problems, matmul, args)
    print(markdown(summaries, problems), flush=True)
    return summaries


def collect(args) -> dict:
    """Workers started by hand (`torchrun ... bench/rl_step.py --worker ALGO --result WORK/ALGO.rank{rank}.json`,
    as on several nodes) → the record; no matmul rate is measured, so FLOP rates are not given as fractions."""
    out, work = Path(args.out), Path(args.work_dir)
    workers = [json.loads(p.read_text()) for p in sorted(work.glob(f"{args.collect}.rank*.json"))]
    if not workers:
        raise SystemExit(f"no {work}/{args.collect}.rank*.json to collect")
    key = f"{args.collect}@{args.deepspeed or 'ddp'}x{len(workers)}"
    summaries = {key: summarize(workers, None)}
    write_outputs(out, summaries, {}, {"tflops": None, "note": "not measured (--collect)"}, args)
    print(markdown(summaries, {}), flush=True)
    return summaries


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--algos", default="all", help=f"comma-separated, from {list(ALGOS)}, or all")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"), help="directory for rl_step.json / .md")
    ap.add_argument("--ckpt-dir", default="/tmp/rl_step_ckpt", help="random checkpoints, built once and reused")
    ap.add_argument("--work-dir", default="/tmp/rl_step_work", help="per-rank worker results and the trainers' "
                    "output_dir (kept out of --out, which holds only the record and the table)")
    ap.add_argument("--rollouts", type=int, default=2, help="rollout batches per algorithm (the first is warm-up)")
    ap.add_argument("--prompt-length", type=int, default=200)
    ap.add_argument("--tiny", action="store_true", help="CPU check of the script: tiny shapes, short canvases")
    ap.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                    help="each algorithm in a fresh process (default: on, except with --tiny)")
    ap.add_argument("--nproc", type=int, default=1, help="processes (GPUs) per algorithm, under --launcher")
    ap.add_argument("--launcher", choices=("torchrun", "accelerate"), default="torchrun")
    ap.add_argument("--deepspeed", choices=("zero2", "zero3"), default=None, help="the trainer's deepspeed= option")
    ap.add_argument("--time-budget-s", type=float, default=0, help="stop starting / cut algorithms after this")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="extra Hydra override (repeatable)")
    ap.add_argument("--merge", nargs="+", metavar="RECORD", help="join rl_step.json records into --out")
    ap.add_argument("--collect", choices=sorted(ALGOS), help="summarise <work-dir>/<algo>.rank*.json (workers "
                    "launched by hand, e.g. on several nodes) into <out>/rl_step.json")
    ap.add_argument("--worker", choices=sorted(ALGOS), help="run one algorithm in this process (one rank under "
                    "torchrun / accelerate launch) and write --result; the driver starts these")
    ap.add_argument("--ckpt", help="--worker: the checkpoint directory")
    ap.add_argument("--result", help="--worker: the result file ({rank} is replaced by the process rank)")
    args = ap.parse_args(argv)
    args.command = shlex.join(["python", "bench/rl_step.py", *(sys.argv[1:] if argv is None else argv)])
    if args.isolate is None:
        args.isolate = not args.tiny
    if args.nproc > 1 and not args.deepspeed:
        ap.error("--nproc > 1 needs --deepspeed zero2|zero3 (rl_dlm's multi-process runtime is DeepSpeed)")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.merge:
        merge_records([Path(p) for p in args.merge], Path(args.out))
    elif args.collect:
        collect(args)
    elif args.worker:
        result = Path(args.result.replace("{rank}", os.environ.get("RANK", "0")))
        run_algorithm(args.worker, Path(args.ckpt), Path(args.work_dir), result, args)
    else:
        drive(args)


if __name__ == "__main__":
    main()
