"""The user documentation stays true to the code. Every trainer has a page; each page's knob table lists every
field its config class declares, with the dataclass default; every relative link in docs/ resolves (anchors
included) in README.md, every page under docs/ and the notebooks' text; the README's algorithm table links each
trainer to its page; and every `rl-dlm train` command of a trainer page composes with Hydra and builds that
page's trainer on a tiny random model, so a recipe, sampler or estimator mismatch in a documented command fails
here. Nothing runs a model.

Run: .venv/bin/python -m pytest tests/test_docs.py -q
"""
from __future__ import annotations

import ast
import dataclasses
import json
import re
import shlex
from pathlib import Path

import pytest

from rl_dlm.hydra_app import RUN_KEYS, ROOT, _split_args, compose_config, reward_functions
from rl_dlm.trainers import TRAINERS
from rl_dlm.trainers.base import RLConfig

ALGOS = sorted(p.stem for p in (ROOT / "conf" / "algo").glob("*.yaml"))  # presets (TRAINERS) and config-only

DOCS = ROOT / "docs"
TRAINER_PAGES = DOCS / "trainers"
PAGES = sorted(DOCS.glob("*.md")) + sorted(TRAINER_PAGES.glob("*.md")) + [DOCS / "results" / "README.md"]
LINKED_PAGES = [ROOT / "README.md"] + sorted(DOCS.rglob("*.md"))  # every page whose links must resolve
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def page_of(name: str) -> Path:
    return TRAINER_PAGES / f"{name}.md"


# -- (a) one page per trainer ----------------------------------------------------------------------------------
def test_every_trainer_has_a_page_and_every_page_a_trainer():
    missing = [name for name in ALGOS if not page_of(name).exists()]
    assert not missing, f"algorithms without a page in docs/trainers/: {missing}"
    orphans = sorted(p.stem for p in TRAINER_PAGES.glob("*.md") if p.stem not in ALGOS)
    assert not orphans, f"pages in docs/trainers/ for no algorithm of conf/algo/: {orphans}"
    assert set(TRAINERS) <= set(ALGOS)  # every Python preset is an algorithm of conf/algo/


