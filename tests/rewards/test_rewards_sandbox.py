"""Adversarial suite for the code sandbox: every hack scores 0, nothing hangs, nothing is left behind.

Each candidate below is a *wrong* solution to ``add`` (or one that is right only if the hack
works) plus a trick that fooled, or could fool, a reward harness. All must score 0.0 for both the
MBPP-style assert list and the HumanEval-style ``check(candidate)`` program.
"""

import os
import pathlib
import socket
import subprocess
import sys
import time
import uuid
import warnings

import pytest

from rewards import sandbox
from rewards.code import diffucoder_code_reward, unit_test_reward
from rewards.sandbox import MARKER, SandboxUnavailable, run_tests

ROOT = pathlib.Path(__file__).resolve().parents[2]
ASSERTS = ["assert add(1, 2) == 3", "assert add(20, 22) == 42"]
CHECK = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(20, 22) == 42\n"
SECRET = "hunter2-" + uuid.uuid4().hex
REPO_FILE = ROOT / "tests" / "rewards" / f"_pwned_{uuid.uuid4().hex}"

FORGE = r'''
import gc, json, os, re, sys
def _forge():
    found = set()
    for path in ["/proc/1/fd/0", "/proc/1/mem", "/proc/1/environ", "/proc/1/cmdline", "/proc/self/environ"]:
        try:
            found.update(re.findall(rb"[0-9a-f]{32}", open(path, "rb").read(1 << 20)))
        except Exception:
            pass
    found.update(o.encode() for o in gc.get_objects() if isinstance(o, str) and re.fullmatch(r"[0-9a-f]{32}", o))
    for tok in found or {b"0" * 32}:
        line = json.dumps({"nonce": tok.decode(), "results": [True, True], "reasons": ["", ""]}).encode() + b"\n"
        for fd in range(64):
            try:
                os.write(fd, line)
            except Exception:
                pass
        for p in ("/proc/1/fd/1", "/proc/1/fd/2", "/proc/%d/fd/1" % os.getppid()):
            try:
                open(p, "wb").write(line)
            except Exception:
                pass
        print(line.decode()); sys.stderr.write(line.decode())
_forge()
def add(a, b):
    _forge()
    return -1
'''

CASES = {
    "exit_at_import": "def add(a, b):\n    return 0\nexit()",
    "sys_exit_at_import": "import sys\ndef add(a, b):\n    return 0\nsys.exit(0)",
    "os_exit_at_import": "import os\ndef add(a, b):\n    return 0\nos._exit(0)",
    "raise_systemexit": "def add(a, b):\n    return 0\nraise SystemExit",
    "sys_exit_in_call": "import sys\ndef add(a, b):\n    sys.exit(0)",
    "os_exit_in_call": "import os\ndef add(a, b):\n    os._exit(0)",
    "keyboard_interrupt": "def add(a, b):\n    raise KeyboardInterrupt",
    "infinite_loop_in_call": "def add(a, b):\n    while True:\n        pass",
    "infinite_loop_at_import": "while True:\n    pass",
    "memory_bomb": "def add(a, b):\n    x = []\n    while True:\n        x.append(bytearray(1 << 24))",
    "memory_bomb_at_import": "x = 'x' * (10 ** 11)\ndef add(a, b):\n    return a + b",
    "fork_bomb": "import os\ndef add(a, b):\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass",
    "daemon_escapes_session": ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(600)\n"
                               "def add(a, b):\n    return 0"),
    "write_outside_tempdir": (f"def add(a, b):\n    open({str(REPO_FILE)!r}, 'w').write('x')\n    return a + b"),
    "write_outside_tempdir_quietly": (f"def add(a, b):\n    try:\n        open({str(REPO_FILE)!r}, 'w').write('x')\n"
                                      "    except OSError:\n        pass\n    return 0"),
    "read_env_secret": ("import os, glob\ndef add(a, b):\n    blobs = [str(os.environ)]\n"
                        "    for p in glob.glob('/proc/*/environ'):\n        try:\n"
                        "            blobs.append(open(p, 'rb').read().decode('latin1'))\n        except OSError:\n            pass\n"
                        f"    return a + b if any({SECRET!r} in b for b in blobs) else -1"),
    "redefine_assertionerror_and_builtins": (
        "import builtins\nclass AssertionError(Exception):\n    pass\nbuiltins.AssertionError = AssertionError\n"
        "builtins.__import__ = lambda *a, **k: None\nbuiltins.print = lambda *a, **k: None\n"
        "def add(a, b):\n    return 0"),
    "trace_function_tampering": ("import sys\ndef _t(frame, event, arg):\n    return _t\nsys.settrace(_t)\n"
                                 "def add(a, b):\n    f = sys._getframe()\n    while f.f_back:\n        f = f.f_back\n"
                                 "    f.f_globals.clear()\n    return 0"),
    "kill_parent": "import os\nos.kill(os.getppid(), 9)\ndef add(a, b):\n    os.kill(os.getppid(), 9)\n    return 0",
    "kill_everything": "import os, signal\ndef add(a, b):\n    os.kill(-1, signal.SIGKILL)\n    return 0",
    "output_flood": ("import os, sys\ndef add(a, b):\n    while True:\n        sys.stdout.write('ok PASSED\\n' * 1000)\n"
                     "        os.write(2, b'x' * 65536)"),
    "huge_return_value": "def add(a, b):\n    return 'x' * (100 << 20)",
    "override_stdout": "import io, sys\nsys.stdout = io.StringIO()\nsys.stderr = sys.stdout\ndef add(a, b):\n    return 0",
    "always_equal_object": ("class E:\n    def __eq__(self, other):\n        return True\n    __hash__ = None\n"
                            "def add(a, b):\n    return E()"),
    "rigged_int_subclass": "class I(int):\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return I(0)",
    "forge_success_token": FORGE,
}


