"""Job parsing and planning in a child process, away from the interpreter that ticks a control loop.

Parsing a job's YAML takes ~6 ms and planning it tens of ms (IK along every path): pure Python
that holds the GIL. On a thread of the process that ticks a 1 kHz loop, every such stretch
delays the ticking thread by up to the interpreter's switch interval (5 ms), so a thread alone
does not keep the loop on time. ``JobPlanningProcess`` parses and plans in a child process;
the calling thread only waits on a pipe, with the GIL released. ``submit_plan`` does not wait at
all: a thread of this process hands the request over and waits for the reply, and a control
loop's thread polls the returned future each cycle.
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import Future
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
        # ``submit_plan``: requests in order, served by one thread started with the first
        self._submitted: queue.SimpleQueue[_Submitted | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self._closing = False  # a request that fails meanwhile failed because of close()

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

    def submit_plan(self, job: Job, model: Any, q_start: np.ndarray, *, speed_scale: float = 1.0
                    ) -> Future[JobProgram]:
        """Ask for ``plan(job, model, q_start)`` without waiting for it: the future gives the program.

        Only queues the request (the first call also starts the thread that serves the queue), so
        a control loop's thread may call it and check ``future.done()`` in later cycles. Requests
        are planned one at a time, in the order submitted. The future fails as ``plan`` raises:
        ``JobError`` for a job that cannot run from ``q_start``, ``ControllerError`` if the child
        died. ``close`` cancels the requests not yet started.
        """
        q = np.array(q_start, dtype=np.float64)
        future: Future[JobProgram] = Future()
        with self._worker_lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve_submitted, name="job-planning", daemon=True)
                self._worker.start()
            self._submitted.put(_Submitted(future, job, model, q, float(speed_scale)))
        return future

    def close(self, timeout_s: float = 5.0) -> None:
        """End the child now: plans submitted and not started are cancelled, a request in progress fails
        (``ControllerError``: the child is killed; nobody waits for a plan once its user closes), and an idle
        child is asked to exit, then killed if it has not within ``timeout_s`` (at nice 19 on a busy machine it
        may not get the CPU to go).

        Raises:
            ControllerError: the thread serving ``submit_plan`` did not end within ``timeout_s`` although its
                request failed (a bug).
        """
        self._closing = True
        try:
            self._stop_worker(timeout_s)
        finally:
            try:
                self._close_child(timeout_s)
            finally:
                self._closing = False

    def _close_child(self, timeout_s: float) -> None:
        self._kill_if_busy()  # another thread's plan() or parse() holds the lock until its request ends
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
            proc.kill()  # asked to exit, and slow to: nothing it holds is needed any more
            proc.wait()

    def _kill_if_busy(self) -> None:
        proc = self._proc
        if self._busy and proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()

    def __enter__(self) -> JobPlanningProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve_submitted(self) -> None:
        _leave_realtime(nice=False)  # background work, and the child it starts must not inherit a real-time policy
        while True:
            item = self._submitted.get()
            if item is None:
                return
            if not item.future.set_running_or_notify_cancel():
                continue
            try:
                program = self.plan(item.job, item.model, item.q_start, speed_scale=item.speed_scale)
            except BaseException as exc:  # JobError, ControllerError or a bug: that request's caller gets it
                if self._closing and isinstance(exc, ControllerError):
                    closed = ControllerError("job planning process: closed while it planned this job")
                    closed.__cause__ = exc
                    exc = closed
                item.future.set_exception(exc)
            else:
                item.future.set_result(program)

    def _stop_worker(self, timeout_s: float) -> None:
        """End the ``submit_plan`` thread: cancel what has not started, fail the plan in progress."""
        with self._worker_lock:
            worker, self._worker = self._worker, None
            if worker is None:
                return
            with contextlib.suppress(queue.Empty):
                while True:
                    item = self._submitted.get_nowait()
                    if item is not None:
                        item.future.cancel()
            self._submitted.put(None)
        deadline = time.monotonic() + timeout_s
        while worker.is_alive() and time.monotonic() < deadline:
            self._kill_if_busy()  # also a plan the thread took just now
            worker.join(_POLL_S)
        if worker.is_alive():
            raise ControllerError(f"job planning process: the thread serving submitted plans did not end within "
                                  f"{timeout_s:g} s of close() although its child was killed")

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


class _Submitted:
    """A ``submit_plan`` request waiting for the thread that serves them."""

    __slots__ = ("future", "job", "model", "q_start", "speed_scale")

    def __init__(self, future: Future[JobProgram], job: Job, model: Any, q_start: np.ndarray,
                 speed_scale: float) -> None:
        self.future = future
        self.job = job
        self.model = model
        self.q_start = q_start
        self.speed_scale = speed_scale


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


def _leave_realtime(*, nice: bool = True) -> None:
    """Planning is background work: it must not compete for the CPU with the process that ticks the loop.

    A thread of that process holding the GIL while the OS runs this child instead leaves the
    ticking thread waiting for the GIL (priority inversion through the GIL), so the child drops
    any real-time policy it inherited and runs at the lowest priority (``nice``). On Linux this
    changes the calling thread only (and what it starts later): ``submit_plan``'s thread drops
    the run loop's real-time policy with ``nice=False``.
    """
    setter = getattr(os, "sched_setscheduler", None)
    try:
        if setter is not None and os.sched_getscheduler(0) != os.SCHED_OTHER:
            setter(0, os.SCHED_OTHER, os.sched_param(0))
        if nice:
            os.nice(19 - os.nice(0))
    except OSError:
        return
