"""`make test` ends with pytest's summary line (`N passed in ...`): the Makefile's pytest options, together with
pyproject.toml's `addopts`, must not add up to `-qq`, which hides it from a newcomer and from CI's log.

Run: .venv/bin/python -m pytest tests/test_make.py -q
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys

from tests.conftest import ROOT


def make_test_pytest_args() -> list[str]:
    """The options after `-m pytest` in the Makefile's `test` recipe."""
    recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    line = next(line for line in recipe.splitlines() if "-m pytest" in line)
    return shlex.split(line.split("-m pytest", 1)[1])


def test_make_test_prints_the_summary_line(tmp_path):
    (tmp_path / "test_one.py").write_text("def test_one():\n    assert True\n")
    done = subprocess.run([sys.executable, "-m", "pytest", *make_test_pytest_args(), "-c", str(ROOT / "pyproject.toml"),
                           "--rootdir", str(tmp_path), "-p", "no:cacheprovider", str(tmp_path / "test_one.py")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^1 passed in ", done.stdout.strip().splitlines()[-1]), done.stdout