@pytest.fixture(scope="module")
def listener():
    """A TCP server on the host loopback: a candidate that reaches it would get the right answer."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.setblocking(False)
    yield srv
    srv.close()


def network_case(port):
    return ("import socket\ndef add(a, b):\n    try:\n"
            f"        socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n        return a + b\n"
            "    except OSError:\n        return -1")


def _sandbox_processes():
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if MARKER.encode() in pathlib.Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found


BOUNDED_FORKS = ("import os\nn = 0\nfor _ in range(20):\n    try:\n        pid = os.fork()\n    except OSError:\n"
                 "        continue\n    if pid == 0:\n        os._exit(0)\n    n += 1\ndef forks():\n    return n")


def test_candidates_cannot_fork_but_can_use_threads():
    """Bounded probe (at most 20 short-lived children): the seccomp filter must block every fork.

    RLIMIT_NPROC is not enforced for uid 0, so without the filter a real fork bomb run as root
    exhausts the machine's pids; the fork-bomb case below refuses to run unless this holds."""
    assert run_tests(BOUNDED_FORKS, ["assert forks() == 0"]).passed == [True]
    threads = "import threading\nr = []\nt = threading.Thread(target=r.append, args=(3,))\nt.start()\nt.join()\n"
    assert run_tests(threads + "def add(a, b):\n    return r[0]", ["assert add(1, 2) == 3"]).passed == [True]


@pytest.mark.parametrize("name", sorted(CASES))
def test_adversarial_completion_scores_zero(name, monkeypatch):
    if name in ("fork_bomb", "daemon_escapes_session") and run_tests(BOUNDED_FORKS, ["assert forks() == 0"]).passed != [True]:
        pytest.fail("forks are not blocked in the sandbox: refusing to run a real fork bomb")
    monkeypatch.setenv("RL_DLM_FAKE_SECRET", SECRET)
    code = CASES[name]
    start = time.monotonic()
    r1 = run_tests(code, ASSERTS, timeout=1.5)
    r2 = run_tests(code, CHECK, "add", timeout=1.5)
    assert r1.passed == [False, False], r1
    assert r2.passed == [False], r2
    assert time.monotonic() - start < 30
    assert not REPO_FILE.exists()