# -- (b) knob tables -------------------------------------------------------------------------------------------
def table_cells(line: str) -> list[str]:
    """Cells of a markdown table row; `\\|` inside a cell is not a separator."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def knob_table(text: str) -> dict[str, tuple[str, str]]:
    """{field: (default cell, meaning cell)} of the first table under the page's `## Knobs` heading."""
    match = re.search(r"^## Knobs\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, "the page has no '## Knobs' section"
    rows, header = {}, None
    for line in match.group(1).splitlines():
        if not line.startswith("|"):
            if header is not None:
                break  # the first table has ended
            continue
        cells = table_cells(line)
        if header is None:
            header = [c.lower() for c in cells]
            assert "field" in header and "default" in header, f"knob table header {cells} needs 'field' and 'default'"
            continue
        if all(set(c) <= set("-: ") for c in cells):
            continue  # the |---|---| line
        meaning = cells[header.index("meaning")] if "meaning" in header else ""
        rows[cells[header.index("field")].strip("`")] = (cells[header.index("default")].strip("`"), meaning)
    assert rows, "the '## Knobs' section has no table rows"
    return rows


def declared_fields(config_cls) -> list[str]:
    """Fields the class body declares: new ones, and RLConfig's that it overrides."""
    return list(vars(config_cls).get("__annotations__", {}))


def default_of(config_cls, name: str):
    f = config_cls.__dataclass_fields__[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def same_default(cell: str, value) -> bool:
    """`3e-6` and `3e-06`, `0.0` and `0` are the same number; True is not 1; strings are quoted literals."""
    try:
        parsed = ast.literal_eval(cell)
    except (ValueError, SyntaxError):
        return False
    if isinstance(value, bool) or isinstance(parsed, bool):
        return parsed is value
    if isinstance(value, (int, float)) and isinstance(parsed, (int, float)):
        return float(parsed) == float(value)
    return parsed == value


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_knob_table_matches_the_config_class(name):
    config_cls = TRAINERS[name][1]
    table = knob_table(page_of(name).read_text())
    missing = [f for f in declared_fields(config_cls) if f not in table]
    assert not missing, f"docs/trainers/{name}.md: {config_cls.__name__} fields missing from the knob table: {missing}"
    fields = {f.name for f in dataclasses.fields(config_cls)}
    for field, (cell, meaning) in table.items():
        assert field in fields, f"docs/trainers/{name}.md: knob {field!r} is not a field of {config_cls.__name__}"
        value = default_of(config_cls, field)
        assert same_default(cell, value), (
            f"docs/trainers/{name}.md: knob {field!r} documents default {cell!r}, "
            f"but {config_cls.__name__}.{field} = {value!r}")
        # "(`RLConfig`: 1)" in the meaning names the base default that the trainer overrides.
        for base in re.findall(r"\(`RLConfig`: ([^)]+)\)", meaning):
            assert same_default(base, default_of(RLConfig, field)), (
                f"docs/trainers/{name}.md: knob {field!r} says RLConfig's default is {base}, "
                f"but RLConfig.{field} = {default_of(RLConfig, field)!r}")


def test_knob_defaults_compare_as_values():
    assert same_default("3e-6", 3e-06) and same_default("0.0", 0.0) and same_default("12", 12)
    assert same_default('"token"', "token") and same_default("None", None) and same_default("False", False)
    assert not same_default("1", True) and not same_default("token", "token") and not same_default("3e-7", 3e-6)


# -- (c) links -------------------------------------------------------------------------------------------------
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code spans (their brackets are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#+ (.+)$", prose(path.read_text()), re.M)}


def broken_links(text: str, where: Path, page: Path) -> list[str]:
    """Relative link targets of `text` (resolved from the directory `where`) that name no file or no heading."""
    broken = []
    for target in LINK.findall(prose(text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (where / file).resolve() if file else page
        if not dest.exists():
            broken.append(target)
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    return broken


@pytest.mark.parametrize("path", LINKED_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    broken = broken_links(path.read_text(), path.parent, path)
    assert not broken, f"{path.relative_to(ROOT)}: broken links {broken}"


def test_the_link_check_catches_a_broken_link_and_anchor(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n[ok](page.md#title) [gone](missing.md) [no heading](page.md#nope) `[code](x.md)`\n")
    assert broken_links(page.read_text(), tmp_path, page) == ["missing.md", "page.md#nope"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_links_resolve(path):
    cells = json.loads(path.read_text())["cells"]
    text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    broken = broken_links(text, path.parent, path)
    assert not broken, f"{path.relative_to(ROOT)}: broken links {broken}"


def test_the_custom_reward_notebook_cites_the_reward_contract_page():
    first = "".join(json.loads((ROOT / "notebooks" / "04_custom_reward.ipynb").read_text())["cells"][0]["source"])
    assert "(../docs/reward_plugins.md)" in first, "the reward contract lives in docs/reward_plugins.md"


def test_readme_algorithm_table_links_each_trainer_to_its_page():
    text = (ROOT / "README.md").read_text()
    rows = [table_cells(line) for line in re.search(r"^## Algorithms\n(.*?)(?=^## )", text, re.M | re.S)
            .group(1).splitlines() if line.startswith("| `")]
    assert len(rows) == len(ALGOS)
    for cells in rows:
        links = LINK.findall(cells[-1])
        assert links and all(link.endswith(".md") for link in links), f"README docs cell {cells[-1]!r}: link a page"


# -- (d) launch commands ---------------------------------------------------------------------------------------
def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block, in order."""
    blocks, lang, lines = [], None, []
    for line in text.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, lines = line[3:].strip(), []
            else:
                blocks.append((lang, "\n".join(lines)))
                lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


def commands(text: str, verb: str) -> list[list[str]]:
    """Overrides of every `rl-dlm <verb> ...` or `... -m rl_dlm.cli <verb> ...` line in the page's shell blocks."""
    out = []
    for lang, block in code_blocks(text):
        if lang not in ("bash", "sh", "shell", ""):
            continue
        for line in block.replace("\\\n", " ").splitlines():
            if not (line.startswith("rl-dlm ") or " rl_dlm.cli " in line):
                continue
            words = shlex.split(line, comments=True)
            if words[:2] == ["rl-dlm", verb]:
                out.append(words[2:])
            elif "rl_dlm.cli" in words and words[words.index("rl_dlm.cli") + 1:][:1] == [verb]:
                out.append(words[words.index("rl_dlm.cli") + 2:])
    return [_split_args(c)[0] for c in out]


TRAIN_COMMANDS = [(name, cmd) for name in ALGOS if page_of(name).exists()
                  for cmd in commands(page_of(name).read_text(), "train")]


def test_every_trainer_page_has_launch_commands():
    assert {name for name, _ in TRAIN_COMMANDS} == set(ALGOS)


@pytest.mark.parametrize("name,overrides", TRAIN_COMMANDS, ids=[f"{n}:{' '.join(c) or '(none)'}" for n, c in TRAIN_COMMANDS])
def test_train_commands_compose_and_build_their_trainer(name, overrides, tokenizer, tmp_path):
    """Composes the command exactly as `rl-dlm train` does, then builds the trainer as `build` does, but on a tiny
    random policy and without loading data: RLConfig validates its keys, the sampler instantiates, and the
    components build and fit together (the estimator's needs recorded, the objective's scores made)."""
    from rl_dlm.hydra_app import trainer_args
    from rl_dlm.trainers.base import RLTrainer
    from rl_dlm.tracking import Tracker
    from tests.conftest import make_tiny_policy

    cfg = compose_config(overrides)
    assert cfg.algo_name == name, f"`rl-dlm train {' '.join(overrides)}` runs algo={cfg.algo_name}, not {name}"
    args, sampler, nodes = trainer_args(cfg)
    args.output_dir = str(tmp_path)  # start-up creates the run directory: not in the checkout
    trainer = RLTrainer(make_tiny_policy(tokenizer, lora=True), reward_functions(cfg.task), args=args,
                        sampler=sampler, correct_reward=cfg.task.get("correct_reward"), components=nodes,
                        algo=name, component_names=dict(cfg.choices), tracker=Tracker(tmp_path, ["none"]))
    assert trainer.components.sampler is sampler


OTHER_COMMANDS = [(path, verb, cmd) for path in PAGES for verb in ("train", "eval")
                  for cmd in commands(path.read_text(), verb)
                  if verb == "eval" or path.parent != TRAINER_PAGES]


@pytest.mark.parametrize("path,verb,overrides", [c for c in OTHER_COMMANDS if "..." not in " ".join(c[2])],
                         ids=[f"{p.stem}:{v} {' '.join(c)}" for p, v, c in OTHER_COMMANDS if "..." not in " ".join(c)])
def test_other_documented_commands_compose(path, verb, overrides):
    """`rl-dlm eval` lines of every page, and `rl-dlm train` lines outside the trainer pages, compose."""
    assert compose_config(overrides) is not None
