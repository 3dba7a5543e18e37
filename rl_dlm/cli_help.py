"""`rl-dlm train --help` and `rl-dlm eval --help`: the recipes, the config groups and their options, and the
most-used keys with the value the default recipe gives them, read from `recipes/` and `conf/` so the help
never goes stale."""
from __future__ import annotations

from pathlib import Path

# (key, what it sets) in the order a new user reaches for them.
TRAIN_KEYS = [
    ("max_steps", "optimizer steps (each rollout batch serves num_iterations of them)"),
    ("learning_rate", "AdamW learning rate"),
    ("num_generations", "G, completions per prompt (≥ 2; divides the rows per step)"),
    ("per_device_train_batch_size", "rollout rows per process and accumulation step"),
    ("gradient_accumulation_steps", "micro-batches per optimizer step"),
    ("num_iterations", "μ, optimizer steps per rollout batch"),
    ("objective.beta", "β, the KL penalty (≥ 0), a knob of the objective"),
    ("objective.epsilon", "ε, the ratio clip"),
    ("temperature", "rollout sampling temperature (≥ 0)"),
    ("max_completion_length", "the completion canvas L (a multiple of block_length)"),
    ("block_length", "semi-AR block size"),
    ("diffusion_steps", "denoising steps per rollout (a multiple of the number of blocks)"),
    ("lora_r", "LoRA rank"),
    ("seed", "seed of data order, rollouts and masks"),
    ("output_dir", "the run's directory (config, metrics, checkpoints, final/); a used one gets -2, -3"),
    ("save_steps", "checkpoint every N optimizer steps (0: only the final adapter)"),
    ("resume", "true: the newest intact checkpoint; or a path (see also resume_force)"),
    ("report_to", "[stdout], [tensorboard], [wandb] or [none]"),
    ("model.path", "a local model directory or a hub id"),
    ("task.train_size", "training problems"),
    ("eval.before", "held-out accuracy before training (true/false); eval.after likewise"),
]
EVAL_KEYS = [
    ("model.path", "a local model directory or a hub id"),
    ("model.adapter", "a LoRA adapter directory, e.g. outputs/<run>/final"),
    ("eval.tasks", "several tasks in one run, e.g. [countdown,sudoku]"),
    ("eval.gen_lengths", "completion lengths to evaluate, e.g. [128,256,512]"),
    ("eval.block_length", "semi-AR block size"),
    ("eval.steps_per_token", "denoising steps per generated token (the papers: 0.5)"),
    ("eval.batch_size", "prompts per greedy rollout"),
    ("eval.output_dir", "where completions.jsonl and results.json go"),
    ("task.eval_size", "held-out problems"),
]
USAGE = {
    "train": "rl-dlm train [recipe=NAME] [GROUP=OPTION ...] [KEY=VALUE ...] [--cfg job] [--debug]",
    "eval": "rl-dlm eval [recipe=NAME] [GROUP=OPTION ...] [KEY=VALUE ...] [--cfg job] [--debug]",
}
GROUPS = ("algo", "model", "task", "sampler", "likelihood", "objective", "advantage", "refiner", "deepspeed")


def _first_comment(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            text = line.lstrip("# ").strip()
            return text if len(text) <= 84 else text[:81].rstrip() + "..."
    return ""


def _value(cfg, key: str) -> str:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    try:
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
    except Exception:  # noqa: BLE001 - an interpolation the help cannot resolve: show the key alone
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value).replace(" ", "")


def command_help(command: str = "train") -> str:
    from rl_dlm.hydra_app import ROOT, compose_config

    lines = [f"usage: {USAGE[command]}", ""]
    lines.append("Composes recipes/<recipe>.yaml + conf/ + your overrides (Hydra); a bad key, path or dataset row "
                 "fails at start-up, before any model loads, with a one-line message (--debug or "
                 "HYDRA_FULL_ERROR=1: the traceback).")
    lines += ["", "recipes (recipe=NAME; default quickstart):"]
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        lines.append(f"  {path.stem:<26}{_first_comment(path)}")
    lines += ["", "config groups (GROUP=OPTION):"]
    from rl_dlm.component_groups import entries

    for group in GROUPS:
        options = sorted([p.stem for p in (ROOT / "conf" / group).glob("*.yaml")] + list(entries().get(group, ())))
        lines.append(f"  {group:<11}{', '.join(options)}")
    try:
        cfg = compose_config([])
    except Exception:  # noqa: BLE001 - the help still lists the keys, without values
        cfg = None
    keys = TRAIN_KEYS if command == "train" else EVAL_KEYS
    lines += ["", "most-used keys (KEY=VALUE; value: the quickstart's):"]
    for key, what in keys:
        value = _value(cfg, key) if cfg is not None else ""
        shown = f"{key}={value}" if value else key
        if len(shown) > 40:
            shown = shown[:37] + "..."
        lines.append(f"  {shown:<41}{what}")
    lines += ["", "An algorithm is a choice of sampler, likelihood, objective, advantage and refiner (conf/algo/); "
              "each component's knobs are keys under its group (likelihood.nodes=5, objective.beta=0.01), and "
              "any component may be swapped (likelihood=coupled). `--cfg job` prints every component, knob and key.",
              "Examples:  rl-dlm train algo=gdpo max_steps=40    rl-dlm train algo=diffu_grpo likelihood=coupled    "
              "rl-dlm eval task=sudoku"]
    return "\n".join(lines)
