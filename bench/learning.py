"""Nine-algorithm learning benchmark: every algorithm of conf/algo/ from the same SFT'd dLLM, on the same synthetic
tasks, with the same rollout budget and seeds; held-out greedy accuracy before, during and after.

    python bench/learning.py --size cpu --out docs/results/cpu    # embedded model, countdown, 2 cores (below)
    python bench/learning.py --size gpu --deterministic --model DIR   # builds a 27M model in DIR first; one H100

At CPU size the original six take ≈ 22 min together; SPG, ESPO and GDSD took 11–16 min each (on 2 cores
shared with another job: bench/results/learning_cpu_new_algos.json).

Every algorithm is built one way, `rl_dlm.hydra_app.algo_trainer(name, ...)`: its conf/algo/<name>.yaml
composition plus the shared settings below as command-line overrides (`run_config`). The six with Python presets
(rl_dlm.trainers.TRAINERS) build the same components and `RLConfig` through it as through their preset
(tests/test_component_groups.py, tests/test_bench_learning.py), so their earlier records stay comparable; SPG,
ESPO and GDSD exist only as configuration.

What is shared, and what is each algorithm's own:
- Each algorithm keeps its paper-default components and their settings (sampler, likelihood estimator, objective,
  advantage, β, ε, sampling temperature, estimator knobs): its conf/algo/<name>.yaml composition.
- Scaled to the budget and shared by all nine: μ = min(paper μ, 4) inner updates per rollout batch (paper μ: the
  composition's `num_iterations`), G = 8 completions for each of 4 prompts per rollout batch, the number of
  rollout batches, LoRA r 16 / α 32 / no dropout, learning rate and its schedule (constant at CPU size; at GPU
  size cosine to 0 over the run, so that the last policy, the one scored, is a settled one rather than a
  snapshot of a still-moving one), grad-norm clip 1.0, no warm-up, no gradient accumulation, the canvas (the
  task's completion length) and rollout steps (4 tokens per step; CJ-GRPO's ascending schedule sets its own).
  The papers' learning rates (3e-7 … 3e-6) are for 8B models with LoRA r 128; one tuned rate is used for all
  instead, so that the comparison is at equal step size rather than at unequal, unscaled ones — except GDPO and
  ESPO, which run at a fraction of it (`Size.rate_scale`): GDPO's clip acts on a length-normalised sequence
  ratio exp(ΔELBO / L), which ε = 0.5 practically never reaches, so nothing bounds a step but the rate (its
  paper's rate is likewise 10× below the others'). At the shared rate GDPO gains for 10 batches, then collapses;
  a quarter of it suits the GPU's 80 batches, while over the CPU's 10 it barely moves the 3.4 M model, which
  half the rate does (docs/results/README.md). ESPO clips the same length-normalised sequence ratio
  exp(ΔELBO / L) (at ε = 0.2), so the same reasoning applies and it gets GDPO's scale (its paper's rate, 3e-6,
  is not below the others': the scale follows the ratio, not the paper). SPG (no ratio: ELBO / EUBO bounds
  weighted by the advantage) and GDSD (no ratio: a clamped regression of the log-ratio onto ψ·A) run at the
  shared rate.
- Evaluation is the same for all: ≥ 500 held-out problems per task (disjoint from training by construction),
  greedy semi-AR decoding with the papers' protocol (steps = length / 2, block 16, 32 for sudoku), scored by the
  task's correctness reward. Accuracy before training is measured once per task (same start model).

Writes `<out>/learning_<size>.md` (table), `<out>/learning_<size>.png` (accuracy against rollouts) and the record
`<out>/learning_<size>.json` (committed as `bench/results/learning_<size>.json`), after every finished run.
Results and what they show: docs/results/README.md. `--algos gdpo@1e-4` runs one algorithm at its own learning
rate; `--algos gdpo+objective.beta=0.04+likelihood.full_canvas=true` adds overrides, in `rl-dlm train` syntax:
any top-level key (an `RLConfig` field: `lr_scheduler_type=cosine`), a component knob (`<group>.<knob>`) or a
component choice (`advantage=zscore`). A spec is composed before anything runs, and a bad one stops the command
with the composition's error, which names the key (the flat names of earlier records, `gdpo+beta=0.04`, are now
`objective.beta` and the like; the error says which). `--override` changes any `Size` field (e.g.
'{"tasks": ["countdown"], "workers": 12}'); `--name` names the outputs. The GPU start model is built with
deterministic CUDA kernels, so the same command gives the same start model; `--deterministic` asks for them in
the RL runs too, with attention on the math kernel (see `deterministic_kernels`); with it a GPU run is a
function of its command (measured: docs/results/README.md). On the CPU a run is a function of its seed. GPU runs
go faster with several at once under CUDA MPS (`nvidia-cuda-mps-control -d`, `workers` > 1).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.record import ROOT, write_record  # noqa: E402
from bench.learning_report import plot, split_spec, table  # noqa: E402
from rl_dlm.component_groups import build, check_composition  # noqa: E402
from rl_dlm.data.tasks import GEN_LENGTH, TASKS, correct_reward, make_split  # noqa: E402
from rl_dlm.hydra_app import algo_trainer, compose_algo, trainer_args  # noqa: E402
from rl_dlm.models.policy import LoraSettings, load_policy  # noqa: E402
from rl_dlm.reward_runner import RewardFunction, RewardRunner  # noqa: E402
from rl_dlm.sampling.semi_ar import SemiARSampler  # noqa: E402
from rl_dlm.validation import ConfigError, start_up  # noqa: E402

ALGOS = ("diffu_grpo", "coupled_grpo", "gdpo", "cj_grpo", "mdpo", "igpo", "spg", "espo", "gdsd")


@dataclasses.dataclass(frozen=True)
class Size:
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    rollouts: int  # rollout batches per run; each is `prompts` × `group` completions
    eval_every: int  # rollout batches between accuracy points
    n_eval: int = 500
    prompts: int = 4
    group: int = 8
    learning_rate: float = 4e-4
    lr_scheduler: str = "constant_with_warmup"  # transformers' scheduler name; "cosine" decays to 0 at the end
    max_num_iterations: int = 4  # μ = min(paper μ, this): at most 4 inner updates per rollout batch
    # × learning_rate, per algorithm: the two whose clip acts on a length-normalised sequence ratio (docstring)
    rate_scale: dict = dataclasses.field(default_factory=lambda: {"gdpo": 0.25, "espo": 0.25})
    workers: int = 1  # parallel runs (subprocesses); 1 runs in this process
    model: dict | None = None  # build the start model with these LLaDA overrides (None: the embedded model)
    sft_steps: int = 0
    sft_batch_size: int = 256
    sft_rows: int = 3000  # demonstrations per task, as the embedded model (countdown has < 4000 distinct)
    sft_learning_rate: float = 6e-4
    sft_snapshot_every: int = 0  # > 0: keep the snapshot with the best validation accuracy on `select_task`
    select_task: str = "countdown"


SIZES = {
    "cpu": Size(tasks=("countdown",), seeds=(0,), rollouts=10, eval_every=10,
                rate_scale={"gdpo": 0.5, "espo": 0.5}),
    "gpu": Size(tasks=tuple(TASKS), seeds=(0, 1), rollouts=80, eval_every=10, workers=16, lr_scheduler="cosine",
                model=dict(d_model=512, n_layers=8, n_heads=8, mlp_hidden_size=1536), sft_steps=3000),
}


def budget(size: Size, task: str) -> dict:
    """The settings every algorithm shares at this size (see the module docstring)."""
    length = GEN_LENGTH[task]
    return dict(num_generations=size.group, per_device_train_batch_size=size.prompts * size.group,
                gradient_accumulation_steps=1, max_completion_length=length, block_length=block_of(length),
                diffusion_steps=length // 4, max_prompt_length=128, lora_r=16, lora_alpha=32, lora_dropout=0.0,
                max_grad_norm=1.0, warmup_steps=0, learning_rate=size.learning_rate,
                lr_scheduler_type=size.lr_scheduler, report_to=["none"],
                merge_lora_for_inference=True)


def block_of(length: int) -> int:
    return 16 if length <= 48 else 32


def eval_sampler(task: str) -> SemiARSampler:
    length = GEN_LENGTH[task]
    return SemiARSampler(gen_length=length, block_length=block_of(length), steps=length // 2, temperature=0.0)


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def accuracy(policy, task: str, rows: list[dict]) -> float:
    from rl_dlm.eval import evaluate

    runner = RewardRunner([RewardFunction(correct_reward(task), name="correct")], correct="correct")
    was_training = policy.model.training
    policy.model.eval()
    try:
        return evaluate(policy, eval_sampler(task), rows, runner, batch_size=256, desc=f"eval {task}")["accuracy"]
    finally:
        policy.model.train(was_training)


def parse_algo(spec: str) -> tuple[str, list[str]]:
    """`NAME[@RATE][+FIELD=VALUE...]` → (algorithm, its overrides in `rl-dlm train` syntax). `gdpo@1e-4` runs GDPO
    at its own learning rate (`learning_rate=0.0001`); `gdpo+objective.beta=0.04+likelihood.full_canvas=true`
    passes each FIELD=VALUE as an override: a top-level key, a `<group>.<knob>` or a component choice. The spec is
    composed here (conf/algo/<NAME>.yaml + its overrides), so a bad one fails now, with the composition's error
    (a `ConfigError`, a `ValueError`) naming the key."""
    name, rate, fields = split_spec(spec)
    if name not in ALGOS:
        raise ValueError(f"unknown algorithm {name!r} in {spec!r}; choose from {list(ALGOS)}")
    overrides = []
    if rate:
        try:
            overrides.append(f"learning_rate={float(rate)!r}")
        except ValueError:
            raise ValueError(f"{rate!r} in {spec!r} is not a learning rate (NAME@RATE, e.g. gdpo@1e-4)") from None
    for field in fields:
        key, eq, value = field.partition("=")
        if not eq or not key or not value:
            raise ValueError(f"{field!r} in {spec!r} is not FIELD=VALUE (a top-level key, a <group>.<knob> or a "
                             "component choice, e.g. objective.beta=0.04)")
        overrides.append(field)
    composed(name, tuple(overrides), spec)
    return name, overrides


def composed(name: str, overrides: tuple[str, ...], spec: str = ""):
    """(composition, RLConfig) of conf/algo/<name>.yaml + overrides, validated as the trainer validates them
    before its model loads: types and ranges, the sampler and the components built (placeholder token ids; the
    runs name a correctness reward) and checked to fit together. An error names the spec."""
    try:
        with start_up():
            cfg = compose_algo(name, list(overrides))
            args, sampler, nodes = trainer_args(cfg)
            placeholders = {"mask_id": -1, "stop_id": None, "is_correct": lambda per_function: None}
            check_composition(build(nodes, sampler, placeholders), sampler_name=f"sampler={cfg.choices.sampler}")
    except ConfigError as err:
        raise ConfigError(f"{spec or name}: {err}") from err
    return cfg, args


@functools.lru_cache(maxsize=None)
def paper_num_iterations(name: str) -> int:
    """μ of the algorithm's own composition (conf/algo/<name>.yaml)."""
    return compose_algo(name).num_iterations


