"""Composition: `recipes/<recipe>.yaml` + `conf/` + command-line overrides → a run's config (Hydra).

Top-level keys are RLConfig's (rl_dlm/trainers/base.py, registered as `args/rl` with their defaults); an
algorithm (conf/algo/<name>.yaml) is a defaults list of components, one per group, plus the paper's numbers; each
component's knobs sit under its group (`likelihood.nodes`, `objective.beta`; rl_dlm/component_groups.py).
Precedence, lowest first: a component's own defaults, the algorithm's numbers, the recipe's top-level keys, its
`algo_settings.<algo>` block (applied only when that algorithm is composed, `apply_algo_settings`, so `algo=X`
keeps X's own settings for them), the command line. A mix that swaps a component drops the algorithm's numbers
for knobs the new one lacks (`drop_algo_knobs_of_other_components`).

Composition errors are `ConfigError`s that name the key or option and the fix (`composition_error`), never
Hydra's "use +key".
"""
from __future__ import annotations

import dataclasses
import difflib
import re

from omegaconf import DictConfig, OmegaConf

from rl_dlm.component_groups import GROUPS as COMPONENT_GROUPS
from rl_dlm.config import resolve
from rl_dlm.resources import ROOT
from rl_dlm.validation import ConfigError


def register_components():
    """RLConfig's fields as the top-level keys (`args/rl`, merged at the top by conf/config.yaml), and the
    component groups (`likelihood/`, `objective/`, `advantage/`, `refiner/`) as Hydra config-store entries, each
    a `_target_` node with its knobs and their defaults (rl_dlm/component_groups.py): defaults written once."""
    from hydra.core.config_store import ConfigStore

    from rl_dlm.component_groups import register
    from rl_dlm.trainers.base import RLConfig

    store = ConfigStore.instance()
    store.store(group="args", name="rl", node={f.name: getattr(RLConfig(), f.name) for f in dataclasses.fields(RLConfig)})
    register(store)


def compose_config(overrides: list[str]) -> DictConfig:
    recipe = "quickstart"
    rest = []
    for item in overrides:
        if item.startswith("recipe="):
            recipe = item.split("=", 1)[1]
        else:
            rest.append(item)
    if not (ROOT / "recipes" / f"{recipe}.yaml").exists():
        known = sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))
        close = difflib.get_close_matches(recipe, known, n=1)
        hint = f"did you mean recipe={close[0]}? " if close else ""
        raise ConfigError(f"unknown recipe {recipe!r}; {hint}recipes are {', '.join(known)} (in {ROOT / 'recipes'})")
    return _compose(recipe, rest)


def compose_algo(algo: str, overrides: list[str] = ()) -> DictConfig:
    """An algorithm's own composition, without a recipe: conf/config.yaml with `algo=<algo>` and the overrides
    (the Python API's way to an algorithm that exists only as configuration, `algo_trainer`)."""
    return _compose(None, [f"algo={algo}", *overrides])


