"""Run untrusted candidate code against trusted tests (DESIGN.md §6).

Design: the candidate never runs in the process that decides pass/fail
----------------------------------------------------------------------
Each call starts a fresh *judge* (``python -I -c JUDGE_SRC``) in new pid, network and mount
namespaces (``unshare``). The judge execs a separate *runner* process for the candidate, talks to
it over two pipes, and evaluates the tests **itself**: ``check(candidate)`` or each ``assert``
runs in the judge, and every function the candidate defines appears there as a proxy that sends
the call's arguments to the runner and gets the result back as ``marshal`` data (plain builtin
types only). Consequences:

* ``exit()``, ``sys.exit``, ``raise SystemExit``, ``os._exit``, crashes, signals, ``print`` /
  ``sys.stdout`` / ``builtins`` / ``AssertionError`` overrides, trace-function tricks and objects
  with a rigged ``__eq__`` (not marshallable) all stay inside the runner and read as failures;
  candidate names that shadow builtins (``def abs(x): return 0``) are not shown to the tests.
* A test passes only if the judge ran it to the end. The judge then writes one JSON line with a
  random per-run nonce and the per-test results to its saved stdout; the parent requires that
  exact nonce and one result per test, anything else is all-fail. The nonce never exists in the
  runner's memory (a fresh ``exec``), the judge is non-dumpable and the runner has no
  capabilities, so it cannot read the judge's memory, pipes or fds; its stdout and stderr are a
  pipe that the judge only counts.

Limits and isolation of the runner
----------------------------------
``RLIMIT_CPU``, ``RLIMIT_AS`` (memory), ``RLIMIT_FSIZE``, ``RLIMIT_NOFILE``, ``RLIMIT_NPROC``, no core
files; every capability dropped (bounding set, ambient, ``SECBIT_NOROOT`` locked, no_new_privs);
a seccomp filter that makes ``fork``/``vfork``/``clone`` (except threads) fail, because the kernel
never enforces ``RLIMIT_NPROC`` for uid 0 and a fork bomb as root exhausts the machine's pids in a
second; a scrubbed environment; stdin on ``/dev/null``; no network (own net namespace, loopback
down); a filesystem that is read-only outside the working directory (below). A per-test timeout
restarts the runner (killing everything else in the namespace); a wall timeout kills the whole
process group, and the judge is pid 1 of its pid namespace, so every candidate process dies with it.

Passing is not enough: resource abuse scores 0
----------------------------------------------
A candidate that passes its tests while abusing the sandbox fails every test (``status="abuse"``):
RL would otherwise learn whatever the sandbox merely contains.

* **Output cap.** The runner's stdout and stderr (fds 1 and 2, inherited by anything it starts)
  are one pipe that the judge drains and counts while it waits for the runner, and once more
  after everything has ended. More than ``max_output_bytes`` in total (``MAX_OUTPUT_BYTES``, 1 MiB,
  by default) is abuse, and the runner is killed at once. Bytes in a pipe cannot be taken back;
  reopening ``/dev/stdout`` reaches the same pipe. Writes to ``/dev/null`` and files are not output.
* **Nothing left running.** After the last test the judge closes the runner's request pipe; the
  runner then ends as a program does (``SystemExit``: non-daemon threads joined, ``atexit`` run).
  It, and every process it started, must be gone within one ``timeout``. The judge is their
  reaper: pid 1 of the pid namespace, and ``PR_SET_CHILD_SUBREAPER`` where there is none, so
  ``setsid`` or double-forked children still count. A daemon thread does not keep a program alive
  and is allowed. Only the runner that serves the last test is checked: one killed for a
  per-test timeout is not (its test already failed).
* **Read-only filesystem outside the working directory.** Enforced by the kernel, twice, before the
  candidate's code exists, so it cannot be undone from Python. (1) Mounts: the judge makes every
  mount read-only (``mount_setattr``, recursive), mounts empty read-only tmpfs on ``/var/tmp`` and
  ``/dev/shm``, and a private ``/tmp`` that is read-only except its own tmpfs ``/tmp/work``, the
  runner's working directory, ``HOME`` and ``TMPDIR`` (gone at exit). The runner has no
  capabilities to remount, and Landlock forbids a confined process to change mounts at all, even
  in a user namespace of its own.
  (2) Landlock (``confine_writes``, Linux 5.13+, unprivileged, never lifted once applied): writing,
  truncating, creating, removing, renaming or linking is denied except beneath the working
  directory and on ``/dev/null``; this alone guards the plain mode below. Writes elsewhere raise
  ``OSError``, so a solution that depends on them fails its tests. ``info`` reports ``ro`` and
  ``tmp_ro`` (the mounts) and ``landlock`` (the kernel's ABI, 0 if none); with neither in force a
  ``RuntimeWarning`` says so, once. Reading stays allowed everywhere (see below).

Not covered / weaker
--------------------
* Not a defence against kernel exploits: a reward sandbox, not a jail.
* When the trainer runs as root the runner keeps uid 0 (without capabilities), because the
  interpreter may live under a ``0700`` directory (``/root/.pyenv`` here). It can *read* root-owned
  files, but writes nowhere persistent, has no network, and only pass/fail bits leave the sandbox.
* Candidates cannot start processes (``subprocess``, ``multiprocessing``): ``allow_fork=True`` lifts
  the seccomp filter, after which, as root, only the timeouts and the pid namespace bound a fork bomb.
* Where ``unshare`` is unavailable (``isolation() == "plain"``) nothing runs unless allowed
  (``RL_DLM_SANDBOX_ALLOW_PLAIN=1`` or ``allow_plain=True``), and then with rlimits, seccomp and a
  fresh unprivileged uid (root) only: no network isolation (sockets are blocked in Python only),
  writes confined by Landlock only (none on kernels without it), and a ``setsid`` escapee may
  outlive the run as a non-root trainer.
* POSIX semaphores live in the read-only ``/dev/shm``, so with ``allow_fork=True``
  ``multiprocessing`` locks and queues are unavailable (plain ``subprocess`` works).
* Values crossing the proxy must be marshallable (None, bool, int, float, complex, str, bytes,
  tuple, list, dict, set, frozenset): returning generators or class instances fails the test, and
  so does passing a lambda as a test argument. Tests see the candidate's functions, constants and
  the stdlib modules it imported (re-imported by the judge), not its classes' instances.

Run the adversarial suite: ``.venv/bin/python -m pytest tests/rewards/test_rewards_sandbox.py -q``.
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass, field

# The real interpreter, not a virtualenv's link to it: the judge mounts a private /tmp, and a venv created
# under /tmp (a fresh CI clone) would vanish from under a `.venv/bin/python` path. Candidates only need the
# standard library, which lives with the real interpreter.
PYTHON = os.path.realpath(sys.executable)

from rewards._sandbox_confinement import SECCOMP_SRC
from rewards._sandbox_scripts import JUDGE_SRC, RUNNER_SRC

__all__ = ["SandboxResult", "SandboxUnavailable", "run_tests", "isolation", "MAX_OUTPUT_BYTES"]

ALLOW_PLAIN_ENV = "RL_DLM_SANDBOX_ALLOW_PLAIN"
MAX_OUTPUT_BYTES = 1 << 20  # stdout + stderr a candidate may write in one run; more scores 0
STARTUP_GRACE = 2.0  # seconds, on top of the first test's timeout, for interpreter start-up + loading the candidate
MARKER = "rl-dlm-sandbox"  # appears in the judge/runner command lines (tests scan /proc for it)

class SandboxUnavailable(RuntimeError):
    """Candidate code cannot be run safely here (and running it unsafely was not allowed)."""


@dataclass
class SandboxResult:
    """Outcome of one ``run_tests`` call: ``passed[i]`` for each test, plus why a test failed."""

    passed: list[bool]
    reasons: list[str] = field(default_factory=list)
    status: str = "ok"  # ok | abuse (every test failed: output over the cap, left running) | timeout | harness_error
    info: dict = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return sum(self.passed) / len(self.passed) if self.passed else 0.0


_ISOLATION: list = []
_SECCOMP: list = []
_ISOLATION_LOCK = threading.Lock()


def _unshare_cmd(user_ns: bool) -> list[str] | None:
    exe = shutil.which("unshare") or next((p for p in ("/usr/bin/unshare", "/bin/unshare") if os.path.exists(p)), None)
    if exe is None:
        return None
    cmd = [exe, "--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
    return cmd + ["--map-root-user"] if user_ns else cmd


def isolation() -> str:
    """Which isolation this machine gives: ``"ns"`` (namespaces; root or user namespaces) or ``"plain"``."""
    with _ISOLATION_LOCK:
        if not _ISOLATION:
            mode, prefix = "plain", []
            for user_ns in ([False, True] if os.geteuid() == 0 else [True]):
                cmd = _unshare_cmd(user_ns)
                try:
                    probe = subprocess.run(cmd + [PYTHON, "-I", "-c", "import os; print(os.getpid())"],
                                           capture_output=True, timeout=30, env={"PATH": "/usr/bin:/bin"}) if cmd else None
                except (OSError, subprocess.SubprocessError):
                    probe = None
                if probe is not None and probe.returncode == 0 and probe.stdout.strip() == b"1":
                    mode, prefix = "ns", cmd
                    break
            probe = SECCOMP_SRC + ("\ninstall_no_fork_filter()\nimport os\ntry:\n    pid = os.fork()\n"
                                   "except OSError:\n    print('blocked')\nelse:\n    os._exit(0) if pid == 0 else None\n")
            try:
                out = subprocess.run([PYTHON, "-I", "-c", probe], capture_output=True, timeout=30)
                _SECCOMP.append(out.stdout.strip() == b"blocked")
            except (OSError, subprocess.SubprocessError):
                _SECCOMP.append(False)
            if mode == "plain":
                warnings.warn("rewards.sandbox: unshare is unavailable; candidate code runs without network, "
                              "filesystem or pid isolation (see the module docstring)", RuntimeWarning, stacklevel=2)
            _ISOLATION.extend([mode, prefix])
        return _ISOLATION[0]


def _world_usable(path: str) -> bool:
    """Can an unprivileged uid traverse to (and read/execute) ``path``?"""
    parts = os.path.realpath(path).split(os.sep)
    try:
        for i in range(2, len(parts) + 1):
            mode = os.stat(os.sep.join(parts[:i])).st_mode
            if not mode & 0o001 or (i == len(parts) and stat.S_ISDIR(mode) and not mode & 0o004):
                return False
    except OSError:
        return False
    return True


def _plain_uid(pid: int) -> int | None:
    """In plain mode as root, the fresh uid for this run; None when not root."""
    if os.geteuid() != 0:
        return None
    if not all(_world_usable(p) for p in (PYTHON, sys.base_prefix, sys.prefix)):
        raise SandboxUnavailable("unshare is unavailable and the interpreter is not usable by an unprivileged "
                                 "uid, so candidate code would run as root: refusing")
    return 2_000_000 + pid


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of ``uid`` until none is left (plain mode cleanup)."""
    for _ in range(100):
        found = False
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    found = True
                    os.kill(int(pid), signal.SIGKILL)
            except OSError:
                continue
        if not found:
            return