def override(key: str, value) -> str:
    """`key=value` in Hydra's override syntax (lists as [a,b], booleans lower case, None as null)."""
    def text(v) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if v is None:
            return "null"
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(text(x) for x in v) + "]"
        return repr(v) if isinstance(v, float) else str(v)
    return f"{key}={text(value)}"


def override_key(item: str) -> str:
    return item.split("=", 1)[0].lstrip("+~")


def run_config(size: Size, algo: str, task: str, seed: int) -> tuple[str, list[str], object]:
    """(algorithm, overrides, the `RLConfig` they compose) for one run: the shared budget, the rate scale (GDPO,
    ESPO), μ = min(paper μ, `max_num_iterations`), then the spec's own overrides, which win (a spec's
    `num_iterations=` also sets the number of optimizer steps: `rollouts` × μ)."""
    name, changes = parse_algo(algo)
    given = {override_key(c) for c in changes}
    mu = min(paper_num_iterations(name), size.max_num_iterations)
    if "num_iterations" in given:
        mu = composed(name, tuple(changes), algo)[1].num_iterations
    rate = size.learning_rate * size.rate_scale.get(name, 1.0)
    settings = {**budget(size, task), "learning_rate": rate, "num_iterations": mu, "seed": seed,
                "max_steps": size.rollouts * mu, "logging_steps": mu,
                "output_dir": f"/tmp/rl_dlm_learning/{re.sub(r'[^A-Za-z0-9_.-]', '_', algo)}-{task}-{seed}"}
    overrides = [override(k, v) for k, v in settings.items() if k not in given] + changes
    return name, overrides, composed(name, tuple(overrides), algo)[1]


