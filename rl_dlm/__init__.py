"""rl_dlm: reinforcement-learning post-training for masked diffusion language models."""
from rl_dlm.hydra_app import algo_trainer
from rl_dlm.trainers.base import RLConfig, RLTrainer
from rl_dlm.trainers.cj_grpo import CJGRPOConfig, CJGRPOTrainer
from rl_dlm.trainers.coupled_grpo import CoupledGRPOConfig, CoupledGRPOTrainer
from rl_dlm.trainers.diffu_grpo import DiffuGRPOConfig, DiffuGRPOTrainer
from rl_dlm.trainers.gdpo import GDPOConfig, GDPOTrainer
from rl_dlm.trainers.igpo import IGPOConfig, IGPOTrainer
from rl_dlm.trainers.mdpo import MDPOConfig, MDPOTrainer

__all__ = ["algo_trainer", "CJGRPOConfig", "CJGRPOTrainer", "CoupledGRPOConfig", "CoupledGRPOTrainer", "DiffuGRPOConfig",
           "DiffuGRPOTrainer", "GDPOConfig", "GDPOTrainer", "IGPOConfig", "IGPOTrainer", "MDPOConfig", "MDPOTrainer",
           "RLConfig", "RLTrainer"]
__version__ = "0.1.0"
