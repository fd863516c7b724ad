"""Job parsing and planning in a child process, away from the interpreter that ticks a control loop.

Parsing a job's YAML takes ~6 ms and planning it tens of ms (IK along every path): pure Python
that holds the GIL. On a thread of the process that ticks a 1 kHz loop, every such stretch
delays the ticking thread by up to the interpreter's switch interval (5 ms), so a thread alone
does not keep the loop on time. ``JobPlanningProcess`` parses and plans in a child process;
the calling thread only waits on a pipe, with the GIL released.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from testbed.control.job import Job, JobProgram, parse_job_text, plan_job
from testbed.control.kinematics import KinematicChain
from testbed.errors import ControllerError, JobError, TestbedError

_POLL_S = 0.05  # how often a waiting caller checks that the child is still alive


class JobPlanningProcess:
    """A child process that parses and plans jobs, one request at a time (callers are serialized).

    The child starts with the first request. If it dies, the request in progress fails with a
    ``ControllerError`` naming its pid and exit code, as does the first request after a death
    noticed while idle; the request after that starts a new child.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one request on the pipe at a time
        self._proc: subprocess.Popen[bytes] | None = None
        self._send: Connection | None = None
        self._recv: Connection | None = None
        self._busy = False
        self._requests = 0

    @property
    def pid(self) -> int | None:
        """The child's process id, None before the first request (or after a death was reported)."""
        proc = self._proc
        return None if proc is None else proc.pid

    @property
    def alive(self) -> bool:
        """True while the child runs (False before the first request and once it ended)."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def requests(self) -> int:
        """Requests (parse or plan) handed to a child so far."""
        return self._requests

    @property
    def busy(self) -> bool:
        """True while a request is with the child."""
        return self._busy

    def parse(self, job_yaml: str, *, source: str = "job_yaml") -> Job:
        """Parse and check a job's YAML text in the child.

        Raises:
            JobError: not valid YAML, or an invalid job (naming ``source:line``).
            ControllerError: the child process died.
        """
        return self._request("parse", (job_yaml, source))  # type: ignore[no-any-return]

    def plan(self, job: Job, model: Any, q_start: np.ndarray, *, speed_scale: float = 1.0) -> JobProgram:
        """Plan ``job`` for ``model`` from ``q_start`` in the child (see ``plan_job``); blended, ready to run.

        Raises:
            JobError: a pose is unreachable or a move breaks a limit (naming the line).
            ControllerError: the child process died.
        """
        q = np.array(q_start, dtype=np.float64)
        return self._request("plan", (job, model, q, float(speed_scale)))  # type: ignore[no-any-return]

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the child and wait for it.

        Raises:
            ControllerError: the child did not end within ``timeout_s`` (it was then killed).
        """
        with self._lock:
            proc, send = self._proc, self._send
            if proc is None or send is None:
                return
            with contextlib.suppress(OSError):  # already gone
                send.send(None)
            self._drop()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)
            raise ControllerError(
                f"job planning process (pid {proc.pid}) did not end within {timeout_s:g} s of close(); it was killed"
            ) from None

    def __enter__(self) -> JobPlanningProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, kind: str, args: tuple[Any, ...]) -> object:
        with self._lock:
            if self._proc is not None and self._proc.poll() is not None:
                raise self._died("had died while idle; a new one starts with the next job: send the job again")
            if self._proc is None:
                self._start()
            assert self._proc is not None and self._send is not None and self._recv is not None
            self._busy = True
            self._requests += 1
            try:
                try:
                    self._send.send((kind, args))
                    while not self._recv.poll(_POLL_S):
                        if self._proc.poll() is not None:
                            raise self._died(f"died while working on a {kind} request; the next job starts a new one")
                    status, value = self._recv.recv()
                except (EOFError, OSError) as exc:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self._proc.wait(1.0)
                    raise self._died(f"died while working on a {kind} request ({exc!r}); the next job starts a "
                                     "new one") from exc
            finally:
                self._busy = False
        if status == "ok":
            return value
        if status == "error":
            raise value
        raise RuntimeError(f"job planning process raised an unexpected error (a bug in the testbed):\n{value}")

    def _start(self) -> None:
        # a fresh interpreter running this module, not multiprocessing's spawn: spawn re-imports the
        # caller's __main__, which breaks scripts without a __main__ guard; fork would copy gRPC's threads
        to_child_r, to_child_w = os.pipe()
        to_parent_r, to_parent_w = os.pipe()
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # where the testbed package lives
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", f"from testbed.control.job_process import _main; _main({to_child_r}, "
                 f"{to_parent_w})"],
                pass_fds=(to_child_r, to_parent_w), env=env, stdin=subprocess.DEVNULL, close_fds=True,
            )
        except OSError as exc:
            for fd in (to_child_r, to_child_w, to_parent_r, to_parent_w):
                os.close(fd)
            raise ControllerError(f"job planning process: cannot start {sys.executable}: {exc}") from exc
        os.close(to_child_r)
        os.close(to_parent_w)
        self._proc = proc
        self._send = Connection(to_child_w, readable=False)
        self._recv = Connection(to_parent_r, writable=False)

    def _died(self, what: str) -> ControllerError:
        proc = self._proc
        self._drop()
        return ControllerError(f"job planning process (pid {proc.pid}, exit code {proc.poll()}) {what}")

    def _drop(self) -> None:
        for conn in (self._send, self._recv):
            if conn is not None:
                conn.close()
        self._proc = self._send = self._recv = None