def start_policy(model_dir: str, args):
    """The start model with fresh LoRA adapters drawn from the run's seed, as `RLTrainer` draws them when it is
    given a path: unseeded, the adapters' initialisation (and so the whole run) differed between two runs of
    one command."""
    torch.manual_seed(args.seed)
    return load_policy(model_dir, lora=LoraSettings(args.lora_r, args.lora_alpha, args.lora_dropout),
                       device=device(), check_alignment=False)


def run_one(size: Size, model_dir: str, algo: str, task: str, seed: int, before: float) -> dict:
    """Trains one algorithm on one task from the start model; accuracy every `eval_every` rollout batches."""
    name, overrides, args = run_config(size, algo, task, seed)
    mu = args.num_iterations
    policy = start_policy(model_dir, args)
    test = make_split(task, "test", size.n_eval, seed=0)
    trainer = algo_trainer(name, policy, {"correct": correct_reward(task)}, overrides=overrides,
                           train_dataset=make_split(task, "train", 3000), correct_reward="correct")
    points = [(0, before)]

    def progress(step: int, _metrics: dict):
        done = step // mu
        if step % mu == 0 and done % size.eval_every == 0 and step < args.max_steps:
            points.append((done, accuracy(trainer.policy, task, test)))

    start = time.time()
    history = trainer.train(progress=progress)
    points.append((size.rollouts, accuracy(trainer.policy, task, test)))
    rewards = [h["reward"] for h in history if "reward" in h]
    return {"algo": algo, "task": task, "seed": seed, "learning_rate": args.learning_rate, "num_iterations": mu,
            "paper_num_iterations": paper_num_iterations(name), "points": points,
            "before": before, "after": points[-1][1], "gain_points": round(100 * (points[-1][1] - before), 1),
            "seconds": round(time.time() - start, 1),
            "reward_first": rewards[0] if rewards else None, "reward_last": rewards[-1] if rewards else None}


