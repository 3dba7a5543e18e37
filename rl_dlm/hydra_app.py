"""`rl-dlm train` and `rl-dlm eval`: compose `recipes/<recipe>.yaml` + `conf/` + command-line overrides.

    rl-dlm train                                   # recipe=quickstart
    rl-dlm train recipe=quickstart algo=diffu_grpo max_steps=2 task=arithmetic
    rl-dlm train --cfg job                         # print the composed config and exit
    rl-dlm eval task=countdown eval.gen_lengths=[48]      # the papers' eval protocol (rl_dlm.eval)
    rl-dlm eval model.adapter=outputs/run/final eval.tasks=[countdown,sudoku]

Every field of the chosen trainer's config dataclass (e.g. `DiffuGRPOConfig`) is a top-level key, with the
dataclass default unless the algo, task or recipe sets it; the defaults live in one place, the dataclass.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rl_dlm.config import dataclass_kwargs, instantiate, resolve
from rl_dlm.resources import ROOT  # conf/, recipes/, checkpoints/: the checkout's, or the wheel's copy

RUN_KEYS = {"trainer", "model", "task", "sampler", "eval", "recipe_name", "algo_name"}


def register_args():
    """Expose every trainer config dataclass to Hydra as `args/<algo>` (flat, merged at the top level)."""
    from hydra.core.config_store import ConfigStore

    from rl_dlm.trainers import TRAINERS

    store = ConfigStore.instance()
    for name, (_, config_cls) in TRAINERS.items():
        fields = {f.name: getattr(config_cls(), f.name) for f in dataclasses.fields(config_cls)}
        store.store(group="args", name=name, node=fields)


def compose_config(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    recipe = "quickstart"
    rest = []
    for item in overrides:
        if item.startswith("recipe="):
            recipe = item.split("=", 1)[1]
        else:
            rest.append(item)
    if not (ROOT / "recipes" / f"{recipe}.yaml").exists():
        known = sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))
        raise SystemExit(f"unknown recipe {recipe!r}; recipes are {known} (in {ROOT / 'recipes'})")
    register_args()
    with initialize_config_dir(config_dir=str(ROOT / "recipes"), version_base="1.3"):
        cfg = compose(config_name=recipe, overrides=[f"hydra.searchpath=[file://{ROOT / 'conf'}]", *rest])
    with _open(cfg):
        cfg.recipe_name = recipe
        cfg.algo_name = _algo_name(cfg.trainer)  # the default output_dir names the algorithm
    return cfg


def _algo_name(trainer: str) -> str:
    from rl_dlm.runs import algo_name

    try:
        return algo_name(resolve(trainer))
    except Exception:  # noqa: BLE001  an unknown trainer is reported where it is built, not here
        return str(trainer).rsplit(".", 1)[-1]


class _open:
    def __init__(self, cfg):
        self.cfg = cfg

    def __enter__(self):
        OmegaConf.set_struct(self.cfg, False)

    def __exit__(self, *exc):
        OmegaConf.set_struct(self.cfg, True)


def _split_args(argv: list[str]) -> tuple[list[str], str | None]:
    show = None
    out = []
    it = iter(argv)
    for item in it:
        if item in ("--cfg", "-c"):
            show = next(it, "job")
        elif item.startswith("--cfg="):
            show = item.split("=", 1)[1]
        else:
            out.append(item)
    return out, show


def reward_functions(task: DictConfig):
    from rl_dlm.reward_runner import RewardFunction

    funcs = []
    for name, node in (task.get("rewards") or {}).items():
        node = OmegaConf.to_container(node, resolve=True)
        weight = float(node.get("weight", 1.0))
        timeout = node.get("timeout")
        func = instantiate(node, call=False, reserved=("weight", "timeout"))
        funcs.append(RewardFunction(func, weight=weight, name=name, timeout=timeout))
    return funcs


def trainer_args(cfg: DictConfig):
    """Composed config → (trainer class, its validated config dataclass, sampler): everything but the model and
    the data, so a recipe's settings are checked without downloading anything."""
    from rl_dlm.trainers import TRAINERS

    trainer_cls = resolve(cfg.trainer)
    config_cls = next((c for t, c in TRAINERS.values() if t is trainer_cls), None) or trainer_cls.config_class
    values = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in RUN_KEYS}
    args = config_cls(**dataclass_kwargs(config_cls, values, "config"))
    return trainer_cls, args, instantiate(OmegaConf.to_container(cfg.sampler, resolve=True))


def build(cfg: DictConfig):
    """Composed config → trainer (model loaded, data read)."""
    from rl_dlm.data.loading import load_rows

    trainer_cls, args, sampler = trainer_args(cfg)
    train_rows = load_rows(cfg.task, "train")
    eval_rows = load_rows(cfg.task, "test")
    trainer = trainer_cls(model=cfg.model.path, reward_funcs=reward_functions(cfg.task), args=args,
                          train_dataset=train_rows, eval_dataset=eval_rows, sampler=sampler,
                          correct_reward=cfg.task.get("correct_reward"))
    return trainer


def protocol_sampler(sampler, steps_per_token: float):
    """The training sampler made greedy, with the papers' evaluation step count (steps = length × 0.5)."""
    if not hasattr(sampler, "steps") or not hasattr(sampler, "gen_length"):
        return sampler
    try:
        return dataclasses.replace(sampler, steps=max(1, round(sampler.gen_length * steps_per_token)))
    except ValueError:  # a schedule that fixes its own step count
        return sampler