def _main(read_fd: int, write_fd: int) -> None:
    """Entry point of the child process (started by ``JobPlanningProcess``)."""
    _serve(Connection(read_fd, writable=False), Connection(write_fd, readable=False))


def _serve(requests: Connection, replies: Connection) -> None:
    """The child's loop: answer requests until the parent sends None or goes away."""
    _leave_realtime()
    chains: dict[tuple[str, str], KinematicChain] = {}
    while True:
        try:
            msg = requests.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        kind, args = msg
        try:
            if kind == "parse":
                reply: tuple[str, object] = ("ok", _parse(*args))
            else:
                reply = ("ok", _plan(chains, *args))
        except TestbedError as exc:
            reply = ("error", exc)
        except Exception:  # a bug: the parent raises it with this traceback, the child goes on serving
            reply = ("bug", traceback.format_exc())
        replies.send(reply)


def _parse(job_yaml: str, source: str) -> Job:
    try:
        yaml.safe_load(job_yaml)
    except yaml.YAMLError as exc:
        raise JobError(f"{source}: not valid YAML: {exc}") from None
    return parse_job_text(job_yaml, source=source)


def _plan(chains: dict[tuple[str, str], KinematicChain], job: Job, model: Any, q_start: np.ndarray,
          speed_scale: float) -> JobProgram:
    key = (str(model.urdf_path), str(model.tcp_link))
    chain = chains.get(key)
    if chain is None:
        chain = chains[key] = KinematicChain.from_urdf(model.urdf_path, model.tcp_link)
    return plan_job(job, model, q_start, chain=chain, speed_scale=speed_scale).program


def _leave_realtime() -> None:
    """Planning is background work: it must not compete for the CPU with the process that ticks the loop.

    A thread of that process holding the GIL while the OS runs this child instead leaves the
    ticking thread waiting for the GIL (priority inversion through the GIL), so the child drops
    any real-time policy it inherited and runs at the lowest priority.
    """
    setter = getattr(os, "sched_setscheduler", None)
    try:
        if setter is not None and os.sched_getscheduler(0) != os.SCHED_OTHER:
            setter(0, os.SCHED_OTHER, os.sched_param(0))
        os.nice(19 - os.nice(0))
    except OSError:
        return