def start_model(size: Size, out: Path, given: str | None) -> tuple[str, dict]:
    """The embedded model, an existing `given` directory, or one built here (into `given` if named) by
    masked-diffusion SFT from scratch on the synthetic tasks' demonstrations (GPU size)."""
    if given and (Path(given) / "config.json").exists():
        info = Path(given, "sft_info.json")
        return given, {"source": given, **({"sft": json.loads(info.read_text())} if info.exists() else {})}
    if size.model is None:
        return str(ROOT / "checkpoints" / "tiny-llada"), {"source": "checkpoints/tiny-llada"}
    from rl_dlm.sft import SFTSettings, build_embedded_model

    target = Path(given) if given else out / "model"
    settings = SFTSettings(output=str(target), steps=size.sft_steps, batch_size=size.sft_batch_size,
                           learning_rate=size.sft_learning_rate, tasks={t: size.sft_rows for t in TASKS},
                           device=device(), bf16=device() == "cuda", model=size.model,
                           snapshot_every=size.sft_snapshot_every)
    with deterministic_kernels():
        build_embedded_model(settings)
    info = {"source": "built by this command (rl_dlm.sft.build_embedded_model, deterministic kernels)",
            "sft": json.loads((target / "sft_info.json").read_text())}
    if size.sft_snapshot_every:
        info["selection"] = keep_best_snapshot(size, target)
    return str(target), info


