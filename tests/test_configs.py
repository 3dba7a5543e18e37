"""Every shipped config and recipe composes and builds its validated RLConfig, sampler and components; bad keys fail
at start-up naming the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from rl_dlm.hydra_app import ROOT, build, compose_config, trainer_args

GROUPS = ["model", "algo", "task", "sampler", "likelihood", "objective", "advantage", "refiner"]


def _options(group: str) -> list[str]:
    from rl_dlm.component_groups import entries

    return sorted([p.stem for p in (ROOT / "conf" / group).glob("*.yaml")] + list(entries().get(group, ())))


@pytest.mark.parametrize("recipe", sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml")))
def test_every_recipe_composes(recipe):
    from rl_dlm.component_groups import build as build_components, check_composition

    cfg = compose_config([f"recipe={recipe}"])
    assert cfg.algo_name and cfg.task.name and cfg.model.path
    # RLConfig validates its settings (e.g. save_steps a multiple of num_iterations) at construction, and the
    # components theirs: a recipe that composes but cannot start fails here, without the hub checkpoint it names.
    args, sampler, nodes = trainer_args(cfg)
    assert args.max_completion_length == cfg.max_completion_length and sampler is not None
    check_composition(build_components(nodes, sampler, {"mask_id": -1, "stop_id": None,
                                                         "is_correct": lambda per_function: None}))


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


RECIPE_BLOCKS = [(p.stem, algo) for p in sorted((ROOT / "recipes").glob("*.yaml"))
                 for algo in (__import__("omegaconf").OmegaConf.load(p).get("algo_settings") or {})]


@pytest.mark.parametrize("recipe,algo", RECIPE_BLOCKS, ids=[f"{r}:{a}" for r, a in RECIPE_BLOCKS])
def test_every_algo_settings_block_builds_its_algorithms_config(recipe, algo):
    """A recipe's `algo_settings.<algo>` keys are RLConfig fields or knobs of that algorithm's components, with
    valid values, and reach the composition."""
    from omegaconf import OmegaConf

    cfg = compose_config([f"recipe={recipe}", f"algo={algo}"])
    trainer_args(cfg)
    block = OmegaConf.to_container(OmegaConf.load(ROOT / "recipes" / f"{recipe}.yaml").algo_settings[algo])
    for key, value in block.items():
        got = OmegaConf.to_container(cfg[key]) if isinstance(value, dict) else cfg[key]
        assert got == value if not isinstance(value, dict) else {k: got[k] for k in value} == value, key


def test_algo_settings_apply_only_to_their_algorithm_and_the_command_line_wins():
    quick = compose_config(["algo=coupled_grpo"])
    assert (quick.learning_rate, quick.num_iterations, quick.objective.beta) == (5e-4, 2, 0.01)  # block, paper μ, β
    gdpo = compose_config(["recipe=tiny_gdpo", "algo=diffu_grpo"])  # tiny_gdpo's GDPO rate does not follow
    assert (gdpo.learning_rate, gdpo.num_iterations) == (3e-6, 12)
    assert compose_config(["recipe=tiny_gdpo", "learning_rate=1e-4"]).learning_rate == 1e-4
    assert compose_config(["recipe=tiny_gdpo", "algo_settings.gdpo.learning_rate=1e-4"]).learning_rate == 1e-4


def test_an_algo_settings_block_for_an_unknown_algorithm_is_refused(tmp_path, monkeypatch):
    import rl_dlm.composition as app
    from rl_dlm.validation import ConfigError

    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "typo.yaml").write_text(
        "defaults:\n  - config\n  - _self_\nalgo_settings:\n  gpdo:\n    learning_rate: 1.0e-4\n")
    monkeypatch.setattr(app, "ROOT", tmp_path)
    (tmp_path / "conf").symlink_to(ROOT / "conf")
    with pytest.raises(ConfigError, match=r"algo_settings\.gpdo names no algorithm; algorithms are cj_grpo, "):
        compose_config(["recipe=typo"])
