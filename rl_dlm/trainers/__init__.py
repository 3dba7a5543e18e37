"""Trainer bundles, by algorithm name (the `algo=` config group uses these names)."""
from rl_dlm.trainers.cj_grpo import CJGRPOConfig, CJGRPOTrainer
from rl_dlm.trainers.coupled_grpo import CoupledGRPOConfig, CoupledGRPOTrainer
from rl_dlm.trainers.diffu_grpo import DiffuGRPOConfig, DiffuGRPOTrainer
from rl_dlm.trainers.espo import ESPOConfig, ESPOTrainer
from rl_dlm.trainers.gdpo import GDPOConfig, GDPOTrainer
from rl_dlm.trainers.gdsd import GDSDConfig, GDSDTrainer
from rl_dlm.trainers.igpo import IGPOConfig, IGPOTrainer
from rl_dlm.trainers.mdpo import MDPOConfig, MDPOTrainer
from rl_dlm.trainers.spg import SPGConfig, SPGTrainer

TRAINERS = {
    "diffu_grpo": (DiffuGRPOTrainer, DiffuGRPOConfig),
    "cj_grpo": (CJGRPOTrainer, CJGRPOConfig),
    "mdpo": (MDPOTrainer, MDPOConfig),
    "igpo": (IGPOTrainer, IGPOConfig),
    "coupled_grpo": (CoupledGRPOTrainer, CoupledGRPOConfig),
    "gdpo": (GDPOTrainer, GDPOConfig),
    "spg": (SPGTrainer, SPGConfig),
    "espo": (ESPOTrainer, ESPOConfig),
    "gdsd": (GDSDTrainer, GDSDConfig),
}
