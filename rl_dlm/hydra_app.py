"""`rl-dlm train` and `rl-dlm eval`: compose `recipes/<recipe>.yaml` + `conf/` + command-line overrides.

    rl-dlm train                                   # recipe=quickstart
    rl-dlm train recipe=quickstart algo=diffu_grpo max_steps=2 task=arithmetic
    rl-dlm train --cfg job                         # print the composed config and exit
    rl-dlm eval task=countdown eval.gen_lengths=[48]      # the papers' eval protocol (rl_dlm.eval)
    rl-dlm eval model.adapter=outputs/run/final eval.tasks=[countdown,sudoku]

The composition (rl_dlm/composition.py): RLConfig's fields are the top-level keys; an algorithm is a choice of
components (sampler, likelihood, objective, advantage, refiner), each with its knobs under its group
(rl_dlm/component_groups.py); `algo_trainer` gives the same trainer to Python.

Start-up is validated before any model loads (rl_dlm/validation.py): config types and ranges, paths, the output
directory, every dataset row. Errors of composition and start-up are `ConfigError`s that name the key, row or
path; `rl-dlm` prints them in one line (rl_dlm/cli.py).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rl_dlm.component_groups import GROUPS as COMPONENT_GROUPS
from rl_dlm.composition import _open, _override_key, compose_algo, compose_config  # noqa: F401  (the CLI's API)
from rl_dlm.config import dataclass_kwargs, instantiate
from rl_dlm.resources import ROOT  # conf/, recipes/, checkpoints/: the checkout's, or the wheel's copy
from rl_dlm.validation import (ConfigError, check_data_files, check_model_path, check_output_dir,
                               check_resume_and_deepspeed, check_rows, check_values, interpolated_keys,
                               sampler_keys_as, start_up)

RUN_KEYS = {"model", "task", "sampler", *COMPONENT_GROUPS, "eval", "recipe_name", "algo_name", "choices"}


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


def component_nodes(cfg: DictConfig) -> dict:
    """The composed component groups (likelihood, objective, advantage, refiner) as plain `_target_` nodes."""
    return {group: OmegaConf.to_container(cfg[group], resolve=True) if cfg.get(group) else None
            for group in COMPONENT_GROUPS}


def trainer_args(cfg: DictConfig):
    """Composed config → (RLConfig, sampler, component nodes), validated: everything but the model and the
    data, so a recipe's settings are checked without downloading anything (the trainer then checks the
    components before the model loads)."""
    from rl_dlm.trainers.base import RLConfig

    values = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in RUN_KEYS}
    check_values(RLConfig, values)  # types and ranges, naming the key, before the dataclass sees them
    args = RLConfig(**dataclass_kwargs(RLConfig, values, "config"))
    with sampler_keys_as(interpolated_keys(OmegaConf.to_container(cfg.sampler, resolve=False))):
        sampler = instantiate(OmegaConf.to_container(cfg.sampler, resolve=True))
    return args, sampler, component_nodes(cfg)


def check_run_paths(cfg: DictConfig, args=None) -> None:
    """Paths of a composed run, before anything loads: the model, the task's data files, a resume checkpoint or
    DeepSpeed file, and the output directory (created and written to)."""
    check_model_path(cfg.model.path, key="model.path")
    check_data_files(OmegaConf.to_container(cfg.task, resolve=True))
    if args is not None:
        check_resume_and_deepspeed(args)
        check_output_dir(cfg.output_dir, key="output_dir")


def build(cfg: DictConfig):
    """Composed config → trainer (model loaded, data read)."""
    from rl_dlm.data.loading import load_rows

    from rl_dlm.trainers.base import RLTrainer

    args, sampler, nodes = trainer_args(cfg)
    check_run_paths(cfg, args)
    train_rows = load_rows(cfg.task, "train")
    eval_rows = load_rows(cfg.task, "test")
    for rows, split in ((train_rows, "train"), (eval_rows, "test")):
        check_rows(rows, f"task {cfg.task.name!r} ({split} split)")
    return RLTrainer(model=cfg.model.path, reward_funcs=reward_functions(cfg.task), args=args,
                     train_dataset=train_rows, eval_dataset=eval_rows, sampler=sampler,
                     correct_reward=cfg.task.get("correct_reward"), components=nodes, algo=cfg.algo_name,
                     component_names=dict(cfg.choices))


def algo_trainer(algo: str, model, reward_funcs, train_dataset=None, overrides: list[str] = (), **kwargs):
    """Any algorithm of conf/algo/ from Python, at its own settings plus `overrides` (command-line syntax):

        trainer = algo_trainer("gdpo", model="checkpoints/tiny-llada", reward_funcs=[f], train_dataset=rows,
                               overrides=["max_steps=10", "likelihood.nodes=5", "advantage=zscore"])
        trainer.train()

    The same composition and trainer as `rl-dlm train algo=<algo>`, with the model, rewards and data given
    here instead of the task's (`kwargs` go to `RLTrainer`: eval_dataset, correct_reward, tracker, ...)."""
    from rl_dlm.trainers.base import RLTrainer

    with start_up():
        cfg = compose_algo(algo, list(overrides))
        args, sampler, nodes = trainer_args(cfg)
    if not any(_override_key(o) == "output_dir" for o in overrides):
        args.output_dir = None  # the Python API's default, outputs/<algo> (the command line's names the task)
    return RLTrainer(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset,
                     sampler=sampler, components=nodes, algo=algo, component_names=dict(cfg.choices), **kwargs)


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
    with start_up():
        cfg = compose_config(overrides)
    if show is not None:
        print(OmegaConf.to_yaml(cfg, resolve=show == "resolve"))
        return
    start = time.time()
    with start_up():
        trainer = build(cfg)
    run_dir = Path(trainer.args.output_dir)  # output_dir, or output_dir-2, ... when it holds another run
    with _open(cfg):
        cfg.output_dir = str(run_dir)
    trainer.tracker.snapshot = OmegaConf.to_container(cfg, resolve=True)  # run_dir/config.yaml
    say = trainer.tracker.message  # prints on the main process only
    say(f"rl-dlm train: recipe={cfg.recipe_name} algo={cfg.algo_name} task={cfg.task.name} "
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

    from rl_dlm.eval import evaluate_protocol, format_results, load_for_eval

    overrides, show = _split_args(argv)
    with start_up():
        cfg = compose_config(overrides)
    if show is not None:
        print(OmegaConf.to_yaml(cfg, resolve=show == "resolve"))
        return
    with start_up():
        tasks = eval_tasks(cfg, overrides)
    sampler_node = OmegaConf.to_container(cfg.sampler, resolve=True)

    def make_sampler(gen_length: int, steps: int, block_length: int):
        node = dict(sampler_node)
        for key, value in (("gen_length", gen_length), ("steps", steps), ("block_length", block_length),
                           ("temperature", cfg.eval.temperature)):
            if key in node:  # a sampler without the key keeps its own configuration
                node[key] = value
        return instantiate(node)

    model = cfg.model
    with start_up():
        policy = load_for_eval(model.path, adapter=model.get("adapter"), device=cfg.eval.device,
                               bf16=True if cfg.get("bf16") else None,
                               trust_remote_code=model.get("trust_remote_code", False),
                               cuda_graphs=bool(cfg.get("cuda_graphs", True)),
                               fused_projections=bool(cfg.get("fused_projections", True)),
                               compiled_elementwise=bool(cfg.get("compiled_elementwise", False)))
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


def eval_tasks(cfg: DictConfig, overrides: list[str]) -> list:
    """The `rl-dlm eval` tasks: one composition per task (its own rewards, prompt length and protocol defaults),
    paths checked and rows loaded before the model loads."""
    from rl_dlm.data.loading import load_rows
    from rl_dlm.eval import EvalTask
    from rl_dlm.reward_runner import RewardRunner

    check_model_path(cfg.model.path, key="model.path")
    if cfg.model.get("adapter"):
        check_model_path(cfg.model.adapter, key="model.adapter", marker="adapter_config.json")
    check_output_dir(cfg.eval.output_dir, key="eval.output_dir")
    names = list(cfg.eval.tasks or [])
    rest = [o for o in overrides if not o.lstrip("+~").startswith("task=")]
    task_cfgs = [compose_config(rest + [f"task={name}"]) for name in names] if names else [cfg]
    tasks = []
    for c in task_cfgs:
        check_data_files(OmegaConf.to_container(c.task, resolve=True))
        runner = RewardRunner(reward_functions(c.task), correct=c.task.get("correct_reward"))
        tasks.append(EvalTask(c.task.name, load_rows(c.task, "test"), runner, max_prompt_length=c.max_prompt_length,
                              gen_lengths=list(c.eval.gen_lengths), block_length=c.eval.block_length,
                              steps_per_token=c.eval.steps_per_token))
    return tasks


if __name__ == "__main__":
    train_main(sys.argv[1:])
