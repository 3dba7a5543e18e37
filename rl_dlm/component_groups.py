"""The component config groups: `likelihood/`, `objective/`, `advantage/` and `refiner/` (with `sampler/`, whose
entries are YAML files in conf/sampler/ because they interpolate the top-level generation keys).

    rl-dlm train algo=diffu_grpo likelihood=coupled            # d1's loop with DiffuCoder's estimator
    rl-dlm train algo=igpo likelihood=elbo objective=sequence
    rl-dlm train algo=gdpo likelihood.nodes=5 objective.epsilon=0.3
    rl-dlm train --cfg job                                     # every component and knob of the composition

A component module declares its entries in a module-level `COMPONENTS` dict, `{"<group>/<option>": target}`
(e.g. `rl_dlm/likelihood/one_step.py`: `{"likelihood/one_step": OneStepEstimator}`); the modules of
`PACKAGES` and `MODULES` are read, so a new component file needs no edit anywhere else. Each entry becomes
a Hydra config node `{_target_: <target>, <knob>: <default>, ...}` whose knobs are the target's own fields
(a dataclass) or keyword parameters (a function), with the defaults written there, once. Three kinds of
field are not knobs:

- declarations (`DECLARED`): what a component records, requires, scores or needs (`records`, `requires`,
  `fixed_plan`, `needs_reference`), fixed by its class;
- construction context (`CONTEXT`): what the trainer hands every component that takes it when it builds them
  (`mask_id` and `stop_id` of the loaded policy, the rollout `sampler`, the rewards' `is_correct`);
- fields a class computes itself (`field(init=False)`).

Nodes are built through the one allow-listed `rl_dlm.config.instantiate` path, after the knobs' types and
ranges are checked by name (`objective.beta must be ≥ 0`, rl_dlm/validation.py); an advantage entry is a
function and is built as a partial. Before any model loads, `check_composition` builds the components with
placeholder ids and checks that they fit together, naming both components of a bad pair: each estimator's and
advantage's `requires` against the sampler's and refiners' `records`, and the estimator's `scores` (the shape
`reduce` returns) against the objective's `takes`.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import pkgutil
from collections.abc import Mapping

from rl_dlm.components import Components
from rl_dlm.config import instantiate, resolve
from rl_dlm.validation import check_values

GROUPS = ("likelihood", "objective", "advantage", "refiner")
PACKAGES = ("rl_dlm.likelihood", "rl_dlm.objectives", "rl_dlm.sampling")
MODULES = ("rl_dlm.advantages", "rl_dlm.step_credit")
DECLARED = frozenset({"requires", "records", "fixed_plan", "needs_reference"})
CONTEXT = frozenset({"mask_id", "stop_id", "sampler", "is_correct"})
TOKEN_SCORES = "token"  # [n, L] token log-probs: what `reduce` returns unless an estimator declares `scores`


@functools.lru_cache(maxsize=1)
def entries() -> dict[str, dict[str, object]]:
    """{group: {option: target}} from every component module's `COMPONENTS`."""
    names = list(MODULES)
    for package in PACKAGES:
        path = importlib.import_module(package).__path__
        names += [f"{package}.{m.name}" for m in pkgutil.iter_modules(path)]
    out: dict[str, dict[str, object]] = {g: {} for g in GROUPS}
    for name in names:
        for key, target in getattr(importlib.import_module(name), "COMPONENTS", {}).items():
            group, _, option = key.partition("/")
            if group not in out or not option:
                raise ValueError(f"{name}.COMPONENTS: {key!r} is not '<group>/<option>' with a group of {GROUPS}")
            if option in out[group] and out[group][option] is not target:
                raise ValueError(f"{name}.COMPONENTS: {key!r} is declared twice")
            out[group][option] = target
    return out


def target_path(target) -> str:
    return f"{target.__module__}.{target.__qualname__}"


def knobs(target) -> dict:
    """The knobs of a component and their defaults: a dataclass's init fields or a function's keyword
    parameters, less declarations and construction context. Nested dataclass defaults become dicts."""
    out = {}
    if dataclasses.is_dataclass(target):
        for f in dataclasses.fields(target):
            if not f.init or f.name in DECLARED or f.name in CONTEXT:
                continue
            if f.default is not dataclasses.MISSING:
                value = f.default
            elif f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
            else:
                continue  # a required field without a default is context the class names otherwise
            out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        return out
    for p in inspect.signature(target).parameters.values():
        if p.default is not inspect.Parameter.empty and p.name not in CONTEXT:
            out[p.name] = p.default
    return out


def node(target) -> dict:
    return {"_target_": target_path(target), **knobs(target)}


def register(store) -> None:
    """Every declared entry as a Hydra config-store node (`rl_dlm.composition.register_components` calls this)."""
    for group, options in entries().items():
        for option, target in options.items():
            store.store(group=group, name=option, node=node(target))


