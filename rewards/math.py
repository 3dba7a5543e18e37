"""Math answer rewards: synthetic arithmetic, GSM8K (d1 reward set) and MATH (d1 / IGPO).

Covered
-------
* Extraction of the final answer from ``\\boxed{}`` (last box, nested braces), the last
  ``<answer>...</answer>`` pair, and GSM8K's ``#### 42`` (see ``rewards._extract``).
* Numeric equality with exact ``Decimal`` arithmetic (``"72.0" == "72" == "$72" == "72."``,
  thousands commas allowed), then symbolic equivalence via ``math-verify`` (``parse`` / ``verify``).
* The paper reward sets (algorithms.md §7):

  =============================  ======  ==============================================
  function                       max     rule
  =============================  ======  ==============================================
  ``answer_match_reward``        1.0     ``<answer>`` content == gold (numeric, else math-verify)
  ``gsm8k_correctness_reward``   2.0     ``<answer>`` content == gold, compared numerically
  ``gsm8k_int_reward``           0.5     ``<answer>`` content is an integer
  ``math_correctness_reward``    2.0     last ``\\boxed{}`` equivalent to gold under math-verify
  ``math_format_reward``         1.0     0.5 x (answer tags + (1 if ``\\boxed`` else 0.5))
  ``boxed_accuracy_reward``      1.0     ``math_correctness_reward`` / 2
  =============================  ======  ==============================================

  The GSM8K format rewards (strict/soft/xml-count) live in ``rewards.format``.

Reference bugs fixed (d1 ``diffu-grpo/reward_func.py``, ``math500_utils.py``)
---------------------------------------------------------------------------
* GSM8K correctness compared *strings*: ``"72.0" != "72"`` scored 0. We compare numbers.
* ``int_reward_func`` used ``str.isdigit`` (``"-3"`` and ``"1,000"`` were not integers). We accept
  a sign and thousands commas.
* ``boxed_in_answer`` tested ``"\\boxed" in r`` without a raw string: ``"\\b"`` is a backspace, so
  the test never matched and every completion got the 0.5 "no box" credit. We test for a real
  backslash-``boxed``.
* MATH correctness used string normalisation (``is_equiv``); we use math-verify, as the IGPO
  code and TRL's ``accuracy_reward`` do.

Thread and process safety
-------------------------
math-verify enforces its time limits with ``signal.alarm``, which raises off the main thread,
and a Python signal cannot interrupt a long C-level big-integer power (``9^{9^{9^9}}``) at all.
So every math-verify call goes to one small helper process per calling process (started lazily,
``python -c``, stdlib pipes, a lock around each request). The helper uses math-verify's own
timeouts in its main thread; the caller adds a hard wall timeout per request and kills and
restarts the helper if it is exceeded (that answer then scores as *not equivalent*). Obvious
power towers and huge exponents/factorials are rejected before reaching sympy. Cheap cases
(numbers, identical strings) never touch the helper. This works from threads, forked or spawned
worker processes, and the main thread alike.

Not covered: units/text answers (``"5 apples"``) are compared as math-verify sees them; no LLM judge.

Run the tests: ``.venv/bin/python -m pytest tests/rewards -q``.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import subprocess
import sys
import threading
from typing import Any

from rewards._extract import column, completion_text, hash_answer, last_boxed, last_tag, numbers_equal, parse_number

__all__ = [
    "extract_answer",
    "last_boxed",
    "is_equivalent",
    "answer_match_reward",
    "gsm8k_correctness_reward",
    "gsm8k_int_reward",
    "math_correctness_reward",
    "math_format_reward",
    "boxed_accuracy_reward",
]

MAX_ANSWER_CHARS = 1000  # longer extracted answers are never sent to sympy
VERIFY_WALL_TIMEOUT = 10.0  # seconds per math-verify request (helper killed beyond)
_INTEGER = re.compile(r"[+-]?\d+")


def extract_answer(text: str) -> str | None:
    """Final answer of a solution: last ``\\boxed{}``, else last ``<answer>`` tag, else ``####``.

    >>> extract_answer(r"<answer>The total is \\boxed{\\frac{3}{4}}</answer>")
    '\\\\frac{3}{4}'
    >>> extract_answer("Natalia sold 48+24 = 72 clips.\\n#### 72")
    '72'
    """
    for found in (last_boxed(text), last_tag(text, "answer"), hash_answer(text)):
        if found is not None and found.strip():
            return found.strip()
    return None


# ----------------------------------------------------------------------------- math-verify helper
_WORKER_SRC = r"""
import json, logging, sys
logging.disable(logging.CRITICAL)
from math_verify import parse, verify
def p(s):
    if "\\boxed" in s or "$" in s:
        return parse(s, parsing_timeout=3)
    return parse("\\boxed{" + s + "}", parsing_timeout=3) or parse(s, parsing_timeout=3)
