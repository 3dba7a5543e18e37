"""A small diffu-GRPO run on the embedded tiny model, for the multi-process and resume tests.

Run as a script (one process, or one rank under `torchrun`); every rank writes its history to
`<out>/history_rank<r>.json`:

    python -m tests.distributed_run --out OUT [--deepspeed zero2] [--steps 2] [--per-device 2] [--ga 1] [--group 2]
        [--compiled-blocks]
    torchrun --nproc_per_node 2 -m tests.distributed_run --out OUT --deepspeed zero3 --group 4

`--hang-at-save K` makes the process sleep inside the write of `checkpoint-K` (after its first file), so a test can
SIGKILL it mid-write; `--resume` resumes from the latest complete checkpoint.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from tests.conftest import EMBEDDED


def token_sum_reward(completion_ids, **kw):
    """Deterministic in the tokens and varied within a group, so advantages (and the loss) are non-zero."""
    return [float(sum(ids) % 7) for ids in completion_ids]


def config(out: str, **kw):
    from rl_dlm import DiffuGRPOConfig

    base = dict(output_dir=out, max_steps=2, num_generations=2, per_device_train_batch_size=2,
                gradient_accumulation_steps=1, num_iterations=1, beta=0.04, learning_rate=1e-2,
                max_completion_length=16, block_length=16, diffusion_steps=4, lora_r=4, lora_alpha=8,
                lora_dropout=0.0, report_to=["none"], seed=0)
    return DiffuGRPOConfig(**{**base, **kw})


def run(out: str, rows: int = 16, random_lora: bool = False, **kw) -> list[dict]:
    """`random_lora`: LoRA B starts random instead of 0, so the policy differs from the reference at step 1 and
    the first loss has a non-zero KL term (with μ = 1 the clipped term of the first step sums to 0)."""
    from peft import LoraConfig

    from rl_dlm import DiffuGRPOTrainer
    from rl_dlm.data.tasks import make_split
    from rl_dlm.models.policy import LoraSettings

    args = config(out, **kw)
    peft_config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                             target_modules=LoraSettings().target_modules, init_lora_weights=False) if random_lora else None
    trainer = DiffuGRPOTrainer(str(EMBEDDED), token_sum_reward, args=args, peft_config=peft_config,
                               train_dataset=make_split("countdown", "train", rows))
    try:
        history = trainer.train()
        rank = trainer.runtime.rank
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, f"history_rank{rank}.json").write_text(json.dumps(history))
        return history
    finally:
        trainer.close()


def hang_inside_checkpoint(step: int, marker: Path) -> None:
    """Sleeps inside the write of checkpoint-<step>, after its first torch.save, so it can be killed there."""
    real_save = torch.save

    def save(obj, f, *args, **kw):
        real_save(obj, f, *args, **kw)
        if Path(str(f)).parent.name.startswith(f".checkpoint-{step}.tmp"):
            marker.write_text(str(f))
            time.sleep(3600)

    torch.save = save


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--deepspeed", default=None)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--per-device", type=int, default=2)
    p.add_argument("--ga", type=int, default=1)
    p.add_argument("--group", type=int, default=2)
    p.add_argument("--iterations", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--completion", type=int, default=16, help="max_completion_length (blocks of 16, 4 steps each)")
    p.add_argument("--rows", type=int, default=16, help="train_dataset size")
    p.add_argument("--lora-dropout", type=float, default=0.0)
    p.add_argument("--random-lora", action="store_true", help="LoRA B starts random (policy ≠ reference)")
    p.add_argument("--save-steps", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--hang-at-save", type=int, default=0)
    p.add_argument("--compiled-blocks", action="store_true", help="compiled_blocks=true (the update's block passes)")
    a = p.parse_args()
    if a.hang_at_save:
        hang_inside_checkpoint(a.hang_at_save, Path(a.out) / "hanging")
    run(a.out, rows=a.rows, random_lora=a.random_lora, deepspeed=a.deepspeed, max_steps=a.steps,
        per_device_train_batch_size=a.per_device, gradient_accumulation_steps=a.ga, num_generations=a.group, num_iterations=a.iterations, seed=a.seed,
        max_completion_length=a.completion, diffusion_steps=a.completion // 4, lora_dropout=a.lora_dropout,
        save_steps=a.save_steps, resume=True if a.resume else None, compiled_blocks=a.compiled_blocks)


if __name__ == "__main__":
    main()
