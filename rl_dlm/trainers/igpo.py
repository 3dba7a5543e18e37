"""IGPO (arXiv 2509.10396): semi-AR rollouts; when every sample of a group is wrong (by the correctness reward),
the group is regenerated with chunks of the reference reasoning trace fixed in the canvas and a random subset
of up to 4 correct hinted samples replaces its first slots (`rl_dlm.sampling.inpainting.HintRefiner`, loop
stage 2b); the one-step estimator with the prompt never masked; the clipped ratio (token level, or
`importance_sampling_level="sequence"`) with k3 KL on the tokens kept by the entropy filter (every
self-generated token and the top τ = 20% of hint tokens by old-policy entropy, max(1, ⌊τ·n⌋) of n);
r − mean advantages.

Defaults are the paper's: T = 1.2, G = 8, ε = 0.2, β = 0.01, μ = 4, lr 5e-7, 256 tokens, block 32, 128 steps,
chunks of 5–10 tokens, η ~ U[0.2, 0.6], stretch ≤ 1.5, gaps ≤ 100, the answer chunk not revealed. The reference
trace is the dataset column `hint_column` (default `reasoning`: the solution without its final answer, in the
embedded and the hub tasks). On the embedded tasks `hint_column=completion` (the reasoning *with* the format
tags; its last chunk, the answer, stays hidden) lets 4× more hinted samples succeed (20% vs 5% on countdown, G =
4, T = 1.2), because the hints then sit where the tiny model writes them. IGPO needs the task's correctness
reward (`task.correct_reward`, or `correct_reward=` in Python).

The ratio is token-level by default (the paper's objective); the reference's released run script
(facebookresearch/igpo@e85eaea `run_igpo.sh`) trains with `use_gspo=true`, i.e. `importance_sampling_level=
"sequence"` here. The inpainting stage's remaining differences from the reference code are listed in
`rl_dlm/sampling/inpainting.py`.

    from rl_dlm import IGPOTrainer, IGPOConfig
    trainer = IGPOTrainer(model=path, reward_funcs={"correct": f}, args=IGPOConfig(), train_dataset=rows,
                          correct_reward="correct")
    trainer.train()
    # rl-dlm train algo=igpo refiner.trace_column=completion objective=sequence   (the same knobs, as components)
"""
from __future__ import annotations

from dataclasses import dataclass

from rl_dlm.advantages import get_advantage
from rl_dlm.components import Components
from rl_dlm.likelihood.one_step import OneStepEstimator
from rl_dlm.objectives import ClippedTokenObjective
from rl_dlm.sampling.inpainting import HintRefiner, HintSettings
from rl_dlm.trainers.base import PresetConfig, RLTrainer


@dataclass
class IGPOConfig(PresetConfig):
    num_generations: int = 8
    per_device_train_batch_size: int = 8  # one group per micro-batch (G = 8)
    num_iterations: int = 4
    beta: float = 0.01
    epsilon: float = 0.2
    learning_rate: float = 5e-7
    temperature: float = 1.2
    p_mask_prompt: float = 0.0
    importance_sampling_level: str = "token"  # or "sequence" (TRL's name)
    # inpainting
    hint_column: str = "reasoning"
    hint_min_chunk: int = 5
    hint_max_chunk: int = 10
    hint_eta_min: float = 0.2
    hint_eta_max: float = 0.6
    hint_max_stretch: float = 1.5
    hint_max_gap: int = 100
    hint_free_tail: int = 30  # at 256 tokens; scaled down proportionally for shorter canvases
    hint_reveal_answer_chunk: bool = False
    hint_max_replacements: int = 4
    hint_entropy_top_frac: float = 0.2

    def __post_init__(self):
        super().__post_init__()
        if self.importance_sampling_level not in ("token", "sequence"):
            raise ValueError("importance_sampling_level must be 'token' or 'sequence', got "
                             f"{self.importance_sampling_level!r}")

    def hint_settings(self) -> HintSettings:
        return HintSettings(min_chunk=self.hint_min_chunk, max_chunk=self.hint_max_chunk,
                            eta_min=self.hint_eta_min, eta_max=self.hint_eta_max,
                            max_stretch=self.hint_max_stretch, max_gap=self.hint_max_gap,
                            free_tail=self.hint_free_tail, reveal_answer_chunk=self.hint_reveal_answer_chunk)


class IGPOTrainer(RLTrainer):
    config_class = IGPOConfig

    def build_components(self, sampler) -> Components:
        a = self.args
        sampler = sampler or self.default_sampler()
        if a.importance_sampling_level == "sequence":
            from rl_dlm.objectives import ClippedSequenceObjective

            objective = ClippedSequenceObjective(epsilon=a.epsilon, epsilon_high=a.epsilon_high, beta=a.beta)
        else:
            objective = ClippedTokenObjective(epsilon=a.epsilon, epsilon_high=a.epsilon_high, beta=a.beta)
        refiner = HintRefiner(sampler=sampler, is_correct=self.component_context(None)["is_correct"],
                              trace_column=a.hint_column,
                              max_replacements=a.hint_max_replacements, entropy_top_frac=a.hint_entropy_top_frac,
                              hints=a.hint_settings())
        estimator = OneStepEstimator(p_mask_prompt=a.p_mask_prompt, mask_id=self.policy.mask_id)
        return Components(sampler=sampler, estimator=estimator,
                          objective=objective, advantage=get_advantage(a.advantage_name), refiners=[refiner])
