"""The seccomp filter every sandboxed process installs: classic BPF built in pure Python
(no libseccomp, nothing compiled at run time), x86_64 and aarch64 tables.

Standard library only: this file is shipped into the sandbox as source; the host imports it
to unit-test the filter.
"""

from __future__ import annotations

import errno
import platform
import struct

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

# Syscalls no test program needs and that widen the kernel attack surface or could reach
# outside the sandbox: tracing other processes, (un)mounting, namespaces, kernel modules,
# keyrings, BPF, io_uring, perf, clock and host settings, handle-based opens.
_DENY = [
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr", "unshare", "setns",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "swapon", "swapoff", "acct", "settimeofday", "clock_settime", "clock_adjtime",
    "adjtimex", "syslog", "sethostname", "setdomainname", "quotactl", "quotactl_fd",
    "lookup_dcookie", "vhangup", "name_to_handle_at", "open_by_handle_at", "fanotify_init",
    "add_key", "request_key", "keyctl", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "move_pages", "migrate_pages",
    "mknodat",
    # x86_64 only (absent from the aarch64 table, skipped there)
    "mknod", "iopl", "ioperm", "modify_ldt", "uselib", "nfsservctl", "create_module",
    "get_kernel_syms", "query_module", "_sysctl", "ustat", "sysfs",
]

SYSCALLS = {
    "x86_64": {
        "socket": 41, "clone": 56, "ptrace": 101, "syslog": 103, "mknod": 133, "uselib": 134,
        "ustat": 136, "sysfs": 139, "vhangup": 153, "modify_ldt": 154, "pivot_root": 155,
        "_sysctl": 156, "adjtimex": 159, "chroot": 161, "acct": 163, "settimeofday": 164,
        "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169,
        "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173,
        "create_module": 174, "init_module": 175, "delete_module": 176, "get_kernel_syms": 177,
        "query_module": 178, "quotactl": 179, "nfsservctl": 180, "lookup_dcookie": 212,
        "clock_settime": 227, "kexec_load": 246, "add_key": 248, "request_key": 249,
        "keyctl": 250, "migrate_pages": 256, "mknodat": 259, "unshare": 272, "move_pages": 279,
        "perf_event_open": 298, "fanotify_init": 300, "prlimit64": 302,
        "name_to_handle_at": 303, "open_by_handle_at": 304, "clock_adjtime": 305, "setns": 308,
        "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "finit_module": 313,
        "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429,
        "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "clone3": 435,
        "pidfd_getfd": 438, "mount_setattr": 442, "quotactl_fd": 443,
    },
    "aarch64": {
        "lookup_dcookie": 18, "mknodat": 33, "umount2": 39, "mount": 40, "pivot_root": 41,
        "chroot": 51, "vhangup": 58, "quotactl": 60, "acct": 89, "unshare": 97,
        "kexec_load": 104, "init_module": 105, "delete_module": 106, "clock_settime": 112,
        "syslog": 116, "ptrace": 117, "reboot": 142, "sethostname": 161, "setdomainname": 162,
        "settimeofday": 170, "adjtimex": 171, "socket": 198, "add_key": 217,
        "request_key": 218, "keyctl": 219, "clone": 220, "swapon": 224, "swapoff": 225,
        "migrate_pages": 238, "move_pages": 239, "perf_event_open": 241, "prlimit64": 261,
        "fanotify_init": 262, "name_to_handle_at": 264, "open_by_handle_at": 265,
        "clock_adjtime": 266, "setns": 268, "process_vm_readv": 270, "process_vm_writev": 271,
        "kcmp": 272, "finit_module": 273, "bpf": 280, "userfaultfd": 282,
        "kexec_file_load": 294, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
        "fsconfig": 431, "fsmount": 432, "fspick": 433, "clone3": 435, "pidfd_getfd": 438,
        "mount_setattr": 442, "quotactl_fd": 443,
    },
}

AF_UNIX = 1
# CLONE_NEWTIME | CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC
# | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
CLONE_NEW_MASK = 0x00000080 | 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 \
    | 0x10000000 | 0x20000000 | 0x40000000

_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
RET_ALLOW, RET_KILL_PROCESS = 0x7FFF0000, 0x80000000


def _ret_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


def build_seccomp_filter(arch: str | None = None) -> bytes:
    """Return the classic-BPF seccomp program (``struct sock_filter[]`` bytes) for ``arch``.

    Policy: a foreign architecture (or x32 ABI) is killed; denied syscalls fail with EPERM;
    ``socket`` works only for AF_UNIX (EACCES otherwise, so no network even if a namespace
    leaked); ``clone`` with any namespace flag fails with EPERM; ``clone3`` fails with ENOSYS
    (its flags live in memory BPF cannot read; libc then falls back to ``clone``);
    ``prlimit64`` on another process fails with EPERM. Everything else is allowed: the
    namespaces, uid and rlimits do the containing, this filter shrinks the kernel surface.
    """
    arch = arch or platform.machine()
    if arch not in SYSCALLS:
        raise OSError(errno.ENOSYS, f"no seccomp syscall table for {arch}")
    table = SYSCALLS[arch]
    # Program as a list of (code, jt, jf, k), jumps given as labels resolved below.
    prog: list[list] = []

    def emit(code, k=0, jt=0, jf=0):
        prog.append([code, jt, jf, k])

    emit(_LD_W_ABS, 4)                                  # A = arch
    emit(_JEQ, AUDIT_ARCH[arch], 1, 0)
    emit(_RET, RET_KILL_PROCESS)
    emit(_LD_W_ABS, 0)                                  # A = syscall nr
    if arch == "x86_64":
        emit(_JGE, 0x40000000, "kill", 0)               # x32 ABI
    for name in _DENY:
        if name in table:
            emit(_JEQ, table[name], "eperm", 0)
    emit(_JEQ, table["clone3"], "enosys", 0)
    emit(_JEQ, table["socket"], "socket", 0)
    emit(_JEQ, table["clone"], "clone", 0)
    emit(_JEQ, table["prlimit64"], "prlimit", 0)
    emit(_RET, RET_ALLOW)
    labels = {}
    labels["socket"] = len(prog)
    emit(_LD_W_ABS, 16)                                 # args[0] low word: domain
    emit(_JEQ, AF_UNIX, "allow", "eacces")
    labels["clone"] = len(prog)
    emit(_LD_W_ABS, 16)                                 # args[0] low word: flags
    emit(_JSET, CLONE_NEW_MASK, "eperm", "allow")
    labels["prlimit"] = len(prog)
    emit(_LD_W_ABS, 16)                                 # args[0]: pid (0 = self)
    emit(_JEQ, 0, "allow", "eperm")
    labels["allow"] = len(prog)
    emit(_RET, RET_ALLOW)
    labels["eperm"] = len(prog)
    emit(_RET, _ret_errno(errno.EPERM))
    labels["eacces"] = len(prog)
    emit(_RET, _ret_errno(errno.EACCES))
    labels["enosys"] = len(prog)
    emit(_RET, _ret_errno(errno.ENOSYS))
    labels["kill"] = len(prog)
    emit(_RET, RET_KILL_PROCESS)
    out = bytearray()
    for i, (code, jt, jf, k) in enumerate(prog):
        jt = labels[jt] - i - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - i - 1 if isinstance(jf, str) else jf
        if not (0 <= jt <= 255 and 0 <= jf <= 255):
            raise ValueError("seccomp jump out of range")
        out += struct.pack("=HBBI", code, jt, jf, k)
    return bytes(out)
