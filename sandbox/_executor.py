"""The warm executor: the piece of cgrpo that runs *inside* a sandbox (jail or container).

It is started once per worker (``python -I -S -c <bundle> <config JSON>``, see
``sandbox/_process.py``), imports the standard-library modules programs commonly use, and
serves requests forever: one JSON line in on stdin, one JSON line out on stdout.

Every program gets two fresh processes, forked from a warm **template** (a process forked
once at start, before any request, so it holds no program, test or result of anyone):

``judge``    runs the task's tests (``sandbox/_judge.py``) under a uid of its own and owns
             the report pipe; the verdict is its report.
``program``  the judge's child, under another uid: runs the untrusted code and answers
             the judge's calls with plain data (``sandbox/_candidate.py``). It never sees a
             test, an expected value or the report pipe.

Forking a warm interpreter costs about a millisecond; starting a cold one costs tens: that
difference is the sandbox's speed. The pair for the next program is forked and confined
while the current one runs.

Two confinement modes, chosen by the host:
``jail``      the executor is root inside bubblewrap (namespaces, read-only binds). The
              judge is PID 1 of a fresh PID namespace; the program is PID 1 of a nested one
              with its own mount and IPC namespaces (fresh tmpfs on /tmp and /dev/shm, its
              own /proc, its own SysV IPC) and, as root, its own memory cgroup, so shared
              memory counts against its limit. Killing the judge ends everything of that
              program: the kernel tears the namespaces down.
``container`` the executor is PID 1 of a Docker container, root with only the SETUID,
              SETGID and KILL capabilities. After each program it kills every process of the
              program's and the judge's uids and, as each of them in turn, removes their SysV
              IPC objects and deletes their files.

This file and its siblings must stay standard-library only: they are shipped into the jail
and the Docker image as source, and the host imports them only to unit-test pure parts.
"""

from __future__ import annotations

import collections
import fcntl
import gc
import json
import os
import select
import signal
import socket
import sys
import time

from sandbox import _candidate, _confine, _judge, _plain
from sandbox._seccomp import build_seccomp_filter

SLOTS = 8  # uids (and, as root in the jail, memory cgroups) rotate over this many programs
JUDGE_OOM_SCORE, PROGRAM_OOM_SCORE = 500, 1000
JUDGE_EXTRA_MEMORY_MB = 256  # room to decode the largest answer the bounds allow


def slot_uids(cfg: dict, n: int) -> tuple[int, int]:
    """(judge uid, program uid) of program ``n``: distinct per slot, so RLIMIT_NPROC,
    signals and file ownership never mix two programs, or a program and its judge."""
    if cfg.get("drop", "uid") != "uid":
        return cfg["uid"], cfg["uid"]  # user-namespace jail: only one uid is mapped
    slot = n % SLOTS
    return cfg["uid"] + SLOTS + slot, cfg["uid"] + slot


def _read_request(fd: int) -> dict:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    if not chunks:
        os._exit(0)  # the executor retired this pair before a program came
    return json.loads(b"".join(chunks))