def test_network_is_unreachable(listener):
    code = network_case(listener.getsockname()[1])
    ns = {}
    exec(code, ns)  # positive control: unsandboxed, the candidate reaches the server and is right
    assert ns["add"](1, 2) == 3
    listener.accept()[0].close()
    assert run_tests(code, ASSERTS, timeout=3).passed == [False, False]
    with pytest.raises(BlockingIOError):
        listener.accept()


def test_secret_control_is_meaningful(monkeypatch):
    """Unsandboxed, the secret-reading candidate is right; sandboxed (above) it is not."""
    monkeypatch.setenv("RL_DLM_FAKE_SECRET", SECRET)
    ns = {}
    exec(CASES["read_env_secret"], ns)
    assert ns["add"](1, 2) == 3


def test_host_tmp_is_not_visible(tmp_path):
    """Writes to the host's /tmp fail, never reach the host; the working directory is scratch space that starts empty."""
    target = tmp_path / "pwned"
    code = f"def add(a, b):\n    open({str(target)!r}, 'w').write('x')\n    return a + b"
    run_tests(code, ASSERTS, timeout=2)
    assert not target.exists()
    ok = "import os\ndef add(a, b):\n    open('scratch', 'w').write('x')\n    return a + b + len(os.listdir('.')) - 1"
    assert run_tests(ok, ASSERTS, timeout=2).passed == [True, True]


def test_candidate_cannot_shadow_builtins_used_by_tests():
    rigged = ("def abs(x):\n    return 0\ndef len(x):\n    return 2\ndef isinstance(*a):\n    return True\n"
              "def add(a, b):\n    return -1")
    tests = ["assert abs(add(1, 2) - 3) < 1e-9", "assert len(str(add(20, 22))) == 2 and isinstance(add(1, 1), str)"]
    assert run_tests(rigged, tests, timeout=2).passed == [False, False]
    # ...but a function under test that is named like a builtin works when it is the entry point
    assert run_tests("def max(xs):\n    return sorted(xs)[-1]", ["assert max([3, 1, 2]) == 3"], "max").passed == [True]


def test_tests_see_stdlib_modules_the_candidate_imported():
    """MBPP asserts such as ``math.isclose(...)`` rely on the program's own ``import math``."""
    code = "import math\nimport collections as co\ndef area(r):\n    return math.pi * r * r"
    tests = ["assert math.isclose(area(1), 3.14159265, rel_tol=1e-6)", "assert co.Counter('aab')['a'] == 2"]
    assert run_tests(code, tests).passed == [True, True]


def test_honest_solution_still_passes_next_to_hacks():
    code = "def add(a, b):\n    return a + b"
    assert unit_test_reward([f"```python\n{code}\n```"] * 2, tests=[ASSERTS, CHECK], entry_point=[None, "add"]) == [1.0, 1.0]


def test_user_namespace_mode(monkeypatch):
    """The unprivileged path (``unshare --map-root-user``) also isolates: forced here even as root."""
    sandbox.isolation()
    cmd = sandbox._unshare_cmd(user_ns=True)
    monkeypatch.setattr(sandbox, "_ISOLATION", ["ns", cmd])
    assert run_tests("def add(a, b):\n    return a + b", ASSERTS).passed == [True, True]
    for name in ("forge_success_token", "kill_parent", "write_outside_tempdir", "os_exit_in_call"):
        assert run_tests(CASES[name], ASSERTS, timeout=1.5).passed == [False, False], name
    for name in ("write_private_tmp", "write_through_symlink_in_cwd", "non_daemon_thread_sleeps_forever", "stdout_over_cap"):
        assert run_tests(ABUSE[name], ASSERTS, timeout=1).passed == [False, False], name
    for name in ("prints_a_few_lines", "writes_in_its_working_directory"):
        assert run_tests(CONTROLS[name], ASSERTS, timeout=1).passed == [True, True], name
    assert not REPO_FILE.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal is specific to running as root")
