"""`rl-dlm train` and `rl-dlm eval`: compose `recipes/<recipe>.yaml` + `conf/` + command-line overrides.

    rl-dlm train                                   # recipe=quickstart
    rl-dlm train recipe=quickstart algo=diffu_grpo max_steps=2 task=arithmetic
    rl-dlm train --cfg job                         # print the composed config and exit
    rl-dlm eval task=countdown eval.gen_lengths=[48]      # the papers' eval protocol (rl_dlm.eval)
    rl-dlm eval model.adapter=outputs/run/final eval.tasks=[countdown,sudoku]

Every field of the chosen trainer's config dataclass (e.g. `DiffuGRPOConfig`) is a top-level key, with the
dataclass default unless the algo, task or recipe sets it; the defaults live in one place, the dataclass.
A recipe's top-level keys apply to every algorithm; keys it tunes for one algorithm go under
`algo_settings.<algo>` and apply only when that algorithm is composed (`apply_algo_settings`), so `algo=X`
keeps X's own settings for them. The command line wins over both.

Start-up is validated before any model loads (rl_dlm/validation.py): config types and ranges, paths, the output
directory, every dataset row. Errors of composition and start-up are `ConfigError`s that name the key, row or
path; `rl-dlm` prints them in one line (rl_dlm/cli.py).
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rl_dlm.config import dataclass_kwargs, instantiate, resolve
from rl_dlm.resources import ROOT  # conf/, recipes/, checkpoints/: the checkout's, or the wheel's copy
from rl_dlm.validation import (ConfigError, check_data_files, check_model_path, check_output_dir,
                               check_resume_and_deepspeed, check_rows, check_values, interpolated_keys,
                               sampler_keys_as, start_up)

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
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    recipe = "quickstart"
    rest = []
    for item in overrides:
        if item.startswith("recipe="):
            recipe = item.split("=", 1)[1]
        else:
            rest.append(item)
    if not (ROOT / "recipes" / f"{recipe}.yaml").exists():
        known = sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))
        close = difflib.get_close_matches(recipe, known, n=1)
        hint = f"did you mean recipe={close[0]}? " if close else ""
        raise ConfigError(f"unknown recipe {recipe!r}; {hint}recipes are {', '.join(known)} (in {ROOT / 'recipes'})")
    register_args()
    with initialize_config_dir(config_dir=str(ROOT / "recipes"), version_base="1.3"):
        try:
            cfg = compose(config_name=recipe, overrides=[_searchpath_override(), *rest], return_hydra_config=True)
        except (HydraException, OmegaConfBaseException) as exc:  # reworded to name the key and the fix
            raise composition_error(exc, recipe, rest) from exc
    with _open(cfg):
        algo = cfg.hydra.runtime.choices.get("algo")
        del cfg["hydra"]
        apply_algo_settings(cfg, algo, rest, recipe)
        cfg.recipe_name = recipe
        cfg.algo_name = _algo_name(cfg.trainer)  # the default output_dir names the algorithm
    return cfg


def _algo_name(trainer: str) -> str:
    from rl_dlm.runs import algo_name

    try:
        return algo_name(resolve(trainer))
    except Exception:  # noqa: BLE001  an unknown trainer is reported where it is built, not here
        return str(trainer).rsplit(".", 1)[-1]


def _searchpath_override() -> str:
    return f"hydra.searchpath=[file://{ROOT / 'conf'}]"


def _override_key(item: str) -> str:
    return item.split("=", 1)[0].lstrip("+~")


def apply_algo_settings(cfg: DictConfig, algo: str | None, overrides: list[str], recipe: str = "") -> None:
    """The recipe's `algo_settings.<algo>` block (keys it tunes for that algorithm) over its top-level keys; a key
    also set on the command line keeps the command line's value. Blocks of other algorithms are dropped, so
    `algo=X` keeps X's own settings (its config dataclass) for the keys they hold."""
    blocks = cfg.get("algo_settings")
    if blocks is None:
        return
    known = sorted(p.stem for p in (ROOT / "conf" / "algo").glob("*.yaml"))
    for name in blocks:
        if name not in known:
            raise ConfigError(f"recipe {recipe}: algo_settings.{name} names no algorithm; "
                              f"algorithms are {', '.join(known)}")
    chosen = blocks.get(algo) or {}
    given = {_override_key(o) for o in overrides}
    for key, value in chosen.items():
        if any(key == g or key.startswith(g + ".") or g.startswith(key + ".") for g in given):
            continue
        OmegaConf.update(cfg, key, value, merge=False)
    del cfg["algo_settings"]


