"""The trainer bundle: TRL-shaped construction around the algorithm-blind loop.

    trainer = DiffuGRPOTrainer(model="checkpoints/tiny-llada", reward_funcs=[my_reward],
                               args=DiffuGRPOConfig(max_steps=10), train_dataset=rows)
    trainer.train()

A concrete trainer only picks components and the paper's defaults (`build_components`). Field names follow
TRL's `GRPOConfig` where the meaning is the same (`num_generations`, `beta`, `epsilon`, `num_iterations`,
`max_prompt_length`, `max_completion_length`, `temperature`, `learning_rate`,
`per_device_train_batch_size`, `gradient_accumulation_steps`, `scale_rewards`, `reward_weights`, ...).
Rollout rows per optimizer step = `per_device_train_batch_size × gradient_accumulation_steps` per process; times
the number of processes it must be a multiple of `num_generations` (a group may span processes).

Scale-out and resumption (docs/distributed.md): `deepspeed` names a ZeRO config (`zero2`, `zero3`, a file or a
dict) and the run goes through accelerate + DeepSpeed (`rl_dlm/distributed.py`); `resume` (True = the latest
checkpoint in `output_dir`, or a checkpoint path) restores weights, optimizer, scheduler, data order, generators,
step counters and the tracker (`rl_dlm/checkpoint.py`). Call `close()` when done with a DeepSpeed run.
"""
from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from rl_dlm.checkpoint import latest_checkpoint, load_checkpoint, remove_partial, resolve_resume, save_checkpoint
from rl_dlm.component_groups import build as build_from_nodes, check_composition
from rl_dlm.components import Components
from rl_dlm.distributed import default_device, env_rank, env_world_size, make_runtime
from rl_dlm.loop import LoopSettings, train
from rl_dlm.models.families import local_family_name
from rl_dlm.models.policy import LoraSettings, Policy, disable_dropout, load_policy
from rl_dlm.reward_runner import RewardFunction, RewardRunner
from rl_dlm.run_guard import NonFiniteLossError, checkpoint_on_failure, describe, out_of_memory_fix
from rl_dlm.runs import algo_name, claim_run_dir, run_config
from rl_dlm.sampling.base import check_sampler_family
from rl_dlm.sampling.semi_ar import SemiARSampler
from rl_dlm.tracking import Tracker, progress_bar
from rl_dlm.validation import check_config, check_trainer_start



