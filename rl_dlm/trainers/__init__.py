"""The Python presets of the six original algorithms, by their `algo=` name. `rl-dlm train` builds every
algorithm, these and the ones that exist only as configuration (conf/algo/*.yaml), from its component
groups instead (rl_dlm/component_groups.py); a preset builds the components its conf/algo YAML composes."""
from rl_dlm.trainers.cj_grpo import CJGRPOConfig, CJGRPOTrainer
from rl_dlm.trainers.coupled_grpo import CoupledGRPOConfig, CoupledGRPOTrainer
from rl_dlm.trainers.diffu_grpo import DiffuGRPOConfig, DiffuGRPOTrainer
from rl_dlm.trainers.gdpo import GDPOConfig, GDPOTrainer
from rl_dlm.trainers.igpo import IGPOConfig, IGPOTrainer
from rl_dlm.trainers.mdpo import MDPOConfig, MDPOTrainer

TRAINERS = {
    "diffu_grpo": (DiffuGRPOTrainer, DiffuGRPOConfig),
    "cj_grpo": (CJGRPOTrainer, CJGRPOConfig),
    "mdpo": (MDPOTrainer, MDPOConfig),
    "igpo": (IGPOTrainer, IGPOConfig),
    "coupled_grpo": (CoupledGRPOTrainer, CoupledGRPOConfig),
    "gdpo": (GDPOTrainer, GDPOConfig),
}