def composition_error(exc: Exception, recipe: str, overrides: list[str]) -> Exception:
    """Hydra's composition errors as one-line `ConfigError`s that name the key or option and the fix (never
    Hydra's "use +key", which would add a key that nothing reads)."""
    from hydra.errors import MissingConfigException, OverrideParseException

    text = str(exc).strip()
    unknown = re.match(r"Could not override '([^']+)'", text)
    if unknown:
        return ConfigError(unknown_key_message(unknown.group(1), recipe, overrides))
    if isinstance(exc, MissingConfigException) and exc.options and exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        close = difflib.get_close_matches(option, exc.options, n=1)
        hint = f"; did you mean {group}={close[0]}?" if close else ""
        return ConfigError(f"unknown {group} {option!r}{hint} ({group} options: {', '.join(exc.options)})")
    if isinstance(exc, OverrideParseException):
        bad = re.match(r"Error parsing override '(.*)'", text)
        what = f"override {bad.group(1)!r}" if bad else f"an override ({text.splitlines()[0]})"
        return ConfigError(f"cannot parse {what}: overrides are key=value (e.g. max_steps=2, algo=gdpo); "
                           "rl-dlm train --help lists the groups and keys")
    return ConfigError(text.splitlines()[0] if text else type(exc).__name__)


def unknown_key_message(key: str, recipe: str, overrides: list[str]) -> str:
    """'unknown key K; did you mean C?', C the closest key of the config this command composes (difflib); or
    the algorithm whose key K is."""
    from hydra import compose

    from rl_dlm.trainers import TRAINERS

    groups = {p.name for p in (ROOT / "conf").iterdir() if p.is_dir()}
    chosen = [o for o in overrides if "=" in o and _override_key(o) in groups and not o.startswith("~")]
    try:
        cfg = compose(config_name=recipe, overrides=[_searchpath_override(), *chosen], return_hydra_config=True)
        algo = cfg.hydra.runtime.choices.get("algo")
        keys = list(_dotted_keys(OmegaConf.to_container(cfg, resolve=False), skip=("hydra", "algo_settings")))
    except Exception:  # noqa: BLE001 - the suggestion is a courtesy; the key is still named
        algo, keys = None, []
    owners = [name for name, (_, config_cls) in TRAINERS.items()
              if key in {f.name for f in dataclasses.fields(config_cls)}]
    if owners and algo not in owners:
        return (f"unknown key {key!r} for algo={algo}: it is a key of algo={' / algo='.join(owners)}; "
                f"add algo={owners[0]} or drop {key}")
    close = difflib.get_close_matches(key, keys + sorted(groups), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (f"unknown key {key!r}{hint} (rl-dlm train --help lists the main keys; --cfg job prints every key "
            "of this composition)")


def _dotted_keys(node, prefix: str = "", skip: tuple[str, ...] = ()):
    for key, value in node.items():
        if key in skip:
            continue
        path = f"{prefix}{key}"
        yield path
        if isinstance(value, dict):
            yield from _dotted_keys(value, path + ".")


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
    check_values(config_cls, values)  # types and ranges, naming the key, before the dataclass sees them
    args = config_cls(**dataclass_kwargs(config_cls, values, "config"))
    with sampler_keys_as(interpolated_keys(OmegaConf.to_container(cfg.sampler, resolve=False))):
        sampler = instantiate(OmegaConf.to_container(cfg.sampler, resolve=True))
    return trainer_cls, args, sampler


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

    trainer_cls, args, sampler = trainer_args(cfg)
    check_run_paths(cfg, args)
    train_rows = load_rows(cfg.task, "train")
    eval_rows = load_rows(cfg.task, "test")
    for rows, split in ((train_rows, "train"), (eval_rows, "test")):
        check_rows(rows, f"task {cfg.task.name!r} ({split} split)")
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
                               trust_remote_code=model.get("trust_remote_code", False))
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