def bf16_autocast(device_type: str, enabled: bool) -> torch.autocast:
    """The bf16 autocast the loop runs in, with autocast's weight-cast cache off. The cache keeps the bf16 copy
    of each fp32 leaf weight (the LoRA adapters) until the outermost autocast context exits, and `train()` runs
    in one context: with it on, every forward after the first would reuse the first step's adapter weights and
    the run would train nothing. Without it each forward casts the adapters afresh (≈ 2 GB of memory traffic
    per forward at 8B with r 128, ≈ 0.5 ms on an H200)."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=enabled, cache_enabled=False)

@dataclass
class RLConfig:
    output_dir: str | None = None  # None: outputs/<algo>; a directory holding another run gets -2, -3 (runs.py)
    seed: int = 0
    max_steps: int = 100
    # batch
    per_device_train_batch_size: int = 6
    gradient_accumulation_steps: int = 1
    num_generations: int = 6
    num_iterations: int = 1
    # optimisation (the LLaDA papers' shared defaults)
    learning_rate: float = 3e-6
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    max_grad_norm: float = 0.2
    lr_scheduler_type: str = "constant_with_warmup"
    warmup_steps: int = 0
    bf16: bool = False
    reward_weights: list[float] | None = None
    # generation (TRL's names; the sampler nodes of conf/sampler/ interpolate them)
    max_prompt_length: int | None = 200
    max_completion_length: int = 256
    block_length: int = 32
    diffusion_steps: int = 128
    temperature: float = 0.9
    remasking: str = "low_confidence"
    forward_batch_size: int | None = None  # rows per no-grad forward of the old / reference log-probs (None: all)
    # step replays (CJ-GRPO, MDPO): steps forwarded together in the update, one backward over their summed
    # losses; larger GEMMs, that many steps' activations held (rl_dlm/loop.py `update_micro_batch`)
    replay_steps_per_forward: int = 1
    # LoRA
    lora_r: int = 128
    lora_alpha: int = 64
    lora_dropout: float = 0.05
    # TRL's name (GRPOConfig defaults it to False): p = 0 for every dropout of the policy, LoRA's included, so
    # the ratio is exactly 1 at the first inner step; `lora_dropout` only acts with disable_dropout=False
    disable_dropout: bool = True
    gradient_checkpointing: bool = False
    merge_lora_for_inference: bool = False  # fold LoRA into the weights while sampling (small, 1-process models)
    # replay the rollouts' unpadded forwards from CUDA graphs: the same logits, far fewer kernel launches
    # (rl_dlm/models/cuda_graphs.py; CUDA only, costs one forward's activations plus each window's logits)
    cuda_graphs: bool = True
    # q/k/v and gate/up as one GEMM each where the base weights are frozen, LoRA in fewer passes
    # (rl_dlm/models/fused_projections.py: the same modules and LoRA targets, outputs equal to rounding)
    fused_projections: bool = True
    # RMSNorm, RoPE and SiLU·mul as fused compiled kernels (rl_dlm/models/elementwise.py: outputs and gradients
    # equal to bf16 rounding; compiles at the first forward: 6.4 s at 8B on an H100)
    compiled_elementwise: bool = False
    # each block's pass under autograd (the update's forward and its recompute) as one compiled graph, with the
    # compiled element-wise kernels (rl_dlm/models/compiled_blocks.py: equal to bf16 rounding; 1.64× on the 8B
    # checkpointed 6-row update on an H100; compiles at the first update; refused under ZeRO-3)
    compiled_blocks: bool = False
    # logging and checkpoints
    logging_steps: int = 1
    save_steps: int = 0
    save_total_limit: int | None = None
    report_to: list[str] = field(default_factory=lambda: ["stdout"])
    resume: bool | str | None = None  # True: latest checkpoint in output_dir (if any); or a checkpoint path
    resume_force: bool = False  # resume a checkpoint even if its run differs in a key that changes the algorithm
    # a step whose loss or gradient is not finite is skipped; this many in a row save a checkpoint and stop
    max_skipped_steps: int = 3
    # scale-out
    deepspeed: dict | str | None = None  # "zero2", "zero3" (conf/deepspeed/), a .json/.yaml path, or a dict

    def __post_init__(self):
        check_config(self)  # types, ranges and batch geometry, each named by its key (rl_dlm/validation.py)
        if self.save_steps and self.save_steps % self.num_iterations:
            raise ValueError(
                f"save_steps = {self.save_steps} must be a multiple of num_iterations = {self.num_iterations}, so "
                "checkpoints fall between rollouts and a resumed run continues exactly")


@dataclass
class PresetConfig(RLConfig):
    """The Python presets' flat view of the knobs their components take (TRL's names where TRL has one): the
    objective's ε and β and the advantage. A preset's own config adds its estimator's knobs. `rl-dlm train` sets the same knobs on the components (`objective.beta`, `advantage=`,
    `likelihood.p_mask_prompt`); tests/trainers/test_presets.py checks that each preset builds the components
    its conf/algo YAML composes."""

    beta: float = 0.04
    epsilon: float = 0.5
    epsilon_high: float | None = None
    scale_rewards: str = "none"  # "none": r − mean; "group": z-score within the group
    leave_one_out: bool = False  # r − mean of the other G − 1 (overrides scale_rewards)

    @property
    def advantage_name(self) -> str:
        return "leave_one_out" if self.leave_one_out else "zscore" if self.scale_rewards == "group" else "mean"


def as_reward_functions(reward_funcs, weights: list[float] | None) -> list[RewardFunction]:
    if isinstance(reward_funcs, dict):
        funcs = [f if isinstance(f, RewardFunction) else RewardFunction(f, name=name)
                 for name, f in reward_funcs.items()]
    else:
        items = reward_funcs if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
        funcs = [f if isinstance(f, RewardFunction) else RewardFunction(f) for f in items]
    if weights is not None:
        if len(weights) != len(funcs):
            raise ValueError(f"reward_weights has {len(weights)} entries for {len(funcs)} reward functions")
        for f, w in zip(funcs, weights):
            f.weight = w
    return funcs


def shuffled_batches(rows: list[dict], batch_size: int, seed: int, skip: int = 0) -> Iterator[list[dict]]:
    """Endless batches over reshuffled epochs; the order is a function of (seed, epoch) only."""
    if len(rows) < batch_size:
        raise ValueError(f"train_dataset has {len(rows)} rows, fewer than the {batch_size} prompts per rollout")
    epoch, taken = 0, 0
    while True:
        order = list(range(len(rows)))
        random.Random(f"{seed}/{epoch}").shuffle(order)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            if taken >= skip:
                yield [rows[j] for j in order[i:i + batch_size]]
            taken += 1
        epoch += 1


class RLTrainer:
    """The trainer. Its components come from config nodes (`components=`, what `rl-dlm train` passes: group →
    `{_target_, knobs}`, rl_dlm/component_groups.py) or from a preset's `build_components` (DiffuGRPOTrainer, ...).

        args, sampler, nodes = trainer_args(compose_algo("gdpo", ["likelihood=coupled"]))   # rl_dlm.hydra_app
        trainer = RLTrainer(model=path, reward_funcs=[f], args=args, train_dataset=rows, sampler=sampler,
                            components=nodes, algo="gdpo")       # what rl_dlm.hydra_app.algo_trainer does
    """

    config_class = RLConfig

    def __init__(self, model, reward_funcs, args: RLConfig | None = None, train_dataset=None,
                 processing_class=None, peft_config=None, eval_dataset=None, sampler=None,
                 correct_reward: str | None = None, tracker: Tracker | None = None,
                 components: dict | None = None, algo: str | None = None, component_names: dict | None = None):
        self.args = args or self.config_class()
        a = self.args
        self.algo = algo or algo_name(type(self))
        self.component_nodes, self.component_names = components, component_names or {}
        a.output_dir = str(claim_run_dir(a.output_dir or f"outputs/{self.algo}", a.resume,
                                         env_world_size(), env_rank() == 0))
        # the model's family before it loads (a default sampler may follow it); None when unknown until loaded
        self.family_name = model.family.name if isinstance(model, Policy) else local_family_name(model)
        check_trainer_start(a, model, train_dataset, eval_dataset, reward_funcs,  # before the model loads
                            make_sampler=None if sampler is not None else self.default_sampler)
        self.rewards = RewardRunner(as_reward_functions(reward_funcs, a.reward_weights), correct=correct_reward)
        self.train_dataset = [dict(r) for r in train_dataset] if train_dataset is not None else None
        if components is not None:  # knobs and pairs checked before the model loads, with placeholder ids
            if sampler is None:
                raise ValueError("components= needs the rollout sampler= too")
            self.check_components(build_from_nodes(components, sampler, self.component_context(None)))
        torch.manual_seed(a.seed)  # LoRA initialisation only; the loop uses explicit per-row generators
        if isinstance(model, Policy):
            self.policy = model
        else:
            lora = LoraSettings(a.lora_r, a.lora_alpha, a.lora_dropout) if peft_config is None else None
            # bf16=True loads the base weights in bf16 (half the memory of fp32; an 8B model needs it on one GPU);
            # LoRA adapters stay fp32 (peft's default) and the loop runs under bf16 autocast.
            self.policy = load_policy(model, tokenizer=processing_class, lora=lora, device=default_device(),
                                      dtype=torch.bfloat16 if a.bf16 else torch.float32,
                                      fused_projections=a.fused_projections,
                                      compiled_elementwise=a.compiled_elementwise,
                                      compiled_blocks=a.compiled_blocks)
            if peft_config is not None:
                from peft import get_peft_model

                self.policy.model = get_peft_model(self.policy.model, peft_config)
        self.family_name = self.policy.family.name
        if a.disable_dropout:
            disable_dropout(self.policy.model)
        self.policy.merge_lora_for_inference = a.merge_lora_for_inference
        self.policy.cuda_graphs = a.cuda_graphs
        if a.gradient_checkpointing:
            self.policy.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.eval_dataset = [dict(r) for r in eval_dataset] if eval_dataset is not None else None
        self.components = self.build_components(sampler)
        check_sampler_family(self.components.sampler, self.policy)
        self.check_components(self.components)
        self.tracker = tracker or Tracker(a.output_dir, a.report_to, config=run_config(self, model),
                                          is_main=env_rank() == 0)
        self.runtime = None  # made by train(): one process, or a DeepSpeed engine per rank
        self.global_step = 0  # the last completed optimizer step

    # -- what a concrete trainer chooses -------------------------------------------------------------------
    def default_sampler(self):
        a = self.args
        return SemiARSampler(gen_length=a.max_completion_length, block_length=a.block_length,
                             steps=a.diffusion_steps, temperature=a.temperature, remasking=a.remasking)

    def build_components(self, sampler) -> Components:
        """The components from their config nodes (a preset builds its own instead)."""
        if self.component_nodes is None:
            raise ValueError(f"{type(self).__name__} has no components: pass components= (group → config node, "
                             "rl_dlm.component_groups) or use a preset such as DiffuGRPOTrainer")
        return build_from_nodes(self.component_nodes, sampler, self.component_context(self.policy))

    def component_context(self, policy: Policy | None) -> dict:
        """What every component that takes it is given at construction: the policy's token ids (placeholders
        before the model loads) and the rewards' correctness test (None when no correct_reward is named)."""
        return {"mask_id": -1 if policy is None else policy.mask_id,
                "stop_id": None if policy is None else policy.stop_id,
                "is_correct": self.rewards.is_correct if self.rewards.correct is not None else None}

    def check_components(self, components: Components):
        """The components fit together (rl_dlm.component_groups.check_composition) and suit the data."""
        names = self.component_names
        check_composition(components, sampler_name=f"sampler={names['sampler']}" if names.get("sampler") else None)
        for refiner in components.refiners:
            refiner.check_rows(self.train_dataset or [])

    # -- running -------------------------------------------------------------------------------------------
    def make_optimizer(self):
        from transformers import get_scheduler

        a = self.args
        params = self.policy.trainable_parameters()
        if not params:
            raise ValueError("the model has no trainable parameters; is LoRA applied?")
        optimizer = torch.optim.AdamW(params, lr=a.learning_rate, betas=(a.adam_beta1, a.adam_beta2),
                                      weight_decay=a.weight_decay)
        scheduler = get_scheduler(a.lr_scheduler_type, optimizer, num_warmup_steps=a.warmup_steps,
                                  num_training_steps=a.max_steps)
        return optimizer, scheduler

    def loop_settings(self) -> LoopSettings:
        return LoopSettings(**{f.name: getattr(self.args, f.name) for f in fields(LoopSettings)})

    def train(self, progress: Callable | None = None) -> list[dict]:
        """Runs to `max_steps`. On Ctrl-C, SIGTERM or an error, saves a checkpoint of the last completed step and
        says where it is before the exception goes on (`rl_dlm/run_guard.py`)."""
        if self.train_dataset is None:
            raise ValueError("train() needs a train_dataset")
        a, settings = self.args, self.loop_settings()
        optimizer, scheduler, runtime = self.setup()
        start = self.global_step = self.resume(optimizer, scheduler)
        prompts = settings.rows_per_rollout * runtime.world_size // a.num_generations
        batches = shuffled_batches(self.train_dataset, prompts, a.seed, skip=start // a.num_iterations)

        def stepped(step: int, info: dict):  # called right after each optimizer step: what a stop would save
            self.global_step = step
            if progress is not None:
                progress(step, info)

        def on_step(step: int):
            if a.save_steps and step % a.save_steps == 0:
                self.save_checkpoint()
            sigterm.stop_if_requested(runtime.any)  # several processes: SIGTERM stops all of them here

        self.policy.model.train()
        autocast = bf16_autocast(self.policy.device.type, a.bf16)
        if progress is None:  # a user's callback hears of optimizer steps only; the default bar is drawn now,
            progress = progress_bar(a.max_steps, disable=not runtime.is_main)  # after the resume messages
            progress(start, {})
        guard = checkpoint_on_failure(lambda exc: self.save_on_failure(exc, start), self.tracker.message,
                                      processes=runtime.world_size)
        with guard as sigterm, autocast:
            history = train(self.policy, self.components, self.rewards, batches, optimizer, scheduler, settings,
                            self.tracker, start_step=start, on_step=on_step, progress=stepped, runtime=runtime)
        self.tracker.finish()  # metrics.png
        return history

    def save_checkpoint(self) -> Path:
        """`checkpoint-<global_step>` in `output_dir` (every process calls it under DeepSpeed)."""
        a, step = self.args, self.global_step
        state = {"tracker": self.tracker.state_dict(), "rollouts": step // a.num_iterations}
        return save_checkpoint(a.output_dir, step, self.policy, self.optimizer, self.scheduler, state,
                               a.save_total_limit, runtime=self.runtime)

    def save_on_failure(self, exc: BaseException, start: int) -> str:
        """What a stopped run keeps: a checkpoint of the last completed optimizer step, when there is one since
        `start`. Under DeepSpeed a checkpoint needs every process, so only a stop that every process reaches at
        the same point (SIGTERM, too many skipped steps) saves one; otherwise the latest complete checkpoint is
        named."""
        why, step = describe(exc), self.global_step
        fix = out_of_memory_fix(exc, self.tracker.current_stage)
        if step == start:
            since = f" since step {start}" if start else ""
            return f"{why} before an optimizer step{since}: no new checkpoint to save.{fix}"
        together = isinstance(exc, NonFiniteLossError) or getattr(exc, "everywhere", False)
        if self.runtime.world_size > 1 and not together:
            return (f"{why} at step {step}; a {self.runtime.world_size}-process run cannot save once one process "
                    f"has stopped: the latest complete checkpoint is {latest_checkpoint(self.args.output_dir)}"
                    f".{fix}")
        self.tracker.message(f"{why} at step {step}: saving a checkpoint (Ctrl-C again abandons it)")
        path = self.save_checkpoint()
        return (f"{why} at step {step}: checkpoint saved to {path} (continue with resume=true or resume={path})."
                f"{fix}")

    def setup(self):
        """Optimizer, scheduler and runtime (one process, or a DeepSpeed engine per rank), made once."""
        if self.runtime is None:
            self.optimizer, self.scheduler = self.make_optimizer()
            self.runtime = make_runtime(self.args, self.policy, self.optimizer, self.scheduler)
            self.tracker.reduce = self.runtime.mean
        return self.optimizer, self.scheduler, self.runtime

    def resume(self, optimizer, scheduler) -> int:
        """Deletes half-written checkpoints; with `args.resume`, restores one and returns its step (else 0)."""
        a = self.args
        if self.runtime.is_main:
            remove_partial(a.output_dir)
        path = resolve_resume(a.resume, a.output_dir, self.tracker.config, a.resume_force)
        if path is None:
            return 0
        state = load_checkpoint(path, self.policy, optimizer, scheduler, runtime=self.runtime)
        self.tracker.load_state_dict(state.get("tracker", {}))
        self.tracker.message(f"resumed from {path} at step {state['global_step']}")
        return int(state["global_step"])

    def close(self):
        """Ends a DeepSpeed run cleanly (ZeRO-3 aborts at exit otherwise); a no-op for one process."""
        if self.runtime is not None:
            self.runtime.close()

    def evaluate(self, rows: list[dict] | None = None, sampler=None, batch_size: int = 64, **kw) -> dict:
        from rl_dlm.eval import evaluate

        rows = rows if rows is not None else self.eval_dataset
        if rows is None:
            raise ValueError("evaluate() needs rows or an eval_dataset")
        sampler = sampler or self.greedy_sampler()
        autocast = bf16_autocast(self.policy.device.type, self.args.bf16)
        if self.args.deepspeed:
            self.setup()  # under DeepSpeed the weights live in the engine (ZeRO-3: in shards)
        gathered = self.runtime.gathered(self.policy) if self.runtime is not None else contextlib.nullcontext()
        with autocast, gathered:
            return evaluate(self.policy, sampler, rows, self.rewards, batch_size=batch_size,
                            max_prompt_length=self.args.max_prompt_length, **kw)

    def greedy_sampler(self):
        import dataclasses

        return dataclasses.replace(self.components.sampler, temperature=0.0)

    def save_model(self, path: str):
        """The LoRA adapter and tokenizer (under DeepSpeed: gathered, written by the main process)."""
        if self.runtime is not None:
            self.runtime.save_adapter(Path(path), self.policy)
            return
        self.policy.model.save_pretrained(path)
        self.policy.tokenizer.save_pretrained(path)
