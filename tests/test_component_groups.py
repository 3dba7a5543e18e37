"""Algorithms as configuration (rl_dlm/component_groups.py): every component entry builds from its node with its
class's defaults; mixes the papers never ran compose and train through the command line; an impossible mix fails
before the model loads, naming both components; `--cfg job` shows every component and knob; the six Python
presets build exactly the components their conf/algo YAML composes; and SPG, ESPO and GDSD live in one
component file each (plus their YAML and docs page).

Run: .venv/bin/python -m pytest tests/test_component_groups.py -q      (≈ 40 s on 2 CPU cores)
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from rl_dlm.component_groups import build, check_composition, construct, entries, knobs, node
from rl_dlm.hydra_app import ROOT, compose_algo, compose_config, trainer_args, train_main
from rl_dlm.sampling.semi_ar import SemiARSampler
from rl_dlm.validation import ConfigError

SMALL = ["max_steps=2", "eval.before=false", "eval.after=false", "num_generations=2",
         "per_device_train_batch_size=4", "max_completion_length=16", "block_length=16", "diffusion_steps=4",
         "task.train_size=8", "task.eval_size=4", "report_to=[none]"]
CONTEXT = {"mask_id": 7, "stop_id": 3, "is_correct": lambda per_function: None,
           "sampler": SemiARSampler(gen_length=16, block_length=16, steps=4)}
ENTRIES = [(g, o) for g, options in entries().items() for o in options]


@pytest.mark.parametrize("group,option", ENTRIES)
def test_every_entry_builds_from_its_node_with_its_class_defaults(group, option):
    target = entries()[group][option]
    built = construct(group, node(target), CONTEXT)
    if dataclasses.is_dataclass(target):
        for key, default in knobs(target).items():
            if default is None:
                continue  # resolved at construction (e.g. the ELBO's mask_count follows its quadrature)
            value = getattr(built, key)
            assert (dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value) == default, key
        if "mask_id" in {f.name for f in dataclasses.fields(target)}:
            assert built.mask_id == 7  # context, never a knob
    else:
        assert getattr(built, "func", built) is target


def test_an_unknown_knob_names_the_component_and_its_knobs():
    with pytest.raises(ValueError, match=r"likelihood=coupled \(CoupledEstimator\) has no knob 'nodes'.*t_min"):
        construct("likelihood", {**node(entries()["likelihood"]["coupled"]), "nodes": 3}, CONTEXT)


MIXES = [["algo=diffu_grpo", "likelihood=coupled"],
         ["algo=igpo", "likelihood=elbo", "objective=sequence"],
         ["algo=cj_grpo", "sampler=semi_ar"]]


@pytest.mark.parametrize("mix", MIXES, ids=[" ".join(m) for m in MIXES])
def test_mixes_compose_and_run_two_steps_through_the_cli(tmp_path, capsys, mix):
    cfg = compose_config(mix + SMALL)
    chosen = {o.split("=")[0]: o.split("=")[1] for o in mix}
    for group, option in chosen.items():
        if group in entries():
            assert cfg[group]["_target_"].endswith(entries()[group][option].__qualname__)
    if "likelihood=elbo" in mix:  # IGPO's p_mask_prompt belongs to one_step: dropped; its ε and β kept
        assert "p_mask_prompt" not in cfg.likelihood and (cfg.objective.epsilon, cfg.objective.beta) == (0.2, 0.01)
    train_main([*mix, f"output_dir={tmp_path}"] + SMALL)
    out = capsys.readouterr().out
    assert re.search(r"step +2", out) or (tmp_path / "final" / "adapter_config.json").exists()
    assert (tmp_path / "final" / "adapter_config.json").exists()


@pytest.mark.parametrize("mix,names", [
    (["algo=mdpo", "sampler=semi_ar"], ["likelihood=prediction_replay", "sampler=semi_ar", "step_predictions"]),
    (["algo=spg", "objective=token"], ["objective=token", "likelihood=spg", "elbo_eubo"]),
    (["algo=diffu_grpo", "advantage=per_step"], ["advantage=per_step", "sampler=semi_ar", "step_rewards",
                                                 "refiner=step_rewards"]),
])
def test_an_impossible_mix_fails_before_the_model_loads_naming_both(tmp_path, monkeypatch, mix, names):
    import rl_dlm.trainers.base as base

    def no_load(*a, **k):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(base, "load_policy", no_load)
    with pytest.raises(ConfigError) as err:
        train_main([*mix, f"output_dir={tmp_path}"] + SMALL)
    assert all(name in str(err.value) for name in names), str(err.value)


def test_cfg_job_shows_every_component_and_knob(capsys):
    train_main(["--cfg", "job", "algo=gdpo"])
    out = capsys.readouterr().out
    for group, target in [("likelihood", entries()["likelihood"]["elbo"]),
                          ("objective", entries()["objective"]["sequence"]),
                          ("advantage", entries()["advantage"]["mean"])]:
        block = out.split(f"\n{group}:\n", 1)[1]
        assert f"_target_: {target.__module__}.{target.__qualname__}" in block.split("\n")[0]
        for knob in knobs(target):
            assert f"  {knob}:" in block, (group, knob)
    assert "\nsampler:\n  _target_:" in out


PRESETS = ["diffu_grpo", "coupled_grpo", "gdpo", "cj_grpo", "mdpo", "igpo"]


@pytest.mark.parametrize("algo", PRESETS)
def test_each_preset_builds_the_components_its_yaml_composes(algo, tokenizer, tmp_path):
    from rl_dlm.data.tasks import make_split
    from rl_dlm.trainers import TRAINERS
    from tests.conftest import make_tiny_policy

    from omegaconf import OmegaConf

    from rl_dlm.trainers.base import RLConfig

    trainer_cls, config_cls = TRAINERS[algo]
    args, sampler, nodes = trainer_args(compose_algo(algo))
    preset_args, base = config_cls(), RLConfig()
    yaml = OmegaConf.load(ROOT / "conf" / "algo" / f"{algo}.yaml")
    paper = {k for k in yaml if k not in entries() and k != "defaults"}
    changed = {f.name for f in dataclasses.fields(RLConfig) if getattr(preset_args, f.name) != getattr(base, f.name)}
    assert changed <= paper  # every paper number of the preset is in the YAML ...
    for key in paper:
        assert getattr(preset_args, key) == yaml[key], key  # ... with the same value (a task may set lengths)
    rows = [dict(r, reasoning="1 + 2 = 3") for r in make_split("countdown", "train", 8)]
    preset = trainer_cls(make_tiny_policy(tokenizer, lora=True), {"correct": lambda completions, **kw: [0.0] * len(completions)},
                         args=config_cls(output_dir=str(tmp_path), report_to=["none"]), train_dataset=rows,
                         sampler=sampler, correct_reward="correct")
    ours = build(nodes, sampler, preset.component_context(preset.policy))
    theirs = preset.components
    for a, b in [(ours.estimator, theirs.estimator), (ours.objective, theirs.objective)]:
        assert type(a) is type(b) and dataclasses.asdict(a) == dataclasses.asdict(b)
    assert getattr(ours.advantage, "func", ours.advantage) is getattr(theirs.advantage, "func", theirs.advantage)
    assert [type(r) for r in ours.refiners] == [type(r) for r in theirs.refiners]
    check_composition(ours)


def config_only() -> dict[str, str]:
    """The algorithms with no Python preset → the component file of their estimator."""
    from omegaconf import OmegaConf

    from rl_dlm.trainers import TRAINERS

    out = {}
    for path in sorted((ROOT / "conf" / "algo").glob("*.yaml")):
        if path.stem not in TRAINERS:
            option = next(v for d in OmegaConf.load(path).defaults for k, v in d.items() if k.endswith("/likelihood"))
            out[path.stem] = entries()["likelihood"][option].__module__.replace(".", "/") + ".py"
    return out


CONFIG_ONLY = config_only()


def test_spg_espo_and_gdsd_are_configuration_only():
    assert {"spg", "espo", "gdsd"} <= set(CONFIG_ONLY)


@pytest.mark.parametrize("algo", sorted(CONFIG_ONLY))
def test_a_config_only_algorithm_lives_in_its_component_file_yaml_and_docs_page(algo):
    """No library file but its own component file names it (files of algorithms built on it may import it)."""
    assert (ROOT / "docs" / "trainers" / f"{algo}.md").exists()
    own = CONFIG_ONLY[algo]
    mentions = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "rl_dlm").rglob("*.py")
                      if re.search(rf"\b{algo}\b|{algo.upper()}", p.read_text()))
    builds_on_it = {f for f in mentions if f in CONFIG_ONLY.values() and f"likelihood.{algo} import" in
                    (ROOT / f).read_text()}
    assert set(mentions) - builds_on_it == {own}, mentions
    cfg = compose_algo(algo)
    assert cfg.likelihood["_target_"].startswith(own[:-3].replace("/", "."))


def test_a_bad_algo_setting_for_a_group_is_refused(tmp_path, monkeypatch):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "r.yaml").write_text("defaults:\n  - config\n  - _self_\nalgo_settings:\n  diffu_grpo:\n"
                                    "    advantage: leave_one_out\n")
    import rl_dlm.composition as app

    for sub in ("conf", "checkpoints"):
        (tmp_path / sub).symlink_to(ROOT / sub)
    monkeypatch.setattr(app, "ROOT", tmp_path)
    with pytest.raises(ConfigError, match="algo_settings.diffu_grpo.advantage"):
        app.compose_config(["recipe=r"])


def test_refiner_null_drops_an_algorithms_refiner():
    assert compose_config(["algo=igpo"]).refiner["_target_"].endswith("HintRefiner")
    for drop in ("refiner=null", "refiner=none", "~refiner"):
        assert compose_config(["algo=igpo", drop]).get("refiner") is None
    assert compose_config(["algo=diffu_grpo", "refiner=null"]).get("refiner") is None  # none to drop: no error
