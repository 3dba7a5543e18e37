"""GDPO (arXiv 2510.08554): semi-AR rollouts, the Gauss–Legendre sequence ELBO (one mask per node, exactly
⌊t·L⌋ masked positions), the clipped sequence ratio exp((ELBO − ELBO_old)/L), and r − mean advantages.

Defaults are the paper's: 3 nodes, ε = 0.5, β = 0, μ = 12, lr 3e-7, T = 0.9, G = 6; the prompt is never
masked. Options: `elbo_nodes`, `elbo_sampler` ("gauss_legendre" | "monte_carlo"), `elbo_mask_count`
("floor" | "bernoulli"; default by sampler), `full_canvas` (the official code's L = every canvas slot; it
sets the estimator's scored tokens and the objective's normaliser together) and `mask_tail` (hide the slots
after end-of-turn in every view; by default they stay visible and unscored, as in NeMo-RL's port). β > 0 adds
a sequence-level KL (see rl_dlm/objectives/sequence.py). The defaults are also the official scripts'
(KevinRojas1499/GDPO@1918683 `gdpo/slurm_scripts/`: gauss-3, μ = 12, lr 3e-7, β = 0, ε = 0.5, G = 6); the
remaining differences from its code are listed in `rl_dlm/likelihood/elbo.py` and
`rl_dlm/objectives/sequence.py`.

    from rl_dlm import GDPOTrainer, GDPOConfig
    trainer = GDPOTrainer(model=path, reward_funcs=[f], args=GDPOConfig(), train_dataset=rows)
    trainer.train()
    # rl-dlm train algo=gdpo likelihood.nodes=3 likelihood.quadrature=gauss_legendre likelihood.full_canvas=false
"""
from __future__ import annotations

from dataclasses import dataclass

from rl_dlm.advantages import get_advantage
from rl_dlm.components import Components
from rl_dlm.likelihood.elbo import SequenceELBOEstimator
from rl_dlm.objectives import ClippedSequenceObjective
from rl_dlm.trainers.base import PresetConfig, RLTrainer


@dataclass
class GDPOConfig(PresetConfig):
    num_iterations: int = 12
    beta: float = 0.0
    epsilon: float = 0.5
    learning_rate: float = 3e-7
    temperature: float = 0.9
    elbo_nodes: int = 3
    elbo_sampler: str = "gauss_legendre"
    elbo_mask_count: str | None = None  # None: "floor" (Gauss–Legendre) or "bernoulli" (Monte Carlo)
    full_canvas: bool = False
    mask_tail: bool = False  # True: mask the slots after end-of-turn in every view (rl_dlm/likelihood/elbo.py)

    def __post_init__(self):
        super().__post_init__()
        try:
            self.estimator()  # validates elbo_nodes, elbo_sampler and elbo_mask_count
        except ValueError as exc:  # the estimator names its own knobs; say which fields they are here
            raise ValueError(f"{exc} (GDPOConfig fields: elbo_nodes = nodes, elbo_sampler = quadrature, "
                             "elbo_mask_count = mask_count)") from exc

    def estimator(self, mask_id: int = -1) -> SequenceELBOEstimator:
        return SequenceELBOEstimator(nodes=self.elbo_nodes, quadrature=self.elbo_sampler,
                                     mask_count=self.elbo_mask_count, full_canvas=self.full_canvas,
                                     mask_tail=self.mask_tail, mask_id=mask_id)


class GDPOTrainer(RLTrainer):
    config_class = GDPOConfig

    def build_components(self, sampler) -> Components:
        a = self.args
        return Components(
            sampler=sampler or self.default_sampler(),
            estimator=a.estimator(mask_id=self.policy.mask_id),
            objective=ClippedSequenceObjective(epsilon=a.epsilon, epsilon_high=a.epsilon_high, beta=a.beta,
                                               full_canvas=a.full_canvas),
            advantage=get_advantage(a.advantage_name),
        )
