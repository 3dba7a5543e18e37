"""The machine-readable record every bench script writes to `bench/results/<name>.json`: metrics, units, the exact
command, device name, git revision, source digest and date.

`git_revision` is what the repository's git says. A copy of the working tree on another machine can carry a
`.git` whose HEAD and index are older than its files, and then git names a commit the code is not. So a record
also carries `source_digest`, computed from the files themselves: the digest of every `.py` file under rl_dlm/
and bench/ (bench/results/ aside), each by its git blob id. The same digest is computed for a commit from
`git ls-tree`, so the commit a record's code was is found here:

    python bench/record.py --find-commit <source_digest>   # the newest commit whose sources match, or none
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
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


SOURCE_DIRS = ("rl_dlm", "bench")


def _digest(entries: list[tuple[str, str]]) -> str:
    """sha256 over sorted `path blob-id` lines: the same for a working tree and a commit with the same files."""
    lines = "".join(f"{path} {blob}\n" for path, blob in sorted(entries))
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


def _counted(path: str) -> bool:
    return path.endswith(".py") and not path.startswith("bench/results/") and "/__pycache__/" not in path


def source_digest(root: Path = ROOT) -> str:
    """The digest of the `.py` files under rl_dlm/ and bench/ as they are on disk (git's blob ids, no git run)."""
    entries = []
    for top in SOURCE_DIRS:
        for file in (root / top).rglob("*.py"):
            rel = file.relative_to(root).as_posix()
            if _counted(rel):
                data = file.read_bytes()
                entries.append((rel, hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()))
    return _digest(entries)


def commit_digest(commit: str, root: Path = ROOT) -> str:
    """`source_digest` of a commit's tree, from `git ls-tree` (nothing checked out)."""
    out = subprocess.run(["git", "ls-tree", "-r", commit, "--", *SOURCE_DIRS], cwd=root, capture_output=True,
                         text=True, check=True).stdout
    entries = []
    for line in out.splitlines():
        meta, path = line.split("\t", 1)
        if _counted(path):
            entries.append((path, meta.split()[2]))
    return _digest(entries)


def find_commit(digest: str, root: Path = ROOT, depth: int = 200) -> str | None:
    """The newest of the last `depth` commits whose `commit_digest` is `digest`, else None."""
    commits = subprocess.run(["git", "rev-list", f"--max-count={depth}", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True).stdout.split()
    return next((c for c in commits if commit_digest(c, root) == digest), None)


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
              "source_digest": source_digest(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "torch": torch.__version__, **extra, "units": units, "metrics": metrics}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return record


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="the commit a record's source_digest names")
    ap.add_argument("--find-commit", required=True, metavar="DIGEST")
    found = find_commit(ap.parse_args().find_commit)
    print(found or "no commit among the last 200 has these sources")
    sys.exit(0 if found else 1)
