"""`rl-dlm`: the command-line entry point.

    rl-dlm train [recipe=quickstart] [key=value ...] [--cfg job]   Hydra-composed RL training
    rl-dlm eval  [recipe=...] [key=value ...]                      held-out accuracy of a model
    rl-dlm sft   [--output DIR] [--steps N] [--device cuda] ...    masked-diffusion SFT of the embedded model
    rl-dlm export CHECKPOINT OUT_DIR [--base PATH] [--dtype bfloat16]   merge a LoRA adapter for serving
    rl-dlm plot  RUN_DIR                                           reward and accuracy against step (metrics.png)

Errors found at start-up (a bad key, value, path or dataset row) print as one line naming it and the fix, and
exit with status 2; `--debug` (anywhere on the line) or HYDRA_FULL_ERROR=1 shows the full traceback instead.
`rl-dlm train --help` lists the recipes, the config groups and the most-used keys.
"""
from __future__ import annotations

import argparse
import os
import sys

DEBUG_HINT = "(for the full traceback: add --debug, or set HYDRA_FULL_ERROR=1)"


def sft_main(argv: list[str]) -> None:
    from rl_dlm.sft import SFTSettings, build_embedded_model

    defaults = SFTSettings()
    parser = argparse.ArgumentParser(prog="rl-dlm sft", description="Masked-diffusion SFT of the embedded model")
    parser.add_argument("--output", default=defaults.output,
                        help="model directory (default: a new outputs/sft-<time>; the shipped "
                             "checkpoints/tiny-llada is written only when named here)")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=defaults.bf16)
    parser.add_argument("--snapshot-every", type=int, default=0)
    args = parser.parse_args(argv)
    out = build_embedded_model(SFTSettings(
        output=args.output, steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
        seed=args.seed, device=args.device, bf16=args.bf16,
        snapshot_every=args.snapshot_every))
    print(f"saved {out}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("HYDRA_FULL_ERROR") == "1"
    argv = [a for a in argv if a != "--debug"]
    from rl_dlm.export import export_main
    from rl_dlm.plot import plot_main
    from rl_dlm.validation import ConfigError

    commands = {"sft": sft_main, "export": export_main, "plot": plot_main}
    try:
        from rl_dlm.hydra_app import eval_main, train_main

        commands.update(train=train_main, eval=eval_main)
    except ImportError as exc:  # hydra missing: train/eval unavailable, sft still works
        missing = exc
        commands.update(train=lambda _: sys.exit(f"rl-dlm train needs hydra-core: {missing}"))
    if not argv:
        argv = ["train"]
    if argv[0] in ("-h", "--help"):
        print(__doc__)
        if "eval" in commands:  # hydra-core is installed
            print(command_help("train"))
        return
    if argv[0] not in commands:
        sys.exit(f"unknown command {argv[0]!r}; use one of {sorted(commands)} (rl-dlm --help)")
    if argv[0] in ("train", "eval") and any(a in ("-h", "--help") for a in argv[1:]):
        print(command_help(argv[0]))
        return
    try:
        commands[argv[0]](argv[1:])
    except ConfigError as exc:
        if debug:
            raise
        print(f"rl-dlm {argv[0]}: error: {exc}", file=sys.stderr)
        print(DEBUG_HINT, file=sys.stderr)
        raise SystemExit(2) from None


def command_help(command: str) -> str:
    from rl_dlm.cli_help import command_help as text

    return text(command)


if __name__ == "__main__":
    main()