sys.stdout.write("ready\n"); sys.stdout.flush()
for line in sys.stdin:
    try:
        g, t = json.loads(line)
        ok = bool(verify(p(g), p(t), timeout_seconds=3))
    except BaseException:
        ok = False
    sys.stdout.write("1\n" if ok else "0\n"); sys.stdout.flush()
"""

# exponent towers, huge literal exponents, factorials of big numbers: sympy would grind on these
_EXPLOSIVE = re.compile(r"\^\s*\{[^{}]*\^|\^\s*\{?\s*\d{5,}|\*\*\s*\d{5,}|\d{4,}\s*!|[)}]\s*!")


class _Verifier:
    """One math-verify helper process, shared by all threads of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._pid = os.getpid()
        self._buf = b""

    def _start(self) -> bool:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_SRC], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, start_new_session=True)
        self._buf = b""
        return self._readline(60.0) == b"ready"

    def _readline(self, timeout: float) -> bytes | None:
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buf:
            ready, _, _ = select.select([fd], [], [], timeout)
            chunk = os.read(fd, 4096) if ready else b""
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def close(self) -> None:
        if self._proc is not None and self._pid == os.getpid():
            try:
                os.killpg(self._proc.pid, 9)
            except OSError:
                pass
            self._proc.wait()
        self._proc = None

    def equal(self, gold: str, pred: str) -> bool:
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's pipes are not ours
                self._proc, self._pid = None, os.getpid()
            try:
                if self._proc is None or self._proc.poll() is not None:
                    if not self._start():
                        self.close()
                        return False
                self._proc.stdin.write((json.dumps([gold, pred]) + "\n").encode())
                self._proc.stdin.flush()
                line = self._readline(VERIFY_WALL_TIMEOUT)
            except (OSError, ValueError):
                line = None
            if line is None:
                self.close()
            return line == b"1"


_VERIFIER = _Verifier()
atexit.register(_VERIFIER.close)


def _norm(s: str) -> str:
    return re.sub(r"\s+", "", s).strip("$").rstrip(".")


def is_equivalent(gold: Any, pred: Any) -> bool:
    """True iff ``pred`` equals ``gold``: numerically, as identical strings, or under math-verify.

    Both may be plain (``"0.5"``, ``"\\frac{1}{2}"``) or contain ``\\boxed{}``.

    >>> is_equivalent("72", "72.0"), is_equivalent(r"\\frac{1}{2}", "0.5"), is_equivalent("3", "4")
    (True, True, False)
    """
    if gold is None or pred is None:
        return False
    gold, pred = str(gold).strip(), str(pred).strip()
    if not gold or not pred or len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return False
    if numbers_equal(gold, pred) or _norm(gold) == _norm(pred):
        return True
    if parse_number(gold) is not None and parse_number(pred) is not None:
        return False  # two plain numbers that differ: no need for sympy
    if _EXPLOSIVE.search(pred):
        return False
    return _VERIFIER.equal(gold, pred)


def _gold(answer: Any) -> str | None:
    """Gold answer as text: a boxed or ``####`` gold is reduced to its final answer."""
    if answer is None or isinstance(answer, bool):
        return None
    text = str(answer)
    return extract_answer(text) if ("\\boxed" in text or "####" in text) else text.strip()


# ----------------------------------------------------------------------------- rewards
def answer_match_reward(prompts, completions, completion_ids=None, *, answer=None, **kwargs) -> list[float | None]:
    """1.0 if the last ``<answer>`` content equals ``answer`` (numerically, else math-verify).

    Rows whose gold ``answer`` is None are not applicable (None).

    >>> answer_match_reward(None, ["<answer> 1,234. </answer>", "<answer>12</answer>", "12"], answer=["1234", "13", "12"])
    [1.0, 0.0, 0.0]
    """
    out: list[float | None] = []
    for i, c in enumerate(completions or []):
        gold = _gold(column(answer, i))
        if gold is None:
            out.append(None)
            continue
        content = last_tag(completion_text(c), "answer")
        out.append(1.0 if content is not None and is_equivalent(gold, content) else 0.0)
    return out


