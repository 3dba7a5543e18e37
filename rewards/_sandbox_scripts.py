"""Source of the two programs ``rewards.sandbox`` starts with ``python -I -B -c``.

* ``RUNNER_SRC`` -- the untrusted side: loads the candidate code (as module ``__candidate__``),
  reports the names it defines, then answers ``("call", name, args, kwargs)`` requests on fd 3/4
  with ``("ret", value)`` / ``("exc", type_name, message)``, all ``marshal``-framed (8-byte length).
  Nothing it says is trusted; it only ever supplies return values. At EOF on fd 3 it ends as a
  program does (``SystemExit``), so its non-daemon threads and ``atexit`` handlers run out.
* ``JUDGE_SRC`` -- the trusted side (pid 1 of fresh pid/net/mount namespaces when available): reads
  its JSON config from stdin, makes itself non-dumpable, makes every mount read-only, mounts empty
  read-only tmpfs on /var/tmp and /dev/shm and a private /tmp that is read-only but for its tmpfs
  /tmp/work, spawns the runner (fork + stdout/stderr on a counted pipe + rlimits + dropped
  capabilities + ``LANDLOCK_SRC`` write confinement + the ``SECCOMP_SRC`` no-fork filter + exec),
  runs the tests itself against proxies, restarts the runner after a timeout or a death, waits for
  the last runner (and all it started) to exit on its own, kills every other process of the
  namespace, and writes one JSON line with the nonce, per-test results and any abuse (output over
  the cap, something left running) to the saved stdout.

The judge also runs ``SECCOMP_SRC`` and ``LANDLOCK_SRC`` (``rewards._sandbox_confinement``) in the
runner before its ``exec``.

They are strings (not files executed by path) so that the interpreter never needs to read them
from a directory the sandboxed uid may not be able to traverse. Each contains ``MARKER``.
"""

from rewards._sandbox_confinement import LANDLOCK_SRC, SECCOMP_SRC

RUNNER_SRC = r"""# rl-dlm-sandbox runner (untrusted side)
import builtins, marshal, os, sys
if "nonet" in sys.argv:
    import socket
    def _no_net(*a, **k):
        raise OSError("network disabled in sandbox")
    socket.socket = socket.create_connection = socket.socketpair = _no_net
def _rx():
    head = b""
    while len(head) < 8:
        chunk = os.read(3, 8 - len(head))
        if not chunk:  # the judge is done: end as a program does (non-daemon threads joined, atexit run)
            raise SystemExit
        head += chunk
    n, buf = int.from_bytes(head, "big"), bytearray()
    while len(buf) < n:
        chunk = os.read(3, min(1 << 20, n - len(buf)))
        if not chunk:
            raise SystemExit
        buf += chunk
    return marshal.loads(bytes(buf))
def _tx(msg):
    try:
        data = marshal.dumps(msg)
    except Exception:
        data = marshal.dumps(("unser", type(msg[1]).__name__))
    data = len(data).to_bytes(8, "big") + data
    while data:
        data = data[os.write(4, data):]
_, code = _rx()
ns = {"__name__": "__candidate__", "__builtins__": builtins}
try:
    exec(compile(code, "<candidate>", "exec"), ns)
except BaseException as e:
    _tx(("err", type(e).__name__, str(e)[:200]))
    os._exit(0)
names = {}
for k, v in list(ns.items()):
    if not k.startswith("__"):
        if isinstance(v, type(sys)):
            names[k] = ("mod", v.__name__)
        elif callable(v):
            names[k] = 0
        else:
            try:
                if len(marshal.dumps(v)) < 1 << 20:
                    names[k] = (v,)
            except Exception:
                pass
_tx(("ok", names))
while True:
    _, name, args, kwargs = _rx()
    try:
        _tx(("ret", ns[name](*args, **kwargs)))
    except BaseException as e:
        _tx(("exc", type(e).__name__, str(e)[:200]))
"""