def progress_bar(total: int):
    """A tqdm bar over optimizer steps (main process only), fed by the loop's progress callback."""
    from rl_dlm.tracking import progress_bar as bar

    return bar(total, disable=os.environ.get("RANK", "0") != "0")


def train_main(argv: list[str]) -> None:
    overrides, show = _split_args(argv)
    cfg = compose_config(overrides)
    if show is not None:
        print(OmegaConf.to_yaml(cfg, resolve=show == "resolve"))
        return
    start = time.time()
    trainer = build(cfg)
    run_dir = Path(trainer.args.output_dir)  # output_dir, or output_dir-2, ... when it holds another run
    with _open(cfg):
        cfg.output_dir = str(run_dir)
    trainer.tracker.snapshot = OmegaConf.to_container(cfg, resolve=True)  # run_dir/config.yaml
    say = trainer.tracker.message  # prints on the main process only
    say(f"rl-dlm train: recipe={cfg.recipe_name} algo={cfg.trainer.rsplit('.', 1)[-1]} task={cfg.task.name} "
        f"model={cfg.model.path} max_steps={cfg.max_steps}")
    greedy = protocol_sampler(trainer.greedy_sampler(), cfg.eval.steps_per_token)
    before = (trainer.evaluate(batch_size=cfg.eval.batch_size, sampler=greedy, desc="eval before")
              if cfg.eval.before else None)
    if before:
        say(f"held-out accuracy before: {before['accuracy']:.3f} ({before['n']} problems, greedy)")
    trainer.train(progress=progress_bar(cfg.max_steps))
    trainer.save_model(str(run_dir / "final"))
    if cfg.eval.after:
        after = trainer.evaluate(batch_size=cfg.eval.batch_size, sampler=greedy, desc="eval after")
        say(f"held-out accuracy after:  {after['accuracy']:.3f} ({after['n']} problems, greedy)")
        if before:
            say(f"change: {100 * (after['accuracy'] - before['accuracy']):+.1f} points")
    say(f"done in {time.time() - start:.0f} s; adapter saved to {run_dir / 'final'}")
    trainer.close()


def eval_main(argv: list[str]) -> None:
    """`rl-dlm eval`: the papers' protocol (rl_dlm.eval.evaluate_protocol) on the composed task, or on every task
    of `eval.tasks`, with the composed model (+ `model.adapter`) and sampler; prints accuracy per task and
    generation length, writes `<eval.output_dir>/completions.jsonl` and `results.json`."""
    import json

    from rl_dlm.data.loading import load_rows
    from rl_dlm.eval import EvalTask, evaluate_protocol, format_results, load_for_eval
    from rl_dlm.reward_runner import RewardRunner

    overrides, show = _split_args(argv)
    cfg = compose_config(overrides)
    if show is not None:
        print(OmegaConf.to_yaml(cfg, resolve=show == "resolve"))
        return
    # One composition per task, so each gets its own rewards, prompt length and protocol defaults.
    names = list(cfg.eval.tasks or [])
    rest = [o for o in overrides if not o.lstrip("+~").startswith("task=")]
    task_cfgs = [compose_config(rest + [f"task={name}"]) for name in names] if names else [cfg]
    tasks = []
    for c in task_cfgs:
        runner = RewardRunner(reward_functions(c.task), correct=c.task.get("correct_reward"))
        tasks.append(EvalTask(c.task.name, load_rows(c.task, "test"), runner, max_prompt_length=c.max_prompt_length,
                              gen_lengths=list(c.eval.gen_lengths), block_length=c.eval.block_length,
                              steps_per_token=c.eval.steps_per_token))
    sampler_node = OmegaConf.to_container(cfg.sampler, resolve=True)

    def make_sampler(gen_length: int, steps: int, block_length: int):
        node = dict(sampler_node)
        for key, value in (("gen_length", gen_length), ("steps", steps), ("block_length", block_length),
                           ("temperature", cfg.eval.temperature)):
            if key in node:  # a sampler without the key keeps its own configuration
                node[key] = value
        return instantiate(node)

    model = cfg.model
    policy = load_for_eval(model.path, adapter=model.get("adapter"), device=cfg.eval.device,
                           bf16=True if cfg.get("bf16") else None, trust_remote_code=model.get("trust_remote_code", False))
    out = Path(cfg.eval.output_dir)
    print(f"rl-dlm eval: model={model.path}" + (f" adapter={model.adapter}" if model.get("adapter") else "")
          + f" tasks={[t.name for t in tasks]} sampler={sampler_node.get('_target_', '?').rsplit('.', 1)[-1]} "
          f"(greedy: T={cfg.eval.temperature})", flush=True)
    print(format_results([]), flush=True)
    results = evaluate_protocol(
        policy, tasks, make_sampler=make_sampler, batch_size=cfg.eval.batch_size, seed=cfg.get("seed", 0),
        completions_path=out / "completions.jsonl", bf16=bool(cfg.get("bf16")),
        on_result=lambda r: print(format_results([r]).splitlines()[1], flush=True))
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"completions (per-row rewards) in {out / 'completions.jsonl'}; results in {out / 'results.json'}",
          flush=True)


if __name__ == "__main__":
    train_main(sys.argv[1:])