def _compose(recipe: str | None, rest: list[str]) -> DictConfig:
    """recipes/<recipe>.yaml (None: conf/config.yaml alone) + overrides → the run's config."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    # `refiner=null` (or none) drops an algorithm's refiner, as Hydra's `~refiner` does (Hydra refuses a null choice)
    rest = [f"~{item.split('=')[0]}" if item in ("refiner=null", "refiner=none") else item for item in rest]
    register_components()
    with initialize_config_dir(config_dir=str(ROOT / ("recipes" if recipe else "conf")), version_base="1.3"):
        try:
            cfg = compose(config_name=recipe or "config", overrides=[_searchpath_override(), *rest],
                          return_hydra_config=True)
        except (HydraException, OmegaConfBaseException) as exc:  # reworded to name the key and the fix
            raise composition_error(exc, recipe or "config", rest) from exc
    with _open(cfg):
        choices = dict(cfg.hydra.runtime.choices)
        algo = choices.get("algo")
        del cfg["hydra"]
        apply_algo_settings(cfg, algo, rest, recipe)
        drop_algo_knobs_of_other_components(cfg, algo, rest, recipe)
        cfg.recipe_name = recipe or "none"
        cfg.algo_name = algo  # the default output_dir names the algorithm
        cfg.choices = {g: choices.get(g) for g in ("sampler", *COMPONENT_GROUPS)}  # named in start-up errors
    return cfg


def drop_algo_knobs_of_other_components(cfg: DictConfig, algo: str | None, overrides: list[str],
                                        recipe: str | None) -> None:
    """An algorithm's numbers for a component (`objective: {beta: 0.04}` in conf/algo/diffu_grpo.yaml) apply to
    the component chosen in that group where it has the knob; when a mix swaps the component
    (`likelihood=elbo` under algo=igpo), the algorithm's values for knobs the new one lacks are dropped, and so are
    the recipe's `algo_settings.<algo>` values (also numbers for that algorithm). A knob set for every algorithm
    (a recipe's top-level group block, the command line) is never dropped: an unknown one is an error naming
    the component."""
    from rl_dlm.component_groups import knobs

    if algo is None:
        return
    given = {_override_key(o) for o in overrides}
    recipe_file = OmegaConf.load(ROOT / "recipes" / f"{recipe}.yaml") if recipe else OmegaConf.create({})
    algo_file = OmegaConf.load(ROOT / "conf" / "algo" / f"{algo}.yaml")
    for group in COMPONENT_GROUPS:
        spec = cfg.get(group)
        if not spec:
            continue
        own = knobs(resolve(spec["_target_"]))
        user = set((recipe_file.get(group) or {}).keys())
        tuned = OmegaConf.select(recipe_file, f"algo_settings.{algo}.{group}", default=None) or {}
        for key in {*(algo_file.get(group) or {}), *tuned}:
            if key not in own and key in spec and key not in user and f"{group}.{key}" not in given:
                del spec[key]


def _searchpath_override() -> str:
    return f"hydra.searchpath=[file://{ROOT / 'conf'}]"


def _override_key(item: str) -> str:
    return item.split("=", 1)[0].lstrip("+~")


def apply_algo_settings(cfg: DictConfig, algo: str | None, overrides: list[str], recipe: str = "") -> None:
    """The recipe's `algo_settings.<algo>` block (keys it tunes for that algorithm) over its top-level keys; a key
    also set on the command line keeps the command line's value. Blocks of other algorithms are dropped, so
    `algo=X` keeps X's own settings (its config dataclass) for the keys they hold."""
    blocks = cfg.get("algo_settings")
    if blocks is None:
        return
    known = sorted(p.stem for p in (ROOT / "conf" / "algo").glob("*.yaml"))
    for name in blocks:
        if name not in known:
            raise ConfigError(f"recipe {recipe}: algo_settings.{name} names no algorithm; "
                              f"algorithms are {', '.join(known)}")
    chosen = OmegaConf.to_container(blocks.get(algo) or OmegaConf.create({}), resolve=False)
    for group in ("sampler", *COMPONENT_GROUPS):
        if group in chosen and not isinstance(chosen[group], dict):
            raise ConfigError(f"recipe {recipe}: algo_settings.{algo}.{group}={chosen[group]!r} would replace the "
                              f"{group} node; choose a {group} in the recipe's defaults list or on the command line, "
                              f"and set its knobs here as {group}: {{knob: value}}")
    given = {_override_key(o) for o in overrides}
    for key, value in _leaves(chosen):
        if any(key == g or key.startswith(g + ".") or g.startswith(key + ".") for g in given):
            continue
        OmegaConf.update(cfg, key, value, merge=False)
    del cfg["algo_settings"]


def _leaves(node: dict, prefix: str = ""):
    """(dotted key, value) for every leaf of a nested dict; lists are leaves."""
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def composition_error(exc: Exception, recipe: str, overrides: list[str]) -> Exception:
    """Hydra's composition errors as one-line `ConfigError`s that name the key or option and the fix (never
    Hydra's "use +key", which would add a key that nothing reads)."""
    from hydra.errors import MissingConfigException, OverrideParseException

    text = str(exc).strip()
    unknown = re.match(r"Could not override '([^']+)'", text)
    if unknown:
        return ConfigError(unknown_key_message(unknown.group(1), recipe, overrides))
    if isinstance(exc, MissingConfigException) and exc.options and exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        close = difflib.get_close_matches(option, exc.options, n=1)
        hint = f"; did you mean {group}={close[0]}?" if close else ""
        return ConfigError(f"unknown {group} {option!r}{hint} ({group} options: {', '.join(exc.options)})")
    if isinstance(exc, OverrideParseException):
        bad = re.match(r"Error parsing override '(.*)'", text)
        what = f"override {bad.group(1)!r}" if bad else f"an override ({text.splitlines()[0]})"
        return ConfigError(f"cannot parse {what}: overrides are key=value (e.g. max_steps=2, algo=gdpo); "
                           "rl-dlm train --help lists the groups and keys")
    return ConfigError(text.splitlines()[0] if text else type(exc).__name__)


def unknown_key_message(key: str, recipe: str, overrides: list[str]) -> str:
    """'unknown key K; did you mean C?', C the closest key of the config this command composes (difflib); or
    the algorithm whose key K is."""
    from hydra import compose

    groups = {p.name for p in (ROOT / "conf").iterdir() if p.is_dir()}
    chosen = [o for o in overrides if "=" in o and _override_key(o) in groups and not o.startswith("~")]
    try:
        cfg = compose(config_name=recipe, overrides=[_searchpath_override(), *chosen], return_hydra_config=True)
        keys = list(_dotted_keys(OmegaConf.to_container(cfg, resolve=False), skip=("hydra", "algo_settings")))
        choices = dict(cfg.hydra.runtime.choices)
    except Exception:  # noqa: BLE001 - the suggestion is a courtesy; the key is still named
        keys, choices = [], {}
    moved = component_knob_hint(key, keys, choices)
    if moved:
        return f"unknown key {key!r}: {moved}"
    close = difflib.get_close_matches(key, keys + sorted(groups), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (f"unknown key {key!r}{hint} (rl-dlm train --help lists the main keys; --cfg job prints every key "
            "of this composition)")


# Flat keys of earlier versions that became a component choice or a knob of one.
RENAMED = {
    "p_mask_prompt": "likelihood.p_mask_prompt", "elbo_nodes": "likelihood.nodes",
    "elbo_sampler": "likelihood.quadrature", "elbo_mask_count": "likelihood.mask_count",
    "full_canvas": "likelihood.full_canvas", "mask_tail": "likelihood.mask_tail",
    "mask_ratio_min": "likelihood.t_min", "mask_ratio_max": "likelihood.t_max",
    "top_k_steps": "likelihood.top_k_steps", "hint_column": "refiner.trace_column",
    "hint_max_replacements": "refiner.max_replacements", "hint_entropy_top_frac": "refiner.entropy_top_frac",
    "leave_one_out": "advantage=leave_one_out", "scale_rewards": "advantage=zscore (scale_rewards=group)",
    "importance_sampling_level": "objective=sequence (importance_sampling_level=sequence)",
}


def component_knob_hint(key: str, keys: list[str], choices: dict) -> str | None:
    """Where a key lives: a knob of this composition's component (`objective.beta`), a knob of another option of
    the group (`likelihood.nodes` is elbo's), of some other component (naming it), or a component choice
    (`advantage=leave_one_out`)."""
    from rl_dlm.component_groups import entries, knobs

    group, _, knob = key.partition(".")
    if group in entries() and knob:
        owners = [o for o, t in entries()[group].items() if knob.split(".")[0] in knobs(t)]
        if owners:
            return (f"{key} is a knob of {group}={' / '.join(owners)}, not of the chosen {group}="
                    f"{choices.get(group)}; add {group}={owners[0]} or drop {key}")

    here = [k for k in keys if k.split(".")[0] in entries() and k.split(".", 1)[-1] == key]
    if here:
        return f"component knobs sit on their component: did you mean {here[0]}?"
    if key in RENAMED or key.startswith("hint_"):
        return f"it is now {RENAMED.get(key, f'refiner.hints.{key[5:]}')}"
    owners = [f"{group}={option}" for group, options in entries().items() for option, target in options.items()
              if key in knobs(target)]
    if owners:
        return f"it is a knob of {' / '.join(owners)}: choose one and set <group>.{key}"
    return None


def _dotted_keys(node, prefix: str = "", skip: tuple[str, ...] = ()):
    for key, value in node.items():
        if key in skip:
            continue
        path = f"{prefix}{key}"
        yield path
        if isinstance(value, dict):
            yield from _dotted_keys(value, path + ".")


class _open:
    def __init__(self, cfg):
        self.cfg = cfg

    def __enter__(self):
        OmegaConf.set_struct(self.cfg, False)

    def __exit__(self, *exc):
        OmegaConf.set_struct(self.cfg, True)
