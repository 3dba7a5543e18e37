"""bench/device_plan.sh (the pending GPU measurements, in parts that fit the device's 10 minutes) names only options
and modes that its scripts accept, so a part does not fail on a typo after the machine has started."""
from __future__ import annotations

import dataclasses
import functools
import os
import re
import shlex
import subprocess
import sys

import pytest

from bench.rollout import mode_parts
from rl_dlm.trainers.base import RLConfig
from tests.conftest import ROOT


def plan(part: str) -> list[list[str]]:
    out = subprocess.run(["bash", str(ROOT / "bench" / "device_plan.sh"), part], cwd=ROOT, check=True,
                         capture_output=True, text=True, env={**os.environ, "DRY_RUN": "1"}, timeout=30).stdout
    return [shlex.split(line) for line in out.splitlines()]


@functools.lru_cache
def usage(script: str) -> str:
    return subprocess.run([sys.executable, script, "--help"], cwd=ROOT, check=True, capture_output=True, text=True,
                          timeout=120).stdout


@pytest.mark.parametrize("part", ["1", "2", "3", "4", "5", "6", "7"])
def test_every_planned_command_uses_options_its_script_accepts(part):
    commands = plan(part)
    assert commands
    for argv in commands:
        assert argv[0] == "python3" and argv[1].startswith("bench/"), argv
        for flag in (a for a in argv[2:] if a.startswith("--")):
            assert re.search(rf"{re.escape(flag)}\b", usage(argv[1])), f"{argv[1]} has no {flag}"
        for i, arg in enumerate(argv):
            if arg == "--modes":
                for mode in argv[i + 1].split(","):
                    mode_parts(mode)  # raises on an unknown suffix
            if arg == "--set":
                key = argv[i + 1].split("=")[0]
                assert key in {f.name for f in dataclasses.fields(RLConfig)}, key


def test_an_unknown_part_is_refused():
    run = subprocess.run(["bash", str(ROOT / "bench" / "device_plan.sh"), "8"], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "DRY_RUN": "1"}, timeout=30)
    assert run.returncode == 2 and "expected 1 to 7" in run.stderr
