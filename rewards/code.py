"""Code rewards: unit tests run in the ``rewards.sandbox`` (DESIGN.md §6), plus format checks.

Covered
-------
* ``extract_code(text)``: the last fenced ```` ```python ```` block (also ```` ```py ```` / bare
  ```` ``` ````); an unterminated final fence counts up to the end of the text.
* ``unit_test_reward``: pass fraction per row. ``tests`` per row is either
  - a list of ``assert`` strings (MBPP style): each assert is one test, run separately, so the
    score is passed / total; non-assert entries (``import math``) are setup run in order; or
  - one test program (HumanEval style) defining ``check(candidate)``, called as
    ``check(<entry_point>)``: 1.0 or 0.0. Without ``entry_point`` the program itself is the test.
  ``entry_point`` (a column, or None) also lets the function under test have a builtin's name.
  No code block: 0.0. No tests for a row: None (not applicable).
* ``code_format_reward``: 1.0 for exactly one fenced python block that ``ast.parse``\\ s, 0.5 when a
  block exists but does not parse (or there are several), 0.0 with no block.
* ``diffucoder_code_reward``: ``2.0 x pass fraction`` (counted only when the format score is 1.0)
  ``+ 0.5 x format`` (max 2.5), the DiffuCoder coupled-GRPO code reward.

Rows are scored in parallel by a bounded thread pool of sandbox launches (``max_workers``,
default ``os.cpu_count()``). The code block must be self-contained: it is run as is, without the
prompt. ``exit()`` and every other way of skipping the asserts scores 0 (the d1 reference counted
it as passing every test). So does a completion that passes while abusing the sandbox: writing more
than ``max_output_bytes`` to stdout + stderr (a knob of ``conf/reward/unit_test.yaml`` and
``diffucoder_code.yaml``; null: ``rewards.sandbox.MAX_OUTPUT_BYTES``, 1 MiB), or leaving a thread or
process running after its tests; writes outside its working directory fail (read-only). See
``rewards.sandbox`` for the threat model and what is not covered.

Run the tests: ``.venv/bin/python -m pytest tests/rewards -q`` (HumanEval: ``-k humaneval``).
"""

from __future__ import annotations

import ast
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rewards._extract import column, completion_text
from rewards.sandbox import run_tests

__all__ = ["extract_code", "unit_test_reward", "code_format_reward", "diffucoder_code_reward"]

DEFAULT_TIMEOUT = 5.0  # seconds per test (per assert, or per check() program)
_FENCE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+-]*)[^\n]*$", re.MULTILINE)
_PY_LANGS = {"python", "py", "python3", ""}


def _blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) for each fenced block, in order; an open last fence runs to the end."""
    fences = list(_FENCE.finditer(text))
    out, i = [], 0
    while i < len(fences):
        lang, start = fences[i].group(1).lower(), fences[i].end() + 1
        if i + 1 < len(fences):
            out.append((lang, text[start:fences[i + 1].start()]))
            i += 2
        else:
            out.append((lang, text[start:]))
            i += 1
    return out


def _python_blocks(text: str) -> list[str]:
    return [code for lang, code in _blocks(text) if lang in _PY_LANGS]


def extract_code(text: Any) -> str | None:
    """The last fenced python (or bare) code block of ``text``, or None.

    >>> extract_code("Plan.\\n```python\\ndef f():\\n    return 1\\n```\\nDone.")
    'def f():\\n    return 1\\n'
    >>> extract_code("no code") is None
    True
    """
    if not isinstance(text, str):
        text = completion_text(text)
    blocks = _python_blocks(text)
    return blocks[-1] if blocks else None


def _format_score(text: str) -> float:
    blocks = _python_blocks(text)
    if not blocks:
        return 0.0
    if len(blocks) > 1:
        return 0.5
    try:
        ast.parse(blocks[0])
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return 0.5
    return 1.0


def _score_row(code: str | None, tests: Any, entry_point: Any, timeout: float, memory_mb: int,
               max_output_bytes: int | None) -> float | None:
    if not isinstance(tests, (str, dict)) and hasattr(tests, "__iter__"):  # list, tuple, numpy/arrow arrays
        tests = [t for t in tests if isinstance(t, str)]
    elif not isinstance(tests, str):
        tests = None
    if not tests:
        return None
    if not code or not code.strip():
        return 0.0
    entry = entry_point if isinstance(entry_point, str) and entry_point.isidentifier() else None
    # SandboxUnavailable / OSError propagate: the training loop records a raising reward per row
    # (DESIGN.md §6) instead of this function turning "could not run" into a silent 0.
    result = run_tests(code, tests, entry, timeout=timeout, memory_mb=memory_mb, max_output_bytes=max_output_bytes)
    return result.fraction


def unit_test_reward(completions, tests=None, entry_point=None, prompts=None, completion_ids=None, *,
                     timeout: float = DEFAULT_TIMEOUT, memory_mb: int = 1024, max_workers: int | None = None,
                     max_output_bytes: int | None = None, **kwargs) -> list[float | None]:
    """Pass fraction of each completion's last python block against its row's ``tests``.

    A completion that writes more than ``max_output_bytes`` to stdout + stderr (None: the sandbox's
    ``MAX_OUTPUT_BYTES``, 1 MiB), or leaves a thread or process running after its tests, scores 0.

    >>> unit_test_reward(["```python\\ndef add(a, b):\\n    return a + b\\n```", "```python\\nexit()\\n```", "no code"],
    ...                  tests=[["assert add(1, 2) == 3", "assert add(2, 2) == 5"]] * 3)
    [0.5, 0.0, 0.0]
    """
    completions = list(completions or [])
    codes = [extract_code(completion_text(c)) for c in completions]
    jobs = [(codes[i], column(tests, i), column(entry_point, i)) for i in range(len(completions))]
    workers = max(1, min(max_workers or os.cpu_count() or 1, len(jobs) or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: _score_row(*job, timeout, memory_mb, max_output_bytes), jobs))


def code_format_reward(prompts, completions, completion_ids=None, **kwargs) -> list[float]:
    """1.0: one fenced python block that parses; 0.5: a block that does not parse (or several); 0.0: none.

    >>> code_format_reward(None, ["```python\\nx = 1\\n```", "```python\\nx = (\\n```", "x = 1"])
    [1.0, 0.5, 0.0]
    """
    return [_format_score(completion_text(c)) for c in completions or []]


def diffucoder_code_reward(prompts, completions, completion_ids=None, *, tests=None, entry_point=None,
                           timeout: float = DEFAULT_TIMEOUT, max_workers: int | None = None,
                           max_output_bytes: int | None = None, **kwargs) -> list[float | None]:
    """``2.0 x pass fraction`` (only when the format is right) ``+ 0.5 x format``.

    >>> diffucoder_code_reward(None, ["```python\\ndef sq(x):\\n    return x * x\\n```", "```python\\ndef sq(x) return\\n```"],
    ...                        tests=[["assert sq(3) == 9"]] * 2)
    [2.5, 0.25]
    """
    completions = list(completions or [])
    formats = code_format_reward(prompts, completions)
    gated = [c if f == 1.0 else "" for c, f in zip(completions, formats)]
    passes = unit_test_reward(gated, tests=tests, entry_point=entry_point, timeout=timeout, max_workers=max_workers,
                              max_output_bytes=max_output_bytes)
    return [None if p is None else 2.0 * p + 0.5 * f for p, f in zip(passes, formats)]