def option_name(group: str, target) -> str:
    """`group=option` for a built component (its class) or a node's target; the class name if undeclared."""
    cls = getattr(target, "func", target)  # a partial: an advantage function with knobs
    if not (isinstance(cls, type) or inspect.isfunction(cls)):
        cls = type(cls)  # a built component
    option = next((o for o, t in entries().get(group, {}).items() if t is cls), None)
    return f"{group}={option}" if option else f"{group} {getattr(cls, '__name__', cls)}"


def construct(group: str, spec: Mapping, context: Mapping):
    """One node → a component: its knobs as given (unknown ones named with the target's own), nested dataclass
    knobs as their type, and the context values the target takes."""
    spec = dict(spec)
    target = resolve(spec.get("_target_"))
    own = knobs(target)
    unknown = sorted(k for k in spec if k != "_target_" and k not in own)
    if unknown:
        raise ValueError(f"{option_name(group, target)} ({target.__name__}) has no knob "
                         f"{', '.join(repr(k) for k in unknown)}; its knobs are {', '.join(own) or 'none'}")
    if dataclasses.is_dataclass(target):
        check_values(target, {k: v for k, v in spec.items() if k != "_target_"}, prefix=f"{group}.")
        types = {f.name: f for f in dataclasses.fields(target)}
        for key, value in spec.items():
            default = own.get(key)
            if isinstance(value, Mapping) and isinstance(default, dict):
                spec[key] = type(types[key].default_factory())(**value)
        accepted = types
    else:
        accepted = inspect.signature(target).parameters
    extra = {k: v for k, v in context.items() if k in accepted and k in CONTEXT}
    return instantiate(spec, call=dataclasses.is_dataclass(target), **extra)


def build(nodes: Mapping[str, Mapping | None], sampler, context: Mapping) -> Components:
    """Component nodes (group → node, `refiner` may be None) + the rollout sampler → `Components`."""
    context = {**context, "sampler": sampler}
    missing = [g for g in ("likelihood", "objective", "advantage") if not nodes.get(g)]
    if missing:
        raise ValueError(f"no component chosen for {', '.join(missing)}: pick one (e.g. likelihood=one_step)")
    refiner = nodes.get("refiner")
    return Components(sampler=sampler,
                      estimator=construct("likelihood", nodes["likelihood"], context),
                      objective=construct("objective", nodes["objective"], context),
                      advantage=construct("advantage", nodes["advantage"], context),
                      refiners=[construct("refiner", refiner, context)] if refiner else [])


def declared(component, name: str, default):
    """A component's declaration (`requires`, `records`, `scores`, `takes`), or the default for one that has
    none. Functions (advantages) declare theirs as attributes."""
    return getattr(getattr(component, "func", component), name, default)


def check_composition(c: Components, sampler_name: str | None = None) -> None:
    """The components fit together: every field an estimator or advantage requires is recorded by the sampler
    or a refiner, and the objective takes the scores the estimator's `reduce` returns. Errors name both."""
    sampler = sampler_name or f"sampler {type(c.sampler).__name__}"
    recorded = set(declared(c.sampler, "records", frozenset()))
    for refiner in c.refiners:
        recorded |= set(declared(refiner, "records", frozenset()))
    for group, component in (("likelihood", c.estimator), ("advantage", c.advantage)):
        missing = sorted(set(declared(component, "requires", frozenset())) - recorded)
        if missing:
            raise ValueError(
                f"{option_name(group, component)} needs rollout field(s) {', '.join(missing)}, which {sampler} "
                f"does not record{' (nor does any refiner)' if c.refiners else ''}; "
                f"{recorders(missing)}")
    made = declared(c.estimator, "scores", TOKEN_SCORES)
    takes = declared(c.objective, "takes", TOKEN_SCORES)
    if made != takes:
        raise ValueError(f"{option_name('objective', c.objective)} takes {takes!r} scores, but "
                         f"{option_name('likelihood', c.estimator)} reduces its views to {made!r} scores; "
                         f"pick a matching pair ({pairs_hint(takes)})")


def recorders(fields: list[str]) -> str:
    """Which refiners record the fields; samplers are YAML entries, so for them the hint names the attribute."""
    names = [o for o, t in entries()["refiner"].items() if set(fields) <= set(declared(t, "records", ()))]
    if names:
        return f"refiner={' or refiner='.join(names)} records them"
    return "pick a sampler that records them (the `records` of the sampler classes in rl_dlm/sampling/)"


def pairs_hint(takes: str) -> str:
    made = [o for o, t in entries()["likelihood"].items() if declared(t, "scores", TOKEN_SCORES) == takes]
    return f"likelihoods with {takes!r} scores: {', '.join(made) or 'none'}"