def test_plain_mode_refuses_or_needs_opt_in(monkeypatch):
    """Without namespaces, candidate code is not run unless explicitly allowed, and never as root
    when the interpreter is unusable by an unprivileged uid (as on the project machines)."""
    monkeypatch.setattr(sandbox, "_ISOLATION", ["plain", []])
    monkeypatch.delenv(sandbox.ALLOW_PLAIN_ENV, raising=False)
    with pytest.raises(SandboxUnavailable):
        run_tests("def add(a, b):\n    return a + b", ASSERTS)
    if not all(sandbox._world_usable(p) for p in (os.sys.executable, os.sys.base_prefix, os.sys.prefix)):
        with pytest.raises(SandboxUnavailable):
            run_tests("def add(a, b):\n    return a + b", ASSERTS, allow_plain=True)


# Passing while abusing the sandbox scores 0. Each candidate is a *right* add() plus an abuse that the sandbox
# contains (nothing leaks, nothing survives) but that a reward must not pay for: RL optimises such loopholes.
HONEST = "def add(a, b):\n    return a + b"
OUTSIDE_WRITE = ("import os\ndef add(a, b):\n    try:\n{prepare}        with open({path!r}, 'w') as f:\n"
                 "            f.write(str(a + b))\n        return int(open({path!r}).read())\n    except OSError:\n"
                 "        return -1")
ABUSE = {
    "non_daemon_thread_sleeps_forever": "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,)).start()\n" + HONEST,
    "non_daemon_thread_started_by_a_call": ("import threading, time\ndef add(a, b):\n"
                                            "    threading.Thread(target=time.sleep, args=(3600,)).start()\n    return a + b"),
    "atexit_handler_never_returns": "import atexit, time\natexit.register(time.sleep, 3600)\n" + HONEST,
    "stdout_over_cap": "def add(a, b):\n    print('x' * (1 << 20))\n    return a + b",
    "stderr_over_cap_at_import": "import os\nfor _ in range(17):\n    os.write(2, b'y' * 65536)\n" + HONEST,
    "stdout_over_cap_from_a_thread": ("import sys, threading\nt = threading.Thread(target=sys.stdout.write, args=('z' * (2 << 20),))\n"
                                      "t.start()\nt.join()\n" + HONEST),
    "write_private_tmp": OUTSIDE_WRITE.format(prepare="", path="/tmp/side"),
    "write_var_tmp": OUTSIDE_WRITE.format(prepare="", path="/var/tmp/side"),
    "write_dev_shm": OUTSIDE_WRITE.format(prepare="", path="/dev/shm/side"),
    "write_parent_of_cwd": OUTSIDE_WRITE.format(prepare="", path="../side"),
    "write_through_symlink_in_cwd": OUTSIDE_WRITE.format(
        prepare="        os.path.lexists('link') or os.symlink('/tmp/side2', 'link')\n", path="link"),
    # where /tmp is read-only, try a fresh user + mount namespace with a writable tmpfs over it
    "write_tmp_after_unshare_and_mount": OUTSIDE_WRITE.format(
        prepare=("        if not os.access('/tmp', os.W_OK):\n            libc = __import__('ctypes').CDLL(None)\n"
                 "            libc.unshare(0x10000000 | 0x00020000)\n"
                 "            libc.mount(b'tmpfs', b'/tmp', b'tmpfs', 0, None)\n"), path="/tmp/side"),
    "mkdir_outside_cwd": "import os\ndef add(a, b):\n    os.makedirs('/tmp/d/e', exist_ok=True)\n    return a + b",
    "rename_out_of_cwd": ("import os\ndef add(a, b):\n    open('f', 'w').write('x')\n    os.rename('f', '/tmp/f')\n"
                          "    return a + b if os.path.exists('/tmp/f') else -1"),
}
# need allow_fork=True (the code rewards never set it: forks fail there)
ABUSE_FORKING = {
    "forked_child_sleeps": "import os, time\nif os.fork() == 0:\n    time.sleep(3600)\n    os._exit(0)\n" + HONEST,
    "subprocess_left_running": ("import subprocess, sys\np = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3600)'])\n"
                                + HONEST),
    "setsid_grandchild_left_running": ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                                       "        time.sleep(3600)\n    os._exit(0)\nos.wait()\n" + HONEST),
}
CONTROLS = {
    "prints_a_few_lines": ("import sys\nprint('loading')\ndef add(a, b):\n    print('add', a, b)\n"
                           "    print('debug', file=sys.stderr)\n    return a + b"),
    "daemon_thread_that_finishes": ("import threading, time\nt = threading.Thread(target=time.sleep, args=(0.05,), daemon=True)\n"
                                    "t.start()\n" + HONEST),
    "non_daemon_thread_that_finishes": "import threading, time\nthreading.Thread(target=time.sleep, args=(0.05,)).start()\n" + HONEST,
    # a daemon thread does not keep a program alive: it ends with the process, nothing is left running
    "daemon_thread_still_sleeping": "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n" + HONEST,
    "writes_in_its_working_directory": (
        "import os, tempfile\ndef add(a, b):\n    with open('scratch.txt', 'w') as f:\n        f.write(str(a + b))\n"
        "    fd, path = tempfile.mkstemp()\n    os.write(fd, b'1')\n    os.close(fd)\n    os.remove(path)\n"
        "    os.makedirs('d/e', exist_ok=True)\n    os.replace('scratch.txt', 'd/e/s.txt')\n    return int(open('d/e/s.txt').read())"),
    "writes_to_dev_null": "import os\ndef add(a, b):\n    with open(os.devnull, 'w') as f:\n        f.write('x' * (4 << 20))\n    return a + b",
}
CONTROLS_FORKING = {
    "child_that_exits": "import os\npid = os.fork()\nif pid == 0:\n    os._exit(0)\nos.waitpid(pid, 0)\n" + HONEST,
    "subprocess_that_finishes": ("import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'print(1)'], check=True, "
                                 "capture_output=True)\n" + HONEST),
}


