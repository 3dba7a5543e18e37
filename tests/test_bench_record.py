"""bench/record.py's source digest: computed from the files on disk, equal to the digest of the commit they were
(from `git ls-tree`, nothing checked out), different once a source changes, and found back by `find_commit`."""
from __future__ import annotations

import subprocess

from bench.record import commit_digest, find_commit, source_digest


def git(root, *args) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def test_a_records_sources_name_the_commit_they_were(tmp_path):
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@example.com")
    git(tmp_path, "config", "user.name", "t")
    (tmp_path / "rl_dlm" / "models").mkdir(parents=True)
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "rl_dlm" / "models" / "a.py").write_text("A = 1\n")
    (tmp_path / "bench" / "b.py").write_text("B = 2\n")
    (tmp_path / "bench" / "notes.md").write_text("not a source\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "first")
    first = git(tmp_path, "rev-parse", "HEAD")
    assert source_digest(tmp_path) == commit_digest("HEAD", tmp_path)

    (tmp_path / "bench" / "results" / "r.py").write_text("written by a run\n")  # results do not count
    (tmp_path / "bench" / "notes.md").write_text("changed, but not a source\n")
    assert source_digest(tmp_path) == commit_digest(first, tmp_path)

    (tmp_path / "rl_dlm" / "models" / "a.py").write_text("A = 3\n")
    changed = source_digest(tmp_path)
    assert changed != commit_digest(first, tmp_path) and find_commit(changed, tmp_path) is None
    git(tmp_path, "commit", "-qam", "second")
    second = git(tmp_path, "rev-parse", "HEAD")
    assert find_commit(changed, tmp_path) == second
    (tmp_path / "rl_dlm" / "models" / "a.py").write_text("A = 1\n")  # the first commit's code again, on disk
    assert find_commit(source_digest(tmp_path), tmp_path) == first