def _ignore_signals() -> None:
    """The executor and template take no signal a sandboxed process could send (PID 1 of a
    container ignores those it has no handler for; elsewhere nothing can reach them)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                signal.SIGUSR2, signal.SIGALRM, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGXCPU):
        signal.signal(sig, signal.SIG_IGN)


# ---------------------------------------------------------------------------------------
# The two processes of a program (forked by the template)
# ---------------------------------------------------------------------------------------

def _program_process(cfg: dict, n: int, disk_mb: int, memory_mb: int, fds: dict) -> None:
    """Confine, say ready, wait for the program, run it and answer calls. Never returns."""
    _, uid = slot_uids(cfg, n)
    answers = fds["answers"]
    try:
        if cfg["mode"] == "jail":
            _confine.private_scratch(disk_mb, uid, memory_mb, own_proc_required=cfg.get("drop", "uid") == "uid")
            if cfg.get("cgroup"):
                _confine.join_cgroup(f"{cfg['cgroup']}/slot-{n % SLOTS}/cgroup.procs", cfg["cgroup"])
        os.setsid()
        _confine.arrange_fds({1: fds["out"], 2: fds["err"], 3: fds["requests"], 4: fds["answers"],
                              5: fds["program"]})
        answers = 4
        _confine.prefer_as_oom_victim(PROGRAM_OOM_SCORE)
        _confine.drop_privileges(cfg, uid)
        if cfg.get("drop") == "caps":
            _confine.prctl(_confine.PR_SET_DUMPABLE, 0)
        scratch = "/tmp"
        if cfg["mode"] == "container":  # a shared tmpfs: a directory of its own, made as its uid
            scratch = f"{cfg['scratch']}/run{n}-{os.urandom(6).hex()}"
            os.mkdir(scratch, 0o700)
        os.chdir(scratch)
        _confine.lock_down(cfg)
        _confine.python_defaults(scratch)
        _warm_up(judge=False)
        _plain.send(4, _candidate.READY)
    except BaseException as exc:
        try:
            _plain.send(answers, _candidate.SETUP_FAILED, f"{type(exc).__name__}: {exc}".encode()[:2000])
        except OSError:
            pass
        os._exit(71)
    req = _read_request(5)
    _confine.apply_limits(req["limits"])
    _candidate.serve(req["program"], 3, 4)


def _judge_process(cfg: dict, n: int, disk_mb: int, memory_mb: int, fds: dict) -> None:
    """Fork the program process, confine, wait for the tests, judge. Never returns."""
    judge_uid, _ = slot_uids(cfg, n)
    signal.set_wakeup_fd(-1)  # the template's: that fd number is about to mean something else
    report_fd = fds["report"]
    try:
        # The program: in the jail, PID 1 of a namespace nested in ours
        pidns = os.open("/proc/self/ns/pid", os.O_RDONLY) if cfg["mode"] == "jail" else None
        pid = _fork(lambda: _program_process(cfg, n, disk_mb, memory_mb, fds), pidns)
        if pidns is not None:
            os.close(pidns)
        os.setsid()
        _confine.arrange_fds({1: fds["out"], 2: fds["err"], 3: fds["report"], 4: fds["tests"],
                              5: fds["done"], 6: fds["to_program"], 7: fds["from_program"]})
        report_fd = 3
        _confine.prefer_as_oom_victim(JUDGE_OOM_SCORE)
        _confine.drop_privileges(cfg, judge_uid)
        _confine.prctl(_confine.PR_SET_DUMPABLE, 0)  # no /proc/<judge>/mem, fd or environ for anyone
        os.chdir("/")
        _confine.lock_down(cfg)
        _confine.python_defaults("/")
        link = _judge.ProgramLink(6, 7, pid)
        link.wait_ready()
        _warm_up(judge=True)
    except BaseException as exc:
        try:
            os.write(report_fd, f"I sandbox set-up failed: {_judge.clean(exc)}\n".encode())
        except OSError:
            pass
        os._exit(71)
    req = _read_request(4)
    report = _judge.Reporter(3)
    try:
        _confine.apply_limits(req["limits"], extra_memory_mb=JUDGE_EXTRA_MEMORY_MB, extra_cpu_s=1)
        _judge.run(req, report, link)
    except BaseException as exc:
        report("I", f"the judge failed: {type(exc).__name__}: {exc}")
    finally:
        _candidate.flush_output()  # the tests' own prints, before the answer is complete
        report("D", f"{_judge.cpu_seconds(link):.4f}")
        try:
            os.write(5, b"!")  # the one wake-up the executor waits for
        except OSError:
            pass
        os._exit(0)


def _fork(child, pidns: int | None) -> int:
    """Fork a process that runs ``child()`` and never returns; our pid. With ``pidns`` (a
    descriptor of our own PID namespace) the child is PID 1 of a fresh namespace nested in
    ours, and our later children are back in ours."""
    if pidns is not None:
        _confine.unshare(_confine.CLONE_NEWPID)
    try:
        pid = os.fork()
    except BaseException:
        if pidns is not None:
            _confine.setns(pidns, _confine.CLONE_NEWPID)
        raise
    if pid == 0:
        try:
            child()
        finally:
            os._exit(72)
    if pidns is not None:
        _confine.setns(pidns, _confine.CLONE_NEWPID)
    return pid


def _warm_up(judge: bool) -> None:
    """While waiting, touch what running a program (or judging it) touches: the
    copy-on-write page faults of a fresh fork happen now, not on the clock."""
    source = "def _f(a, b):\n    return a + b\nassert _f(1, 2) == 3\n"
    if judge:
        exec(_judge.compile_unit(source, 0), {"_cgrpo_truthy": bool,
                                               "_cgrpo_compare": lambda a, b, op: a == b})
    else:
        exec(compile(source, "warm.py", "exec"), {"__name__": "__warm__"})
    _plain.decode(_plain.encode(("add", (1, [2.5, "x"]), {"k": None})))
    json.loads('{"program": "x = 1", "units": [["test", "assert x"]], "limits": {"cpu_s": 1}}')


# ---------------------------------------------------------------------------------------
# The template: forks program pairs from a state no request ever touched
# ---------------------------------------------------------------------------------------

_PAIR_FDS = ("out", "err", "report", "done", "tests", "program", "pidfd")  # the executor's ends


def _spawn_pair(cfg: dict, n: int, disk_mb: int, memory_mb: int, pidns: int | None) -> tuple[int, list[int]]:
    """Fork the judge (which forks the program); return its pid and the executor's pipe ends."""
    ends: dict[str, int] = {}
    mine: dict[str, int] = {}
    for name, executor_reads in (("out", True), ("err", True), ("report", True), ("done", True),
                                 ("tests", False), ("program", False)):
        r, w = os.pipe2(os.O_CLOEXEC)
        mine[name], ends[name] = (r, w) if executor_reads else (w, r)
    fds = dict(ends)
    fds["requests"], fds["to_program"] = os.pipe2(os.O_CLOEXEC)
    fds["from_program"], fds["answers"] = os.pipe2(os.O_CLOEXEC)
    try:  # room for a long report while the executor is busy elsewhere
        fcntl.fcntl(ends["report"], fcntl.F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass
    pid = _fork(lambda: _judge_process(cfg, n, disk_mb, memory_mb, fds), pidns)
    for fd in fds.values():
        os.close(fd)
    # Opened before we could reap it: the executor signals and watches the judge through
    # this descriptor, never by pid (a pid is reused once the process is reaped).
    mine["pidfd"] = os.pidfd_open(pid)
    return pid, [mine[name] for name in _PAIR_FDS]


def _template_main(sock: socket.socket, cfg: dict) -> None:
    """Serve fork requests until the executor goes away; report each judge's exit."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    pidns = os.open("/proc/self/ns/pid", os.O_RDONLY) if cfg["mode"] == "jail" else None
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    while True:
        for fd, _ev in poller.poll():
            if fd == wake_r:
                while True:
                    try:
                        if not os.read(wake_r, 4096):
                            break
                    except BlockingIOError:
                        break
                _report_exits(sock)
                continue
            data, _fds, _flags, _addr = socket.recv_fds(sock, 4096, 0)
            if not data:
                os._exit(0)
            msg = json.loads(data)
            try:
                pid, ends = _spawn_pair(cfg, msg["n"], msg["disk_mb"], msg["memory_mb"], pidns)
            except Exception as exc:
                sock.sendall(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
                continue
            socket.send_fds(sock, [json.dumps({"pid": pid}).encode()], ends)
            for end in ends:
                os.close(end)


def _report_exits(sock: socket.socket) -> None:
    while True:
        try:
            pid, status, ru = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        sock.sendall(json.dumps({"exit": pid, "code": code, "signal": sig,
                                 "cpu": round(ru.ru_utime + ru.ru_stime, 4)}).encode())


class TemplateDied(Exception):
    """The template process is gone: this executor cannot fork programs any more."""


class Template:
    """The executor's handle on the template process."""

    def __init__(self, cfg: dict):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.pid = os.fork()
        if self.pid == 0:
            try:
                ours.close()
                _template_main(theirs, cfg)
            finally:
                os._exit(70)
        theirs.close()
        self.sock = ours
        self.exits: dict[int, dict] = {}
        self.forked: collections.deque = collections.deque()

    def _pump(self, timeout: float | None) -> bool:
        """Read one message (waiting up to ``timeout``; None: forever) and file it: a forked
        pair, a judge's exit, or a fork error. False when nothing came in time."""
        if timeout is not None:
            poller = select.poll()
            poller.register(self.sock.fileno(), select.POLLIN)
            if not poller.poll(timeout * 1000):
                return False
        data, fds, _flags, _addr = socket.recv_fds(self.sock, 4096, len(_PAIR_FDS))
        if not data:
            raise TemplateDied("the template process died")
        msg = json.loads(data)
        if "exit" in msg:
            self._remember(msg)
        elif "error" in msg:
            self.forked.append(RuntimeError(f"cannot fork a program: {msg['error']}"))
        else:
            self.forked.append((msg["pid"], dict(zip(fds, _PAIR_FDS))))
        return True

    def request_pair(self, n: int, disk_mb: int, memory_mb: int) -> None:
        """Ask for the next pair; it is forked while we do other things (see ``pair``)."""
        self.sock.sendall(json.dumps({"n": n, "disk_mb": disk_mb, "memory_mb": memory_mb}).encode())

    def pair(self) -> tuple[int, dict[int, str]]:
        """The pair asked for first and not yet taken: (judge pid, {fd: name})."""
        while not self.forked:
            self._pump(None)
        got = self.forked.popleft()
        if isinstance(got, Exception):
            raise got
        return got

    def exit_of(self, pid: int, wait_s: float) -> dict | None:
        """The judge's exit status, as the template reaped it (waiting up to ``wait_s``)."""
        deadline = time.monotonic() + wait_s
        while pid not in self.exits:
            if not self._pump(max(0.0, deadline - time.monotonic())):
                return None
        return self.exits.pop(pid)

    def _remember(self, msg: dict) -> None:
        self.exits[msg["exit"]] = msg
        while len(self.exits) > 64:  # judges nobody asked about (the fast path never does)
            del self.exits[next(iter(self.exits))]


# ---------------------------------------------------------------------------------------
# The executor loop
# ---------------------------------------------------------------------------------------

class Executor:
    """Serves requests from stdin; one judge + program pair per program."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.n = 0
        self.mode = cfg["mode"]
        self._spare: dict | None = None
        self._last: dict | None = None
        try:
            cfg["_filter"] = build_seccomp_filter()
            self.seccomp = "on"
        except (OSError, ValueError) as exc:
            cfg["seccomp"] = False
            self.seccomp = f"off ({exc})"
        if not cfg.get("seccomp", True) and self.seccomp == "on":
            self.seccomp = "off (disabled by config)"
        _confine.prctl(_confine.PR_SET_DUMPABLE, 0)
        for name in cfg.get("preimport", ()):
            try:
                __import__(name)
            except ImportError:
                pass
        gc.collect()
        gc.freeze()  # children never scan (so never copy-on-write) what is already here
        self.template = Template(cfg)

    # -- one program ---------------------------------------------------------------------
    def _prefork(self, disk_mb: int, memory_mb: int) -> None:
        """Ask the template for the next pair; it is collected when needed (``_spare_pair``),
        so the executor never waits for a fork while a program runs."""
        self.n += 1
        self.template.request_pair(self.n, disk_mb, memory_mb)
        self._spare = {"n": self.n, "disk_mb": disk_mb, "memory_mb": memory_mb, "fds": None}

    def _spare_pair(self) -> dict | None:
        """The spare, its pair collected from the template."""
        spare = self._spare
        if spare is not None and spare["fds"] is None:
            spare["pid"], spare["fds"] = self.template.pair()
            spare["pidfd"] = next(fd for fd, name in spare["fds"].items() if name == "pidfd")
        return spare

    def _retire_spare(self) -> None:
        spare = self._spare_pair()
        self._spare = None
        if spare:
            self._kill(spare)
            for fd in spare["fds"]:
                os.close(fd)

    def _take_spare(self, disk_mb: int, memory_mb: int) -> dict:
        """A confined pair for these limits that is still alive (a pair whose set-up failed
        has exited: it is replaced, so one bad fork never fails an honest program)."""
        for _attempt in range(3):
            spare = self._spare_pair()
            if spare is None or (spare["disk_mb"], spare["memory_mb"]) != (disk_mb, memory_mb) \
                    or not _alive(spare["pidfd"]):
                self._retire_spare()
                self._prefork(disk_mb, memory_mb)
                continue
            break
        spare = self._spare_pair()
        self._spare = None
        return spare

    def run(self, req: dict) -> dict:
        limits = req["limits"]
        disk_mb, memory_mb = int(limits["disk_mb"]), int(limits["memory_mb"])
        spare = self._take_spare(disk_mb, memory_mb)
        ends = {name: fd for fd, name in spare["fds"].items()}
        start = time.monotonic()
        try:
            for name, payload in (("program", {"program": req["program"], "limits": limits}),
                                  ("tests", {"units": req.get("units"), "names": req.get("names"),
                                             "limits": limits})):
                try:
                    _feed(ends[name], json.dumps(payload).encode())
                except OSError:
                    pass  # the pair died in set-up: its report says why
                os.close(ends[name])
            # The next pair is forked and confined while this one runs: it has the next
            # slot's uids (and, in the jail, namespaces of its own), so it sees nothing of
            # this one, and the container's sweep after this one leaves it alone.
            self._prefork(disk_mb, memory_mb)
            res = self._watch(spare, start, limits,
                              {fd: name for fd, name in spare["fds"].items()
                               if name in ("out", "err", "report", "done")})
        finally:
            for fd, name in spare["fds"].items():
                if name not in ("tests", "program"):
                    os.close(fd)
        res["id"] = req.get("id")
        self._last = spare
        return res

    def after_run(self) -> None:
        """Between programs (after the answer is sent): sweep, reap, pre-fork the next."""
        spare, self._last = self._last, None
        if self.mode == "container" and spare is not None:
            self._sweep(spare["n"])
            self._reap_orphans()
        if self._spare is None and spare is not None:
            self._prefork(spare["disk_mb"], spare["memory_mb"])

    def _watch(self, spare: dict, start: float, limits: dict, fds: dict) -> dict:
        """Collect output until the judge says done, it dies, or a limit hits.

        The fast path: the judge's last act is the ``D`` report line, then one byte on the
        done pipe, so the answer is complete when that byte arrives; the pair is then
        killed, and the kernel's namespace teardown overlaps the next program.
        """
        cap = int(limits["output_bytes"])
        bufs = {name: bytearray() for name in fds.values()}
        seen = 0
        timed_out = output_exceeded = done = False
        pidfd = spare["pidfd"]
        poller = select.poll()
        for fd in fds:
            os.set_blocking(fd, False)
            poller.register(fd, select.POLLIN)
        poller.register(pidfd, select.POLLIN)
        open_fds = set(fds)
        deadline = start + float(limits["wall_s"])
        stop_at = None  # once set: keep draining output until then, then stop

        def read(fd: int) -> bool:
            """Read what is there; False at EOF or when nothing is ready."""
            nonlocal seen, output_exceeded
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return False
            if not chunk:
                poller.unregister(fd)
                open_fds.discard(fd)
                return False
            name = fds[fd]
            buf = bufs[name]
            if name in ("report", "done"):
                if len(buf) < 1 << 20:
                    buf += chunk
                return True
            seen += len(chunk)
            room = cap - len(bufs["out"]) - len(bufs["err"])
            if room > 0:
                buf += chunk[:room]
            if seen > cap:
                output_exceeded = True
            return True

        while True:
            now = time.monotonic()
            if stop_at is None:
                if output_exceeded or done:
                    break
                if now >= deadline:
                    timed_out = True
                    self._kill(spare)
                    stop_at = now + 0.2
            if stop_at is not None and (now >= stop_at or not open_fds):
                break
            wait_s = (stop_at if stop_at is not None else deadline) - now
            for fd, _ev in poller.poll(max(0.0, wait_s) * 1000):
                if fd == pidfd:
                    poller.unregister(pidfd)
                    if stop_at is None:
                        stop_at = time.monotonic() + 0.5
                else:
                    read(fd)
                    if fds[fd] == "done" and bufs["done"] and stop_at is None:
                        done = True
        for fd in list(open_fds):  # what is already in the pipes belongs to the answer
            while fd in open_fds and read(fd):
                pass
        self._kill(spare)
        judge = None if done else self.template.exit_of(spare["pid"], 1.0)
        return {
            "exit": judge and judge["code"], "signal": judge and judge["signal"],
            "judge_cpu_s": judge["cpu"] if judge else None,
            "timed_out": timed_out, "output_exceeded": output_exceeded, "output_bytes": seen,
            "stdout": bufs["out"].decode("utf-8", "replace"),
            "stderr": bufs["err"].decode("utf-8", "replace"),
            "report": bufs["report"].decode("utf-8", "replace").split("\n"),
            "duration_s": round(time.monotonic() - start, 6),
        }

    @staticmethod
    def _kill(spare: dict) -> None:
        try:  # in the jail the judge is PID 1 of its namespace: this ends all of the program
            signal.pidfd_send_signal(spare["pidfd"], signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _sweep(self, n: int) -> None:
        """Container mode, after each program: kill every process of its two uids (the
        program's and the judge's), then, as each uid in turn, remove its SysV IPC objects
        and its files (we are root without CAP_DAC_OVERRIDE or CAP_SYS_ADMIN: only an
        owner may delete those)."""
        uids = set(slot_uids(self.cfg, n))
        for _ in range(20):  # a process forking during one pass is caught by the next
            victims = _processes_of(uids)
            if not victims:
                break
            for pidfd in victims:
                try:
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.close(pidfd)
        for uid in sorted(uids):
            os.seteuid(uid)
            try:
                _confine.remove_sysv_ipc()
                for root in self.cfg.get("wipe", ()):
                    _wipe(root)
            finally:
                os.seteuid(0)

    def _reap_orphans(self) -> None:
        """Container mode: we are PID 1, so processes a program left behind become our
        children when they die; reap them (the template is ours too: it must not die)."""
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.template.pid:
                raise TemplateDied("the template process died")

    # -- the loop --------------------------------------------------------------------------
    def serve(self, inp, out) -> None:
        hello = {"ready": True, "mode": self.mode, "pid": os.getpid(), "seccomp": self.seccomp,
                 "python": sys.version.split()[0], "uid": self.cfg["uid"],
                 "cgroup": "per program" if self.cfg.get("cgroup") else "off"}
        out.write(json.dumps(hello) + "\n")
        out.flush()
        self._prefork(int(self.cfg.get("disk_mb", 64)), int(self.cfg.get("memory_mb", 512)))
        for line in inp:
            if not line.strip():
                continue
            ran = False
            try:
                req = json.loads(line)
                if req.get("cmd") == "ping":
                    res = {"id": req.get("id"), "pong": True}
                else:
                    ran = True
                    res = self.run(req)
            except TemplateDied as exc:  # fatal: exit, and the host starts a fresh executor
                out.write(json.dumps({"id": None, "infra_error": str(exc)}) + "\n")
                out.flush()
                return
            except Exception as exc:  # an executor fault, reported, never fatal
                res = {"id": None, "infra_error": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps(res) + "\n")
            out.flush()
            if ran:
                try:
                    self.after_run()
                except TemplateDied:
                    return


def _alive(pidfd: int) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return not poller.poll(0)


def _feed(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view):]


def _processes_of(uids: set[int]) -> list[int]:
    """pidfds of the live processes whose real uid is in ``uids``. The pidfd is opened
    first and checked alive after the uid is read, so a reused pid is never signalled."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            pidfd = os.pidfd_open(int(name))
        except OSError:
            continue
        uid = None
        try:
            with open(f"/proc/{name}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        uid = int(line.split()[1])
                        break
        except OSError:
            pass
        if uid in uids and _alive(pidfd):
            found.append(pidfd)
        else:
            os.close(pidfd)
    return found


def _wipe(root: str) -> None:
    """Delete everything under ``root`` (not root itself) that this uid may delete."""
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        path = os.path.join(root, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, 0o700)
                _wipe(path)
                os.rmdir(path)
            else:
                os.unlink(path)
        except OSError:
            pass


PREIMPORT = ["ast", "array", "bisect", "collections", "copy", "dataclasses", "datetime",
             "decimal", "enum", "fractions", "functools", "hashlib", "heapq", "itertools",
             "json", "math", "operator", "random", "re", "reprlib", "statistics", "string",
             "symtable", "sys", "textwrap", "traceback", "typing", "unittest"]


def main(argv: list[str]) -> None:
    cfg = json.loads(argv[0]) if argv else {}
    cfg.setdefault("mode", "jail")
    cfg.setdefault("uid", 65534)
    cfg.setdefault("scratch", "/tmp")
    cfg.setdefault("preimport", PREIMPORT)
    _ignore_signals()
    # Started with -I -S: no site-packages, no .pth hooks of the host's installation. The
    # builtins `site` would add that programs do use (exit, quit) are added back here.
    import site

    site.setquit()
    inp = open(sys.stdin.fileno(), "r", encoding="utf-8", closefd=False)
    # The protocol stream moves to a high fd, so fds 3.. are never ours in a child.
    out = open(fcntl.fcntl(sys.stdout.fileno(), fcntl.F_DUPFD_CLOEXEC, 100), "w", encoding="utf-8")
    # Nothing a child inherits may reach our protocol stream: fd 1 becomes stderr.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    Executor(cfg).serve(inp, out)