@pytest.mark.parametrize("name", sorted(ABUSE) + sorted(ABUSE_FORKING))
def test_passing_while_abusing_the_sandbox_scores_zero(name):
    code, allow_fork = (ABUSE[name], False) if name in ABUSE else (ABUSE_FORKING[name], True)
    r1 = run_tests(code, ASSERTS, timeout=1, allow_fork=allow_fork)
    r2 = run_tests(code, CHECK, "add", timeout=1, allow_fork=allow_fork)
    assert r1.passed == [False, False], r1
    assert r2.passed == [False], r2
    if not name.startswith(("write", "mkdir", "rename")):  # those fail their asserts: the write raised
        assert r1.status == r2.status == "abuse", (r1, r2)


@pytest.mark.parametrize("name", sorted(CONTROLS) + sorted(CONTROLS_FORKING))
def test_controls_still_pass(name):
    code, allow_fork = (CONTROLS[name], False) if name in CONTROLS else (CONTROLS_FORKING[name], True)
    r1 = run_tests(code, ASSERTS, timeout=1, allow_fork=allow_fork)
    r2 = run_tests(code, CHECK, "add", timeout=1, allow_fork=allow_fork)
    assert (r1.passed, r1.status, r2.passed, r2.status) == ([True, True], "ok", [True], "ok"), (r1, r2)


def test_output_cap_is_exact_and_a_reward_knob():
    """stdout and stderr count together; exactly the cap passes, one byte more scores 0 (reward config knob)."""
    def code(n_out, n_err):
        return f"import os\nos.write(1, b'o' * {n_out})\nos.write(2, b'e' * {n_err})\n" + HONEST
    assert run_tests(code(600, 400), ASSERTS, timeout=1, max_output_bytes=1000).passed == [True, True]
    over = run_tests(code(600, 401), ASSERTS, timeout=1, max_output_bytes=1000)
    assert (over.passed, over.status, over.info["output_bytes"]) == ([False, False], "abuse", 1001)
    block = "```python\n" + code(600, 401) + "\n```"
    assert unit_test_reward([block], tests=[ASSERTS], max_output_bytes=1000) == [0.0]
    assert unit_test_reward([block], tests=[ASSERTS], max_output_bytes=None) == [1.0]  # default: 1 MiB
    assert diffucoder_code_reward(None, [block], tests=[ASSERTS], max_output_bytes=1000) == [0.5]  # format only


