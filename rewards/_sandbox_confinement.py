"""Kernel confinement that the sandbox's judge applies to the runner, as source strings.

* ``SECCOMP_SRC`` -- ``install_no_fork_filter()``: a seccomp-BPF program (x86_64, aarch64) that
  makes process creation fail (threads still work); also run once by ``sandbox.isolation()`` as a probe.
* ``LANDLOCK_SRC`` -- ``landlock_abi()`` and ``confine_writes(workdir, abi)``: Landlock denies every
  filesystem change outside ``workdir`` (and ``/dev/null``) to the calling process and its children.

They run only in sandbox processes (``python -c``), never in the trainer, and contain ``MARKER``.
"""

SECCOMP_SRC = r"""# rl-dlm-sandbox seccomp filter
import ctypes as _ct, platform as _pf

def install_no_fork_filter():
    # Seccomp-BPF: process creation (fork, vfork, clone without CLONE_THREAD) fails with EAGAIN,
    # clone3 with ENOSYS (libc then falls back to clone, so threads still work), and any syscall of
    # a foreign ABI (i386 / x32 on x86_64) with ENOSYS; everything else is allowed. RLIMIT_NPROC
    # alone is not enough: the kernel never enforces it for uid 0.
    arch, forks, clone = {"x86_64": (0xC000003E, (57, 58), 56), "aarch64": (0xC00000B7, (), 220)}[_pf.machine()]
    allow, eagain, enosys = 0x7FFF0000, 0x00050000 | 11, 0x00050000 | 38
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, enosys),
            (ld, 0, 0, 0), (jge, 0, 1, 0x40000000), (ret, 0, 0, enosys)]
    for nr in forks:
        prog += [(jeq, 0, 1, nr), (ret, 0, 0, eagain)]
    prog += [(jeq, 0, 1, 435), (ret, 0, 0, enosys), (jeq, 1, 0, clone), (ret, 0, 0, allow),
             (ld, 0, 0, 16), (jset, 0, 1, 0x10000), (ret, 0, 0, allow), (ret, 0, 0, eagain)]

    class Insn(_ct.Structure):
        _fields_ = [("code", _ct.c_ushort), ("jt", _ct.c_ubyte), ("jf", _ct.c_ubyte), ("k", _ct.c_uint32)]

    class Prog(_ct.Structure):
        _fields_ = [("len", _ct.c_ushort), ("filter", _ct.POINTER(Insn))]

    insns = (Insn * len(prog))(*[Insn(*i) for i in prog])
    libc = _ct.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [_ct.c_int, _ct.c_ulong, _ct.c_void_p, _ct.c_ulong, _ct.c_ulong]
    if libc.prctl(38, 1, None, 0, 0) != 0 or libc.prctl(22, 2, _ct.cast(_ct.pointer(Prog(len(prog), insns)), _ct.c_void_p), 0, 0) != 0:
        raise OSError(_ct.get_errno(), "cannot install the seccomp filter")
"""

LANDLOCK_SRC = r"""# rl-dlm-sandbox landlock write confinement
import ctypes as _ct, os as _os

def landlock_abi():
    # The kernel's Landlock ABI version (Linux >= 5.13 with Landlock enabled), 0 where there is none.
    libc = _ct.CDLL(None, use_errno=True)
    libc.syscall.restype = _ct.c_long
    return max(0, libc.syscall(444, None, _ct.c_size_t(0), _ct.c_uint32(1)))  # LANDLOCK_CREATE_RULESET_VERSION

def confine_writes(workdir, abi):
    # Landlock (unprivileged, needs no_new_privs; inherited across fork/exec, never lifted): every way to
    # change the filesystem -- write/truncate a file, create, remove, rename/link into -- is denied except
    # beneath `workdir` and writing /dev/null. Reading and executing stay allowed everywhere.
    write_file, truncate, refer = 1 << 1, 1 << 14, 1 << 13
    handled = write_file | sum(1 << b for b in range(4, 13))  # remove_dir/file, make_char/dir/reg/sock/fifo/block/sym
    handled |= (refer if abi >= 2 else 0) | (truncate if abi >= 3 else 0)

    class PathBeneath(_ct.Structure):
        _pack_ = 1
        _fields_ = [("allowed_access", _ct.c_uint64), ("parent_fd", _ct.c_int32)]

    libc = _ct.CDLL(None, use_errno=True)
    libc.syscall.restype = _ct.c_long
    ruleset = libc.syscall(444, _ct.byref(_ct.c_uint64(handled)), _ct.c_size_t(8), _ct.c_uint32(0))
    if ruleset < 0:
        raise OSError(_ct.get_errno(), "cannot create a landlock ruleset")
    for path, access in ((workdir, handled), (_os.devnull, handled & (write_file | truncate))):
        fd = _os.open(path, _os.O_PATH | _os.O_CLOEXEC)
        if libc.syscall(445, _ct.c_int(ruleset), 1, _ct.byref(PathBeneath(access, fd)), _ct.c_uint32(0)) != 0:
            raise OSError(_ct.get_errno(), "cannot add the landlock rule for %s" % path)
        _os.close(fd)
    if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.syscall(446, _ct.c_int(ruleset), _ct.c_uint32(0)) != 0:
        raise OSError(_ct.get_errno(), "cannot enforce the landlock ruleset")
    _os.close(ruleset)
"""
