"""Every shipped config and recipe composes and builds its validated trainer config and sampler; bad keys fail at
start-up naming the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from rl_dlm.hydra_app import ROOT, build, compose_config, trainer_args

GROUPS = ["model", "algo", "task", "sampler"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


@pytest.mark.parametrize("recipe", sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml")))
def test_every_recipe_composes(recipe):
    cfg = compose_config([f"recipe={recipe}"])
    assert cfg.trainer and cfg.task.name and cfg.model.path
    # The config dataclass validates its settings (e.g. save_steps a multiple of num_iterations) at construction:
    # a recipe that composes but cannot start fails here, without the hub checkpoint it names.
    trainer_cls, args, sampler = trainer_args(cfg)
    assert isinstance(args, trainer_cls.config_class) or type(args).__name__.endswith("Config")
    assert args.max_completion_length == cfg.max_completion_length and sampler is not None


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes_with_the_quickstart(group, option):
    cfg = compose_config([f"{group}={option}"])
    assert cfg is not None


def test_every_reward_config_resolves():
    from omegaconf import OmegaConf

    from rl_dlm.config import resolve

    for path in sorted((ROOT / "conf" / "reward").glob("*.yaml")):
        node = OmegaConf.load(path)
        assert callable(resolve(node._target_)), path.name


def test_overrides_and_bad_keys():
    cfg = compose_config(["algo=diffu_grpo", "max_steps=2", "task=arithmetic"])
    assert cfg.max_steps == 2 and cfg.task.name == "arithmetic" and cfg.sampler.gen_length == 48
    with pytest.raises(Exception, match="max_stepz"):
        compose_config(["max_stepz=2"])


def test_incompatible_combination_fails_at_start_up_naming_the_key():
    cfg = compose_config(["num_generations=3", "per_device_train_batch_size=4", "task.train_size=8",
                          "task.eval_size=4"])
    with pytest.raises(ValueError, match="num_generations"):
        build(cfg)


def test_standard_library_targets_are_refused():
    from rl_dlm.config import resolve

    with pytest.raises(ValueError, match="not allowed"):
        resolve("os.system")