@pytest.mark.skipif(sandbox.isolation() != "ns", reason="mount namespaces are not available here")
def test_everything_but_the_working_directory_is_mounted_read_only():
    code = ("import os\ndef mounts():\n    return [(l.split()[4], l.split()[5].split(',')[0]) for l in open('/proc/self/mountinfo')]\n"
            "def cwd():\n    return (os.getcwd(), os.environ['HOME'], os.environ['TMPDIR'])")
    tests = ["m = dict(mounts())", "assert cwd() == ('/tmp/work',) * 3 and m['/tmp/work'] == 'rw'",
             "assert m['/'] == m['/tmp'] == m['/var/tmp'] == m['/dev/shm'] == 'ro'",
             "assert [p for p, opt in mounts() if opt != 'ro'] == ['/tmp/work']"]
    assert run_tests(code, tests).passed == [True, True, True]


def test_unconfined_writes_are_reported_once(monkeypatch):
    """Where neither the read-only mounts nor Landlock were in force, a warning says so, once per process."""
    monkeypatch.setattr(sandbox, "_WARNED_WRITES", [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sandbox._warn_if_writes_unconfined({"ro": True, "tmp_ro": True, "landlock": 0})  # mounts
        sandbox._warn_if_writes_unconfined({"ro": False, "tmp_ro": False, "landlock": 7})  # Landlock
        assert caught == []
        sandbox._warn_if_writes_unconfined({"ro": True, "tmp_ro": False, "landlock": 0})
        sandbox._warn_if_writes_unconfined({})
    assert [str(w.message).startswith("rewards.sandbox: neither") for w in caught] == [True]


def test_landlock_alone_confines_writes_to_the_working_directory(tmp_path):
    """Without mount namespaces (plain mode) Landlock alone keeps the filesystem read-only outside the working
    directory: each write below is tried in a confined process, which reports which ones succeeded."""
    from rewards._sandbox_confinement import LANDLOCK_SRC

    probe = subprocess.run([sys.executable, "-I", "-c", LANDLOCK_SRC + "print(landlock_abi())"], capture_output=True, text=True)
    if int(probe.stdout) == 0:
        pytest.skip("this kernel has no Landlock")
    work, outside = tmp_path / "work", tmp_path / "outside.txt"
    work.mkdir()
    outside.write_text("keep")
    attempts = {
        "create_in_work": "open(W + '/a', 'w').write('x')", "mkdir_in_work": "os.mkdir(W + '/d')",
        "rename_in_work": "os.rename(W + '/a', W + '/d/a')", "dev_null": "open(os.devnull, 'w').write('x')",
        "create_outside": "open(T + '/b', 'w').write('x')", "append_outside": "open(O, 'a').write('x')",
        "truncate_outside": "os.truncate(O, 0)", "remove_outside": "os.remove(O)", "mkdir_outside": "os.mkdir(T + '/e')",
        "rename_out_of_work": "os.rename(W + '/d/a', T + '/a')",
        "symlink_escape": "os.symlink(O, W + '/link'); open(W + '/link', 'w').write('x')",
    }
    script = LANDLOCK_SRC + (f"import os\nW, T, O = {str(work)!r}, {str(tmp_path)!r}, {str(outside)!r}\n"
                             "confine_writes(W, landlock_abi())\nfor name, stmt in " + repr(attempts) + ".items():\n"
                             "    try:\n        exec(stmt)\n        print(name)\n    except OSError:\n        pass\n")
    done = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["create_in_work", "mkdir_in_work", "rename_in_work", "dev_null"]
    assert outside.read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["outside.txt", "work"]


def test_zz_no_sandbox_process_left_behind():
    """After all of the above (fork bombs, setsid daemons, sleepers), no sandbox process survives."""
    deadline = time.monotonic() + 5
    while _sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _sandbox_processes() == []