def _count_tasks(uid: int) -> int:
    """Tasks (threads) owned by real uid ``uid`` right now: RLIMIT_NPROC counts these."""
    total = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/status") as f:
                    fields = dict(line.split(":", 1) for line in f if ":" in line)
                if int(fields["Uid"].split()[0]) == uid:
                    total += int(fields.get("Threads", "1"))
            except (OSError, ValueError, KeyError):
                continue
    return total


_WARNED_WRITES: list = []


def _warn_if_writes_unconfined(info: dict) -> None:
    """Warn once when the candidate could write outside its working directory (no mounts, no Landlock)."""
    if _WARNED_WRITES or info.get("landlock") or (info.get("ro") and info.get("tmp_ro")):
        return
    _WARNED_WRITES.append(True)
    warnings.warn("rewards.sandbox: neither read-only mounts nor Landlock are available, so candidate code can "
                  "write outside its working directory (see the module docstring)", RuntimeWarning, stacklevel=3)


def _communicate(proc: subprocess.Popen, data: bytes, timeout: float, cap: int) -> tuple[bytes, bool]:
    """Feed ``data`` to stdin and read stdout (first ``cap`` bytes kept) until EOF or ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    out = bytearray()
    sel = selectors.DefaultSelector()
    os.set_blocking(proc.stdin.fileno(), False)
    sel.register(proc.stdin, selectors.EVENT_WRITE)
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while any(key.fileobj is proc.stdout for key in sel.get_map().values()):
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(out), True
            for key, _ in sel.select(left):
                if key.fileobj is proc.stdin:
                    try:
                        data = data[os.write(proc.stdin.fileno(), data[:1 << 16]):]
                    except (BrokenPipeError, BlockingIOError) as e:
                        data = data if isinstance(e, BlockingIOError) else b""
                    if not data:
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                else:
                    chunk = os.read(proc.stdout.fileno(), 1 << 16)
                    if not chunk:
                        sel.unregister(proc.stdout)
                    elif len(out) < cap:
                        out += chunk[: cap - len(out)]
        return bytes(out), False
    finally:
        sel.close()


def run_tests(code: str, tests: list[str] | str, entry_point: str | None = None, *, timeout: float = 5.0,
              memory_mb: int = 1024, nproc: int = 32, fsize_mb: int = 16, max_wall: float | None = None,
              allow_plain: bool | None = None, allow_fork: bool = False,
              max_output_bytes: int | None = None) -> SandboxResult:
    """Run ``tests`` against candidate ``code`` in the sandbox.

    ``tests`` is either a list of statements (each ``assert ...`` is one test, other statements such
    as imports are setup run in order) or one test program; with ``entry_point`` the program must
    define ``check(candidate)``, which is called with the candidate's ``entry_point`` (HumanEval),
    otherwise running the program to the end is the test. ``timeout`` is per test (the first one
    also gets ``STARTUP_GRACE`` for the interpreter start-up and loading the candidate).

    The tests see the candidate's functions (as proxies), its marshallable constants, and the
    stdlib modules it imported (re-imported by the judge); names that shadow builtins are hidden
    unless they are ``entry_point`` (so ``def abs(x): return 0`` cannot rig a test's ``abs``).

    Passing is not enough: when the candidate writes more than ``max_output_bytes`` (None:
    ``MAX_OUTPUT_BYTES``) to stdout and stderr together, or it (with every process it started) has
    not exited ``timeout`` seconds after its last test, every test fails and ``status`` is ``"abuse"``.

    >>> run_tests("def add(a, b):\\n    return a + b", ["assert add(1, 2) == 3", "assert add(1, 1) == 3"]).passed
    [True, False]
    """
    if isinstance(tests, str):
        items = [["check", tests]]
    else:
        items = [["test" if t.lstrip().startswith("assert") else "setup", t] for t in tests if isinstance(t, str)]
    n_tests = sum(kind != "setup" for kind, _ in items)
    if n_tests == 0:
        return SandboxResult([], [], "harness_error", {"error": "no tests"})
    mode = isolation()
    prefix = _ISOLATION[1]
    if mode == "plain" and not (allow_plain if allow_plain is not None else os.environ.get(ALLOW_PLAIN_ENV) == "1"):
        raise SandboxUnavailable(f"no namespace isolation (unshare) here; set {ALLOW_PLAIN_ENV}=1 to run candidate "
                                 "code with rlimits only (see rewards.sandbox docstring)")
    if not allow_fork and not _SECCOMP[0]:
        raise SandboxUnavailable("cannot install the seccomp filter that stops candidate processes from forking "
                                 "(RLIMIT_NPROC does not bind uid 0); pass allow_fork=True to run anyway")
    workdir = None if mode == "ns" else tempfile.mkdtemp(prefix="rl-dlm-sandbox-")
    nonce = secrets.token_hex(16)
    cmd = prefix + [PYTHON, "-I", "-B", "-c", JUDGE_SRC]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            cwd=workdir or "/", env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, start_new_session=True)
    uid = None
    try:
        uid = _plain_uid(proc.pid) if mode == "plain" else None
        if uid is not None:
            os.chown(workdir, uid, uid)
        cfg = {"code": code, "items": items, "entry": entry_point, "mode": "check" if isinstance(tests, str) else "asserts",
               "allow_fork": bool(allow_fork), "timeout": float(timeout), "nonce": nonce,
               "mem": int(memory_mb) << 20, "fsize": int(fsize_mb) << 20, "startup": STARTUP_GRACE,
               "cpu": int(timeout * n_tests + STARTUP_GRACE) + 2,
               "max_output": int(MAX_OUTPUT_BYTES if max_output_bytes is None else max_output_bytes),
               "nproc": nproc + (0 if uid is not None else _count_tasks(os.getuid())), "uid": uid,
               "ns": mode == "ns", "workdir": workdir, "tmpfs_mb": 64, "max_msg": 64 << 20, "runner": RUNNER_SRC}
        # each item, then one more timeout for the runner to exit on its own
        wall = max_wall if max_wall is not None else (timeout + STARTUP_GRACE + 1.0) * len(items) + timeout + 10.0
        out, timed_out = _communicate(proc, json.dumps(cfg).encode(), wall, cap=1 << 20)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()
        if uid is not None:
            _kill_uid(uid)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    fail = [False] * n_tests
    if timed_out:
        return SandboxResult(fail, ["wall timeout"] * n_tests, "timeout")
    bad = SandboxResult(fail, ["no valid report from the judge"] * n_tests, "harness_error")
    try:
        report = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return bad
    if not (isinstance(report, dict) and secrets.compare_digest(str(report.get("nonce")), nonce)
            and isinstance(report.get("results"), list) and len(report["results"]) == n_tests):
        return bad  # (explicit checks, not asserts: they must survive python -O)
    passed = [r is True for r in report["results"]]
    info = report.get("info") if isinstance(report.get("info"), dict) else {}
    _warn_if_writes_unconfined(info)
    status = "abuse" if report.get("abuse") else "ok"
    return SandboxResult(passed, [str(r) for r in report.get("reasons", [""] * n_tests)], status, info)