def keep_best_snapshot(size: Size, target: Path) -> dict:
    """Early stopping: the SFT snapshot with the best greedy accuracy on `select_task` over 200 validation
    problems (held-out rows 500–699, disjoint from the ≥ 500 evaluated ones) replaces `target`."""
    import shutil

    snapshots = sorted(target.parent.glob(f"{target.name}-step*"), key=lambda p: int(p.name.rsplit("step", 1)[1]))
    validation = make_split(size.select_task, "test", size.n_eval + 200, seed=0)[size.n_eval:]
    scores = {}
    for snap in [*snapshots, target]:
        scores[snap.name] = accuracy(load_policy(snap, device=device(), check_alignment=False), size.select_task,
                                     validation)
        print("validation", snap.name, scores[snap.name], flush=True)
    best = max(scores, key=lambda name: (scores[name], name == target.name))
    if best != target.name:
        shutil.rmtree(target)
        (target.parent / best).rename(target)
    for snap in snapshots:
        shutil.rmtree(snap, ignore_errors=True)
    return {"task": size.select_task, "validation_accuracy": scores, "kept": best}


def run_all(size: Size, model_dir: str, algos: list[str], before: dict[str, float],
            on_result: Callable[[list[dict]], None]) -> list[dict]:
    """Every (task, seed, algorithm); `on_result` sees the results so far after each run (a cut-off run still
    leaves a record of what finished)."""
    jobs = [(a, t, s) for t in size.tasks for s in size.seeds for a in algos]
    results, lock = [], threading.Lock()

    def finish(result: dict) -> dict:
        print(json.dumps(result), flush=True)
        with lock:
            results.append(result)
            results.sort(key=lambda r: jobs.index((r["algo"], r["task"], r["seed"])))  # job order, not finish order
            on_result(list(results))
        return result

    if size.workers <= 1:
        for a, t, s in jobs:
            finish(run_one(size, model_dir, a, t, s, before[t]))
        return results
    scratch = Path(tempfile.mkdtemp(prefix="rl_dlm_learning_"))

    def launch(job):
        a, t, s = job
        result = scratch / f"{a}-{t}-{s}.json"
        spec = json.dumps({"size": dataclasses.asdict(size), "model": model_dir, "algo": a, "task": t, "seed": s,
                           "before": before[t], "result": str(result)})
        env = dict(os.environ, OMP_NUM_THREADS="1")
        flags = ["--deterministic"] if torch.are_deterministic_algorithms_enabled() else []
        done = subprocess.run([sys.executable, __file__, "--run-one", spec, *flags], env=env, capture_output=True,
                              text=True)
        if done.returncode:
            return finish({"algo": a, "task": t, "seed": s, "error": done.stderr[-3000:]})
        return finish(json.loads(result.read_text()))

    with ThreadPoolExecutor(size.workers) as pool:
        list(pool.map(launch, jobs))
    return results


