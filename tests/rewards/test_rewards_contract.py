"""Package-wide contracts of ``rewards``: independence from the library, TRL signature, doctests,
never raising on garbage, conversational completions, and the ``conf/reward`` files."""

import ast
import doctest
import importlib
import inspect
import pathlib
import subprocess
import sys
import time

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODULES = ["rewards"] + sorted(f"rewards.{p.stem}" for p in (ROOT / "rewards").glob("*.py") if p.stem != "__init__")
CONFS = sorted((ROOT / "conf" / "reward").glob("*.yaml"))
EXPECTED_CONFS = {
    "countdown", "sudoku", "sudoku_solved", "answer_match", "xml_format", "gsm8k_correctness", "gsm8k_int",
    "strict_format", "soft_format", "xml_count", "math_correctness", "math_format", "unit_test",
    "diffucoder_code", "code_format", "tag_format",
}
# dataset columns each reward needs, one value per row (valid values; garbage is tested separately)
COLUMNS = {"answer": "72", "numbers": [3, 5, 7], "target": 14, "puzzle": "1034341221434320",
           "solution": "1234341221434321", "tests": ["assert f() == 1"], "entry_point": None}
TRL_EXTRAS = {"trainer_state": object(), "log_extra": lambda *a, **k: None, "log_metric": lambda *a, **k: None}


def _reward_functions():
    out = {}
    for path in CONFS:
        target = yaml.safe_load(path.read_text())["_target_"]
        module, name = target.rsplit(".", 1)
        out[path.stem] = getattr(importlib.import_module(module), name)
    return out


def test_rewards_never_import_the_library():
    code = ("import importlib, sys\n"
            f"for m in {MODULES!r}:\n    importlib.import_module(m)\n"
            "print(sorted(k for k in sys.modules if k.split('.')[0] == 'rl_dlm'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    for path in (ROOT / "rewards").glob("*.py"):
        assert "rl_dlm" not in path.read_text(), f"{path.name} mentions rl_dlm"


def _imported_modules(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_library_imports_only_public_reward_modules():
    """The reverse contract: rl_dlm uses ``rewards`` through its public names, never a private ``rewards._*``
    module, so the reward package may reorganise its internals freely."""
    private = {f"rewards.{p.stem}" for p in (ROOT / "rewards").glob("_*.py") if p.stem != "__init__"}
    assert private, "the check needs the private module names"
    offenders = {f"{path.relative_to(ROOT)}: {name}" for path in (ROOT / "rl_dlm").rglob("*.py")
                 for name in _imported_modules(path) if name.split(".")[0] == "rewards"
                 and (name in private or any(part.startswith("_") for part in name.split(".")[1:]))}
    assert not offenders, f"private reward modules imported: {sorted(offenders)}"


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    if name not in ("rewards._sandbox_scripts", "rewards._sandbox_confinement"):
        assert result.attempted > 0, f"{name} has no runnable example"


def test_conf_files_have_target_weight_and_only_real_knobs():
    """Every key besides ``_target_`` and ``weight`` is a keyword-only parameter of the function (passed to it
    by the trainer's ``instantiate``); the code rewards expose the sandbox's output cap."""
    assert {p.stem for p in CONFS} == EXPECTED_CONFS
    functions = _reward_functions()
    for path in CONFS:
        cfg = yaml.safe_load(path.read_text())
        assert {"_target_", "weight"} <= set(cfg), path.name
        assert isinstance(cfg["weight"], float)
        params = inspect.signature(functions[path.stem]).parameters
        for key in set(cfg) - {"_target_", "weight"}:
            assert key in params and params[key].kind is inspect.Parameter.KEYWORD_ONLY, (path.name, key)
    for name in ("unit_test", "diffucoder_code"):
        assert yaml.safe_load((ROOT / "conf" / "reward" / f"{name}.yaml").read_text())["max_output_bytes"] is None
    assert all(callable(f) for f in functions.values())


@pytest.mark.parametrize("name", sorted(EXPECTED_CONFS))
def test_trl_signature_and_conversational_completions(name):
    fn = _reward_functions()[name]
    params = inspect.signature(fn).parameters
    assert {"prompts", "completions", "completion_ids"} <= set(params)
    assert any(p.kind is p.VAR_KEYWORD for p in params.values())
    assert fn.__doc__ and ">>>" in fn.__doc__
    texts = ["<reasoning>\nr\n</reasoning>\n<answer>\n72\n</answer>\n", "<answer>(5 - 3) * 7</answer>", "plain"]
    columns = {k: [v] * len(texts) for k, v in COLUMNS.items()}
    plain = fn(prompts=["q"] * 3, completions=texts, completion_ids=[[1]] * 3, **columns, **TRL_EXTRAS)
    convo = fn(prompts=[[{"role": "user", "content": "q"}]] * 3,
               completions=[[{"role": "assistant", "content": t}] for t in texts], completion_ids=None,
               **columns, **TRL_EXTRAS)
    assert plain == convo
    assert len(plain) == 3 and all(r is None or isinstance(r, float) for r in plain)


GARBAGE_COMPLETIONS = [
    None, "", 12, 3.5, [], {}, [{"role": "assistant", "content": None}], [{"content": [{"type": "text", "text": 5}]}],
    "x" * 2_000_000, "<answer>" * 200_000, "<answer>" + "(" * 50_000 + "</answer>", "\\boxed{" * 100_000,
    "<reasoning>" + "</reasoning><answer></answer>x" * 40_000, "```python\n" * 50_000, "<answer>\x00\udcff</answer>",
]
GARBAGE_COLUMNS = [None, "", 12, [None], "x" * 100_000, {"a": 1}, float("nan"), [[]], True]


@pytest.mark.parametrize("name", sorted(EXPECTED_CONFS))
def test_garbage_never_raises(name):
    """Odd completions and odd column values give floats (usually 0.0) or None, quickly, never an exception."""
    fn = _reward_functions()[name]
    n = len(GARBAGE_COMPLETIONS)
    start = time.monotonic()
    for value in GARBAGE_COLUMNS:
        columns = {k: [value] * n for k in COLUMNS}
        out = fn(prompts=None, completions=GARBAGE_COMPLETIONS, completion_ids=None, **columns)
        assert len(out) == n and all(r is None or isinstance(r, float) for r in out)
    out = fn(prompts=None, completions=GARBAGE_COMPLETIONS, completion_ids=None, **{k: [v] * n for k, v in COLUMNS.items()})
    if not any(w in name for w in ("format", "count", "diffucoder")):  # pure correctness: garbage is never right
        assert all(r in (None, 0.0) for r in out), out
    assert fn(prompts=None, completions=[], completion_ids=None) == []
    assert fn(prompts=None, completions=None, completion_ids=None) == []
    assert time.monotonic() - start < 30


def test_rewards_never_print(capfd):
    """Nothing reaches stdout/stderr (fd level, so helper and sandbox processes are covered too)."""
    texts = ["<reasoning>\nr\n</reasoning>\n<answer>\n\\boxed{x^2}\n</answer>\n", "```python\ndef f():\n    return 1\n```",
             "<answer>9^{9^{9}}</answer>", "```python\nprint('hi'); import sys; sys.stderr.write('x')\n```"]
    for name, fn in _reward_functions().items():
        columns = {k: [v] * len(texts) for k, v in COLUMNS.items()}
        fn(prompts=None, completions=texts, completion_ids=None, **dict(columns, answer=["x*x"] * len(texts)))
    out, err = capfd.readouterr()
    assert out == "" and err == ""
