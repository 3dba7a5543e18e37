"""The machine-readable record every bench script writes to `bench/results/<name>.json`: metrics, units, the exact
command, device name, git revision and date."""
from __future__ import annotations

import datetime
import json
import shlex
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def git_revision() -> str:
    """HEAD's hash, with `+dirty` when rl_dlm/ or bench/ differ from it; "unknown" outside a repository."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        rev = done.stdout.strip() if done.returncode == 0 else ""  # outside a repository it echoes "HEAD"
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "rl_dlm", "bench"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "") if rev else "unknown"
    except OSError:
        return "unknown"


def device_name() -> str:
    if not torch.cuda.is_available():
        return "cpu"
    count = torch.cuda.device_count()
    return torch.cuda.get_device_name(0) if count == 1 else f"{count} x {torch.cuda.get_device_name(0)}"


def command() -> str:
    """The command line as a user re-runs it from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(ROOT)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])


def write_record(path: Path, name: str, metrics: dict, units: dict, **extra) -> dict:
    record = {"name": name, "command": command(), "device": device_name(), "git_revision": git_revision(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "torch": torch.__version__, **extra, "units": units, "metrics": metrics}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return record