def make_deterministic(math_attention: bool = False) -> None:
    """Deterministic CUDA kernels: a fixed cuBLAS workspace, no atomic-add backward passes, no cuDNN attention
    (its backward is not deterministic). `math_attention` also turns flash and memory-efficient attention off:
    their backward passes may accumulate with atomics, which `use_deterministic_algorithms` only warns about.
    The RL runs ask for it (at 27 M parameters and ≤ 200 positions, the math kernel costs little)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # inherited by the worker subprocesses
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cuda.enable_cudnn_sdp(False)
    if math_attention:
        torch.backends.cuda.enable_flash_sdp(False)
        torch.backends.cuda.enable_mem_efficient_sdp(False)


@contextlib.contextmanager
def deterministic_kernels():
    """The start model is always built under deterministic kernels: measured on an H100
    (bench/results/learning_determinism.json), two builds give bit-identical weights (same sha256), so every
    GPU run starts from the same model. The RL runs use them with `--deterministic`, which also restricts
    attention to the math kernel (`make_deterministic`); the GPU records made before each run's LoRA adapters
    were drawn from its seed (`start_policy`) and before that restriction were not bit-reproducible."""
    cuda = torch.backends.cuda
    was = (torch.are_deterministic_algorithms_enabled(), cuda.cudnn_sdp_enabled(), cuda.flash_sdp_enabled(),
           cuda.mem_efficient_sdp_enabled())
    make_deterministic()
    cuda.enable_flash_sdp(True)  # the kernels the start model was measured with, with or without --deterministic
    cuda.enable_mem_efficient_sdp(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was[0], warn_only=True)
        cuda.enable_cudnn_sdp(was[1])
        cuda.enable_flash_sdp(was[2])
        cuda.enable_mem_efficient_sdp(was[3])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="cpu")
    ap.add_argument("--out", default=None, help="folder for the table, plot and record (default docs/results/<size>)")
    ap.add_argument("--algos", default=",".join(ALGOS), help="comma-separated subset of " + ",".join(ALGOS)
                    + "; NAME@RATE runs NAME at its own learning rate (e.g. gdpo@1e-4), NAME+FIELD=VALUE adds an "
                    "override: a top-level key, a <group>.<knob> or a component choice "
                    "(e.g. gdpo+objective.beta=0.04)")
    ap.add_argument("--model", default=None, help="start from this model directory (GPU size: built there first "
                    "if it does not exist yet)")
    ap.add_argument("--build-only", action="store_true", help="build the start model, measure it, and stop")
    ap.add_argument("--override", default="{}", help="JSON of Size fields to change (e.g. '{\"rollouts\": 4}')")
    ap.add_argument("--name", default=None, help="record name: <out>/<name>.{md,png,json} (default learning_<size>)")
    ap.add_argument("--deterministic", action="store_true", help="deterministic CUDA kernels in the RL runs too "
                    "(see deterministic_kernels)")
    ap.add_argument("--run-one", default=None, help=argparse.SUPPRESS)  # a worker subprocess
    a = ap.parse_args()
    if a.deterministic:
        make_deterministic(math_attention=True)
    if a.run_one:
        spec = json.loads(a.run_one)
        size = Size(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["size"].items()})
        torch.set_num_threads(1)
        result = run_one(size, spec["model"], spec["algo"], spec["task"], spec["seed"], spec["before"])
        Path(spec["result"]).write_text(json.dumps(result))
        return
    size = dataclasses.replace(SIZES[a.size], **{k: tuple(v) if isinstance(v, list) else v
                                                  for k, v in json.loads(a.override).items()})
    algos = [x for x in a.algos.split(",") if x]
    for spec in algos:  # every spec composed with the shared settings before anything loads
        try:
            run_config(size, spec, size.tasks[0], size.seeds[0])
        except ValueError as err:
            ap.error(str(err))
    out = Path(a.out or ROOT / "docs" / "results" / a.size)
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = True
    begin = time.time()
    model_dir, model_info = start_model(size, out, a.model)
    policy = load_policy(model_dir, device=device(), check_alignment=False)
    model_info["parameters"] = sum(p.numel() for p in policy.model.parameters())
    before = {t: accuracy(policy, t, make_split(t, "test", size.n_eval, seed=0)) for t in size.tasks}
    print("before", before, model_info, flush=True)
    del policy
    if a.build_only:
        return
    name = a.name or f"learning_{a.size}"

    def save(results: list[dict], final: bool = False) -> dict:
        record = write_record(
            out / f"{name}.json", name, {"before": before, "runs": results,
                                         "total_seconds": round(time.time() - begin, 1), "complete": final},
            units={"before": "held-out accuracy (fraction correct, greedy)", "points": "[rollout batches, accuracy]",
                   "gain_points": "percentage points, after − before", "seconds": "wall seconds of one run"},
            size=dataclasses.asdict(size), start_model=model_info,
            shared_settings={t: budget(size, t) for t in size.tasks})
        (out / f"{name}.md").write_text(table(record))
        return record

    record = save(run_all(size, model_dir, algos, before, save), final=True)
    plot(record, out / f"{name}.png")
    print(table(record), flush=True)
    print(f"total {record['metrics']['total_seconds']} s; wrote {out}/{name}.{{md,png,json}}", flush=True)

if __name__ == "__main__":
    main()