JUDGE_SRC = SECCOMP_SRC + LANDLOCK_SRC + r"""# rl-dlm-sandbox judge (trusted side)
import builtins, ctypes, fcntl, importlib, json, marshal, os, resource, select, signal, sys, time
cfg = json.loads(sys.stdin.buffer.read())
out_fd = os.dup(1)
_null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(_null, fd)
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE=0: nobody without CAP_SYS_PTRACE can read our memory/fds
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans of the runner become our children (plain mode)
info = {"ro": False, "tmpfs": False, "tmp_ro": False, "landlock": landlock_abi(), "output_bytes": 0}
workdir = cfg["workdir"]
if cfg["ns"]:
    class MountAttr(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint64) for n in ("set", "clr", "prop", "userns")]
    def set_readonly(path, recursive):  # mount_setattr(MOUNT_ATTR_RDONLY): this mount (and those below) only
        attr = MountAttr(1, 0, 0, 0)
        return libc.syscall(442, -100, path, 0x8000 if recursive else 0, ctypes.byref(attr), ctypes.c_size_t(32)) == 0
    def tmpfs(path, flags):  # MS_NOSUID | MS_NODEV | flags
        return libc.mount(b"tmpfs", path, b"tmpfs", 2 | 4 | flags, b"size=%dm,mode=1777" % cfg["tmpfs_mb"]) == 0
    info["ro"] = set_readonly(b"/", True)
    # private, empty and read-only /var/tmp and /dev/shm; a private /tmp, read-only but for its own tmpfs
    # /tmp/work, the runner's working directory (HOME, TMPDIR): the only writable place
    for d in (b"/var/tmp", b"/dev/shm"):
        if os.path.isdir(d):
            tmpfs(d, 1)  # MS_RDONLY
    info["tmpfs"] = os.path.isdir(b"/tmp") and tmpfs(b"/tmp", 0)
    workdir = "/tmp/work"
    os.mkdir(workdir, 0o777)
    if info["tmpfs"] and tmpfs(workdir.encode(), 0):
        info["tmp_ro"] = set_readonly(b"/tmp", False)
# the runner's stdout and stderr: one pipe whose bytes the judge counts (unlike a file, a pipe cannot be truncated)
out_r, out_w = os.pipe()
os.set_blocking(out_r, False)
abuse = None  # why every test fails although some passed: output over the cap, something left running
LIMITS = [(resource.RLIMIT_AS, cfg["mem"]), (resource.RLIMIT_FSIZE, cfg["fsize"]), (resource.RLIMIT_NOFILE, 64),
          (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, cfg["nproc"])]
# modules a candidate imported that the tests may use by the candidate's name (MBPP asserts use the
# program's own "import math"); pure computation only, never e.g. "antigravity" or "webbrowser"
REIMPORTABLE = {"array", "base64", "binascii", "bisect", "calendar", "cmath", "collections", "copy", "datetime",
                "decimal", "difflib", "enum", "fractions", "functools", "hashlib", "heapq", "itertools", "json",
                "math", "numbers", "numpy", "operator", "random", "re", "statistics", "string", "struct",
                "textwrap", "time", "typing", "unicodedata"}
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
       "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

class Hdr(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class Caps(ctypes.Structure):
    _fields_ = [("eff", ctypes.c_uint32), ("perm", ctypes.c_uint32), ("inh", ctypes.c_uint32)]

def spawn():
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            if cfg["ns"]:
                os.setpgid(0, 0)  # own group, killed between tests; in plain mode stay in the trainer-killed group
            a, b, o = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (r1, w2, out_w))
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.dup2(o, 1)
            os.dup2(o, 2)
            os.closerange(5, 1 << 20)
            os.chdir(workdir)
            for lim, val in LIMITS:
                resource.setrlimit(lim, (val, val))
            resource.setrlimit(resource.RLIMIT_CPU, (cfg["cpu"], cfg["cpu"] + 1))
            libc.prctl(28, 0x2F, 0, 0, 0)  # SECBIT_NOROOT|NO_SETUID_FIXUP|KEEP_CAPS locked
            for cap in range(64):
                libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP
            libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
            if cfg["uid"] is not None:  # plain mode as root: a fresh uid, unique to this run
                os.setgroups([])
                os.setresgid(cfg["uid"], cfg["uid"], cfg["uid"])
                os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
            libc.capset(ctypes.byref(Hdr(0x20080522, 0)), (Caps * 2)())
            libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
            if info["landlock"]:
                confine_writes(workdir, info["landlock"])
            if not cfg["allow_fork"]:
                install_no_fork_filter()
            argv = [sys.executable, "-I", "-B", "-c", cfg["runner"]] + ([] if cfg["ns"] else ["nonet"])
            os.execve(sys.executable, argv, ENV)
        finally:
            os._exit(127)
    os.close(r1)
    os.close(w2)
    return [pid, w1, r2]

class Broken(BaseException):  # BaseException: a test's "except Exception" cannot swallow it
    pass

def on_alarm(signum, frame):
    raise Broken("timeout")
signal.signal(signal.SIGALRM, on_alarm)
runner = None
deadline = 0.0

def kill_all():
    # as pid 1 of our namespace: SIGKILL every other process in it and reap them all
    while True:
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return
        time.sleep(0.001)

def kill_runner():
    global runner
    if runner is not None:
        if os.getpid() == 1:
            kill_all()
        else:
            try:
                os.kill(runner[0], signal.SIGKILL)
                os.waitpid(runner[0], 0)
            except OSError:
                pass
        os.close(runner[1])
        os.close(runner[2])
        runner = None

def count_output():
    # drain what the runner wrote to stdout/stderr so far; past the cap the whole run is abuse
    global abuse
    while True:
        try:
            chunk = os.read(out_r, 1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            return
        info["output_bytes"] += len(chunk)
        if info["output_bytes"] > cfg["max_output"] and abuse is None:
            abuse = "wrote more than %d bytes to stdout/stderr" % cfg["max_output"]
            return

def wait_fd(fd, write):
    # wait for the runner's pipe, draining its output meanwhile (a full output pipe would stall it)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Broken("timeout")
        readable, writable, _ = select.select([out_r] if write else [fd, out_r], [fd] if write else [], [], left)
        if out_r in readable:
            count_output()
            if abuse is not None:
                raise Broken(abuse)
        if fd in (writable if write else readable):
            return

def finish_runner():
    # EOF on the runner's request pipe ends its loop and it exits as a program does: non-daemon threads
    # joined, atexit handlers run. It and every process it started (orphans come to us: pid 1 or subreaper)
    # must be gone within one test timeout; otherwise the candidate left something running.
    global runner
    os.close(runner[1])
    pid, reaped, end = runner[0], False, time.monotonic() + cfg["timeout"]
    try:
        while True:
            try:
                while True:
                    done = os.waitpid(-1, os.WNOHANG)[0]
                    if not done:
                        break
                    reaped = reaped or done == pid
            except ChildProcessError:
                return None
            if time.monotonic() > end:
                return "left a thread or process running after its tests (still there %gs later)" % cfg["timeout"]
            select.select([out_r], [], [], 0.01)
            count_output()
    finally:
        if not reaped:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        os.close(runner[2])
        runner = None

def send(msg):
    data = marshal.dumps(msg)
    data = len(data).to_bytes(8, "big") + data
    while data:
        wait_fd(runner[1], True)
        try:
            data = data[os.write(runner[1], data[:1 << 16]):]
        except OSError:
            raise Broken("runner died")

def recv():
    buf, need = b"", 8
    while len(buf) < need:
        wait_fd(runner[2], False)
        chunk = os.read(runner[2], min(1 << 20, need - len(buf)))
        if not chunk:
            raise Broken("runner died")
        buf += chunk
        if need == 8 and len(buf) == 8:
            need = 8 + int.from_bytes(buf, "big")
            if need > cfg["max_msg"]:
                raise Broken("reply too large")
    try:
        msg = marshal.loads(buf[8:])
    except Exception:
        raise Broken("garbled reply")
    if not isinstance(msg, tuple) or not msg:
        raise Broken("garbled reply")
    return msg

def start_runner():
    global runner
    runner = spawn()
    send(("init", cfg["code"]))
    msg = recv()
    if msg[0] != "ok" or not isinstance(msg[1], dict):
        raise Broken("candidate failed to load: %s" % (msg[1:],))
    return msg[1]

def proxy(name):
    def call(*args, **kwargs):
        if runner is None:
            raise Broken("runner gone")
        try:
            send(("call", name, args, kwargs))
        except ValueError:
            raise TypeError("argument is not marshallable")
        msg = recv()
        if msg[0] == "ret" and len(msg) == 2:
            return msg[1]
        if msg[0] == "exc" and len(msg) == 3:
            cls = getattr(builtins, str(msg[1]), None)
            if isinstance(cls, type) and issubclass(cls, Exception):
                try:
                    exc = cls(msg[2])
                except Exception:
                    exc = RuntimeError(msg[2])
                raise exc
            raise RuntimeError("candidate raised %s" % (msg[1],))
        raise TypeError("candidate returned an unmarshallable value")
    call.__name__ = call.__qualname__ = name
    return call

results, reasons = [], []
test_ns, load_error = None, None
for idx, (kind, src) in enumerate(cfg["items"]):
    ok, why = False, ""
    try:
        if abuse is not None:
            raise Broken(abuse)
        if load_error is not None:
            raise Broken(load_error)
        if runner is None:  # interpreter start-up + candidate module: timeout plus a start-up grace
            deadline = time.monotonic() + cfg["timeout"] + cfg["startup"]
            signal.setitimer(signal.ITIMER_REAL, cfg["timeout"] + cfg["startup"] + 0.5)
            try:
                names = start_runner()
            except Broken as e:
                load_error = "candidate failed to load: %s" % (e,)
                raise Broken(load_error)
            if test_ns is None:
                test_ns = {"__name__": "__main__", "__builtins__": builtins}
                for k, v in names.items():
                    if not isinstance(k, str) or (hasattr(builtins, k) and k != cfg["entry"]):
                        continue  # a candidate "def abs(x): return 0" must not rig the tests' abs()
                    if isinstance(v, tuple) and len(v) == 2 and v[0] == "mod":
                        if str(v[1]).split(".")[0] in REIMPORTABLE:  # the judge imports it itself
                            test_ns[k] = importlib.import_module(v[1])
                    elif isinstance(v, tuple) and len(v) == 1:
                        test_ns[k] = v[0]
                    else:
                        test_ns[k] = proxy(k)
        deadline = time.monotonic() + cfg["timeout"]
        signal.setitimer(signal.ITIMER_REAL, cfg["timeout"] + 0.5)
        if kind == "setup":
            exec(compile(src, "<setup>", "exec"), test_ns)
        elif kind == "check":
            exec(compile(src, "<test>", "exec"), test_ns)
            if cfg["entry"] is not None and cfg["mode"] == "check":
                test_ns["check"](proxy(cfg["entry"]))
            ok = True
        else:
            exec(compile(src, "<assert>", "exec"), test_ns)
            ok = True
    except Broken as e:
        why = str(e)
        kill_runner()
    except BaseException as e:
        why = "%s: %s" % (type(e).__name__, str(e)[:200])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if kind != "setup":
        results.append(ok)
        reasons.append(why)
left_running = finish_runner() if runner is not None and abuse is None else None
kill_runner()
if os.getpid() == 1:  # init of our own pid namespace: take every candidate process down with us
    kill_all()
os.close(out_w)
count_output()  # what it wrote before it ended
abuse = abuse or left_running
if abuse is not None:  # passing the tests does not pay when the candidate abused the sandbox
    results, reasons = [False] * len(results), [abuse] * len(results)
line = json.dumps({"nonce": cfg["nonce"], "results": results, "reasons": reasons, "abuse": abuse, "info": info})
os.write(out_fd, line.encode() + b"\n")
"""