def gsm8k_correctness_reward(prompts, completions, completion_ids=None, *, answer=None, **kwargs) -> list[float | None]:
    """2.0 if the ``<answer>`` content equals the gold number (numeric compare; ref compared strings).

    Non-numeric golds fall back to whitespace-insensitive string equality.

    >>> gsm8k_correctness_reward(None, ["<answer>72.0</answer>", "<answer>$72</answer>", "<answer>71</answer>"], answer="72")
    [2.0, 2.0, 0.0]
    """
    out: list[float | None] = []
    for i, c in enumerate(completions or []):
        gold = _gold(column(answer, i))
        if gold is None:
            out.append(None)
            continue
        content = last_tag(completion_text(c), "answer")
        if content is None:
            out.append(0.0)
        elif parse_number(gold) is not None:
            out.append(2.0 if numbers_equal(gold, content) else 0.0)
        else:
            out.append(2.0 if _norm(gold) == _norm(content) and _norm(gold) else 0.0)
    return out


def gsm8k_int_reward(prompts, completions, completion_ids=None, **kwargs) -> list[float]:
    """0.5 if the ``<answer>`` content is an integer (sign and thousands commas allowed).

    >>> gsm8k_int_reward(None, ["<answer>-1,000</answer>", "<answer>2.5</answer>", "no tags"])
    [0.5, 0.0, 0.0]
    """
    out = []
    for c in completions or []:
        content = last_tag(completion_text(c), "answer")
        n = parse_number(content) if content is not None else None
        text = content.strip().replace(",", "").replace("$", "").rstrip(".").strip() if content else ""
        out.append(0.5 if n is not None and _INTEGER.fullmatch(text) else 0.0)
    return out


def boxed_accuracy_reward(prompts, completions, completion_ids=None, *, answer=None, **kwargs) -> list[float | None]:
    """1.0 if the last ``\\boxed{}`` of the completion is equivalent to ``answer`` (boxed or plain).

    >>> boxed_accuracy_reward(None, [r"so \\boxed{\\dfrac{1}{2}}", r"\\boxed{2}", "1/2"], answer=r"\\boxed{0.5}")
    [1.0, 0.0, 0.0]
    """
    out: list[float | None] = []
    for i, c in enumerate(completions or []):
        gold = _gold(column(answer, i))
        if gold is None:
            out.append(None)
            continue
        pred = last_boxed(completion_text(c))
        out.append(1.0 if pred is not None and is_equivalent(gold, pred) else 0.0)
    return out


def math_correctness_reward(prompts, completions, completion_ids=None, *, answer=None, **kwargs) -> list[float | None]:
    """2.0 for a last ``\\boxed{}`` answer equivalent (math-verify) to the gold ``answer``.

    >>> math_correctness_reward(None, [r"<answer>\\boxed{x^2+1}</answer>"], answer=[r"\\boxed{1+x^{2}}"])
    [2.0]
    """
    return [None if r is None else 2.0 * r for r in boxed_accuracy_reward(prompts, completions, answer=answer)]


def math_format_reward(prompts, completions, completion_ids=None, **kwargs) -> list[float]:
    """0.5 x (1 if ``<answer>...</answer>`` present + (1 if ``\\boxed`` present else 0.5)).

    ``\\boxed`` is looked for inside the answer tags when they exist, else in the whole text
    (as the reference does). Reference bug fixed: it tested ``"\\boxed"`` without a raw string.

    >>> math_format_reward(None, [r"<answer>\\boxed{3}</answer>", "<answer>3</answer>", r"\\boxed{3}", ""])
    [1.0, 0.75, 0.5, 0.25]
    """
    out = []
    for c in completions or []:
        text = completion_text(c)
        content = last_tag(text, "answer")
        scope = text if content is None else content
        out.append(0.5 * ((content is not None) + (1.0 if "\\boxed" in scope else 0.5)))
    return out
