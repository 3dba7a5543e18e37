"""Packaging: a wheel built from pyproject.toml installs into a fresh venv and trains from any directory.

The wheel must carry `conf/`, `recipes/` and the embedded model (`checkpoints/tiny-llada`) inside the package, and
the installed package must find them there (rl_dlm/resources.py), not in a source checkout. The venv reuses
this environment's packages through a `.pth` line (no network, no reinstall of torch); the main environment's
editable-install hook is not loaded there, so `rl_dlm` can only come from the wheel. It runs `rl-dlm train
max_steps=2` from an empty directory outside the repository.

Run: .venv/bin/python -m pytest tests/test_wheel.py -q   (~40 s on 2 CPU cores)
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

SOURCES = ["pyproject.toml", "README.md", "rl_dlm", "rewards", "conf", "recipes", "checkpoints"]


def test_pyproject_lists_every_package():
    """The package list is explicit (mapped data directories need it), so a new subpackage must be added."""
    from setuptools import find_packages

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    missing = set(find_packages(str(ROOT), include=["rl_dlm*", "rewards*"])) - listed
    assert not missing, f"pyproject.toml [tool.setuptools] packages lacks {sorted(missing)}"


def build_wheel(tmp_path: Path) -> Path:
    src = tmp_path / "src"  # a copy, so the build leaves no build/ or egg-info in the checkout
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("rl_dlm-*.whl")
    return wheel


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_trains_outside_the_repo(tmp_path):
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("rl_dlm/recipes/quickstart.yaml", "rl_dlm/conf/config.yaml", "rl_dlm/conf/algo/gdpo.yaml",
                    "rl_dlm/conf/deepspeed/zero2.yaml", "rl_dlm/checkpoints/tiny-llada/model.safetensors",
                    "rl_dlm/checkpoints/tiny-llada/tokenizer.json", "rewards/countdown.py"):
        assert shipped in names, f"the wheel lacks {shipped}"

    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "main_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch, hydra, pip, ...
    env = {k: v for k, v in os.environ.items() if k not in ("RL_DLM_HOME", "PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run([python, "-m", "pip", "install", "--no-deps", "-q", str(wheel)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    work = tmp_path / "elsewhere"
    work.mkdir()
    done = subprocess.run([venv / "bin" / "rl-dlm", "train", "max_steps=2", "eval.before=false", "eval.after=false"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    installed = site / "rl_dlm" / "checkpoints" / "tiny-llada"
    assert f"model={installed}" in done.stdout, done.stdout[-2000:]
    (run_dir,) = (work / "outputs").iterdir()
    assert (run_dir / "final" / "adapter_model.safetensors").is_file()
    assert (run_dir / "metrics.jsonl").is_file()
    config = yaml.safe_load((run_dir / "config.yaml").read_text())  # the composed config, as run
    assert config["output_dir"] == f"outputs/{run_dir.name}" and config["task"]["name"] == "countdown"
