"""Where evaluation batches run: local worker processes (default) or a Ray cluster.

Both give the orchestrator the same messages, plain JSON-able dicts:
``{"kind": "row", "worker": n, "row": {...}}`` as each episode ends,
``{"kind": "done", "worker": n, "batch": b}`` when a batch has ended,
``{"kind": "error", "worker": n, "batch": b, "error": type name, "message": ...}`` when it failed, and
``{"kind": "died", "worker": n, "detail": ...}`` when the worker itself is gone. Everything crosses as JSON
text (pipes for local workers, Ray's object store for Ray), never as pickled objects.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing
import os
import signal
import threading
import time
import traceback
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from testbed.bridge.spawn import describe_exit
from testbed.errors import FeatureUnavailable, ScenarioError, TestbedError, WorkerFailed
from testbed.eval.tasks import WORKER_ENV, Batch, close_policy_servers, run_batch, worker_environment, worker_name
from testbed.interrupts import Terminated, raise_terminated
from testbed.quiet import import_pybullet_quietly

Message = dict[str, Any]
JOIN_DEAD_S = 5.0  # a worker whose pipe closed is dying: how long to wait for its exit code
# an aborted worker ends its runs (run_aborted, the ended episodes' files) before it is killed: how long it gets
ABORT_WAIT_S = 5.0
RAY_START_TIMEOUT_S = 300.0  # for every actor to start (a cluster with too few free CPUs never starts the rest)
RAY_CALL_TIMEOUT_S = 30.0  # for the queue actor to answer one call (a live one answers in milliseconds)


class Backend(Protocol):
    """Runs batches on numbered workers and reports what happens as messages."""

    workers: int

    def submit(self, worker: int, batch: Batch) -> None:
        """Start ``batch`` on idle worker ``worker``."""

    def poll(self, timeout_s: float) -> list[Message]:
        """Messages that arrived, waiting at most ``timeout_s`` for the first."""

    def describe(self, worker: int) -> str:
        """Where worker ``worker`` runs (``worker 2/2, pid 1234``)."""

    def close(self, *, abort: bool = False) -> None:
        """Stop the workers (at once when ``abort``)."""


def _error_message(worker: int, batch: Batch, exc: BaseException) -> Message:
    detail = str(exc) if isinstance(exc, TestbedError) else f"{exc}\n{traceback.format_exc()}"
    return {"kind": "error", "worker": worker, "batch": batch["batch"], "error": type(exc).__name__,
            "message": detail}


def _local_worker(conn: Connection, number: int, parent_pid: int) -> None:
    """A local worker's loop: run batches sent as JSON, answer with JSON messages; end with its parent."""
    # Ctrl-C reaches the whole process group: the orchestrator decides, workers carry on until told or ended
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # close(abort=True) terminates the worker: unwind as the command line does, so its runs end with run_aborted
    signal.signal(signal.SIGTERM, raise_terminated)
    import_pybullet_quietly()
    try:
        while True:
            if not conn.poll(1.0):
                if os.getppid() != parent_pid:
                    return  # the orchestrator was killed: stop instead of running on as an orphan
                continue
            msg = json.loads(conn.recv_bytes())
            if msg["kind"] == "stop":
                return
            batch = msg["batch"]

            def emit(row: dict[str, Any], batch: Batch = batch) -> None:
                conn.send_bytes(json.dumps({"kind": "row", "worker": number, "row": row}).encode())

            try:
                run_batch(batch, emit)
            except Exception as exc:
                conn.send_bytes(json.dumps(_error_message(number, batch, exc)).encode())
                continue
            conn.send_bytes(json.dumps({"kind": "done", "worker": number, "batch": batch["batch"]}).encode())
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return
    except Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        close_policy_servers()
        # end as terminated, so whoever watches the worker reads "killed by SIGTERM", as before the handler
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    finally:
        close_policy_servers()


class LocalBackend:
    """``workers`` spawned processes, one pybullet world each, fed over pipes.

    Raises:
        ScenarioError: ``workers`` is not positive.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ScenarioError(f"--workers: expected a positive number of processes, got {workers}")
        self.workers = workers
        # spawn, not fork: pybullet and gRPC keep threads and sockets a forked child must not inherit
        context = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        self._gone: set[int] = set()
        for number in range(workers):
            mine, theirs = context.Pipe(duplex=True)
            proc = context.Process(target=_local_worker, args=(theirs, number, os.getpid()),
                                   name=f"testbed-eval-worker-{number + 1}", daemon=True)
            with worker_environment():  # before the child imports numpy
                proc.start()
            theirs.close()
            self._conns.append(mine)
            self._procs.append(proc)

    def submit(self, worker: int, batch: Batch) -> None:
        """Send ``batch`` to worker ``worker``.

        Raises:
            WorkerFailed: the worker died since the last ``poll`` (its pipe is closed); the message says how.
        """
        try:
            self._conns[worker].send_bytes(json.dumps({"kind": "batch", "batch": batch}).encode())
        except OSError as exc:  # BrokenPipeError, ConnectionResetError: the worker's end of the pipe is gone
            proc = self._procs[worker]
            proc.join(JOIN_DEAD_S)  # reap it for its exit code; a closed pipe means it is ending
            raise WorkerFailed(f"evaluation {self.describe(worker)} died ({_exit_detail(proc.exitcode)}) before it "
                               f"could take batch {batch['batch']}") from exc

    def poll(self, timeout_s: float) -> list[Message]:
        """Messages from every worker, then a ``died`` for each worker that has ended (after its last words)."""
        live = [n for n in range(self.workers) if n not in self._gone]
        waitables: list[Any] = [self._conns[n] for n in live] + [self._procs[n].sentinel for n in live]
        ready = set(wait(waitables, timeout_s)) if waitables else set()
        out: list[Message] = []
        for n in live:
            conn, proc = self._conns[n], self._procs[n]
            ended = proc.sentinel in ready or not proc.is_alive()
            if conn in ready or ended:
                try:
                    while conn.poll():
                        out.append(json.loads(conn.recv_bytes()))
                except (EOFError, OSError):
                    ended = True
            if ended and not proc.is_alive():
                proc.join(0)
                self._gone.add(n)
                out.append({"kind": "died", "worker": n, "detail": _exit_detail(proc.exitcode)})
        return out

    def describe(self, worker: int) -> str:
        """``worker N/W (pid P)``."""
        return f"worker {worker + 1}/{self.workers} (pid {self._procs[worker].pid})"

    def close(self, *, abort: bool = False) -> None:
        """Ask each worker to stop, then reap it; kill it if it has not ended in time.

        ``abort`` stops a running batch at once: SIGTERM, which the worker turns into an interrupt, so its runs
        end with ``run_aborted`` within ``ABORT_WAIT_S`` (it is killed after that).
        """
        for n, proc in enumerate(self._procs):
            if not proc.is_alive():
                continue
            if abort:
                proc.terminate()
            else:
                with contextlib.suppress(OSError):
                    self._conns[n].send_bytes(json.dumps({"kind": "stop"}).encode())
        deadline = time.monotonic() + (ABORT_WAIT_S if abort else 10.0 * len(self._procs))
        for proc in self._procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(5.0)
        for conn in self._conns:
            conn.close()


def _exit_detail(code: int | None) -> str:
    return "ended" if code is None else describe_exit(code)


class StopRequested(Terminated):
    """Raised in a Ray actor's batch thread by ``EvalActor.stop``: the batch's runs end with ``run_aborted``."""

    def __str__(self) -> str:
        return "stopped by the evaluation"


class EvalActor:
    """A Ray actor: one process with one pybullet world at a time and its own policy servers, reused per batch.

    Its batches run one at a time; ``stop`` runs beside them in the ``control`` concurrency group.
    """

    def __init__(self, number: int) -> None:
        self.number = number
        self._lock = threading.Lock()
        self._batch_thread: int | None = None  # the thread running a batch, while one runs
        import_pybullet_quietly()

    def where(self) -> str:
        """``<hostname>:<pid>`` of the actor's process."""
        return worker_name()

    def shutdown(self) -> None:
        """Stop the policy servers this actor started (before the actor is killed)."""
        close_policy_servers()

    def stop(self) -> bool:
        """Interrupt the running batch (``StopRequested`` in its thread), as SIGTERM does a local worker's.

        Called in the ``control`` concurrency group, beside ``run_batch``; False when no batch is running.
        """
        with self._lock:
            if self._batch_thread is None:
                return False
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._batch_thread),
                                                       ctypes.py_object(StopRequested))
            # one stop per batch: if it lands in the batch's own cleanup, a second stop must not reach the
            # thread after it went back to Ray's pool
            self._batch_thread = None
            return True

    def run_batch(self, batch_json: str, queue: Any) -> str:
        """Run one batch; rows go to ``queue`` as JSON text as they end; returns the done/error message as JSON."""
        import ray

        batch = json.loads(batch_json)

        def emit(row: dict[str, Any]) -> None:
            text = json.dumps({"kind": "row", "worker": self.number, "row": row})
            try:
                ray.get(queue.actor.put_nowait.remote(text), timeout=RAY_CALL_TIMEOUT_S)
            except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as exc:
                raise WorkerFailed(f"Ray worker {self.number + 1} could not hand a result row to the evaluation's "
                                   f"queue actor within {RAY_CALL_TIMEOUT_S:g} s ({type(exc).__name__})") from exc

        try:
            with self._lock:
                self._batch_thread = threading.get_ident()
            try:
                run_batch(batch, emit)
            finally:
                with self._lock:
                    self._batch_thread = None
            return json.dumps({"kind": "done", "worker": self.number, "batch": batch["batch"]})
        except (Exception, StopRequested) as exc:  # a stop may land just after the batch ended: still this call's
            return json.dumps(_error_message(self.number, batch, exc))


def import_ray() -> Any:
    """Ray, imported on first use.

    Raises:
        FeatureUnavailable: the ``cluster`` extra is not installed.
    """
    try:
        import ray
    except ImportError as exc:
        raise FeatureUnavailable(f"--ray: Ray is not installed; install the cluster extra: "
                                 f"pip install 'testbed[cluster]' ({exc})") from exc
    return ray


class RayBackend:
    """``workers`` Ray actors (one CPU each) on a local instance (``address='local'``) or a running cluster.

    Raises:
        FeatureUnavailable: Ray is not installed.
        ScenarioError: the cluster cannot be reached.
    """

    def __init__(self, workers: int, address: str) -> None:
        if workers < 1:
            raise ScenarioError(f"--workers: expected a positive number of processes, got {workers}")
        ray = import_ray()
        self._ray = ray
        self.workers = workers
        self._owns = not ray.is_initialized()
        self._signalled: BaseException | None = None
        on_term = signal.getsignal(signal.SIGTERM)
        try:
            if address == "local":
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                         configure_logging=False, ignore_reinit_error=True)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False, ignore_reinit_error=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ScenarioError(f"--ray {address}: cannot start or reach Ray ({exc}); expected 'local' or the "
                                "address of a running cluster (e.g. 10.0.0.5:6379)") from exc
        finally:
            # ray.init replaces a SIGTERM handler with its own (kill the local Ray processes, exit 1): keep the
            # caller's (the command line's Terminated), so the evaluation unwinds, stops its actors and ends its runs
            if callable(on_term) and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, self._noting(on_term))
        from ray.util.queue import Queue

        self._queue = Queue()
        actor = ray.remote(num_cpus=1, runtime_env={"env_vars": dict(WORKER_ENV)},
                           concurrency_groups={"control": 1})(EvalActor)
        self._actors = [actor.remote(n) for n in range(workers)]
        self._running: dict[Any, int] = {}
        try:
            with self._signals_kept():
                self._where = ray.get([a.where.remote() for a in self._actors], timeout=RAY_START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError as exc:
            cpus = ray.cluster_resources().get("CPU", 0)
            self.close(abort=True)
            raise ScenarioError(f"--ray {address}: {workers} actor(s) of one CPU each did not all start within "
                                f"{RAY_START_TIMEOUT_S:g} s; expected {workers} free CPUs in the cluster (it has "
                                f"{cpus:g} in all); lower --workers") from exc

    def _noting(self, handler: Any) -> Any:
        """``handler`` (a SIGTERM handler), noting the exception it raises for ``_signals_kept``."""

        def on_signal(signum: int, frame: Any) -> None:
            try:
                handler(signum, frame)
            except BaseException as exc:
                self._signalled = exc
                raise

        return on_signal

    @contextlib.contextmanager
    def _signals_kept(self) -> Any:
        """Ray's blocking calls turn what a signal handler raises into a bare KeyboardInterrupt: raise the
        handler's own instead (the command line's ``Terminated``: the evaluation ends "terminated by SIGTERM")."""
        self._signalled = None
        try:
            yield
        except KeyboardInterrupt as exc:
            signalled, self._signalled = self._signalled, None
            if signalled is None or type(exc) is not KeyboardInterrupt:
                raise
            raise signalled from None

    def submit(self, worker: int, batch: Batch) -> None:
        """Call ``run_batch`` on actor ``worker``."""
        ref = self._actors[worker].run_batch.remote(json.dumps(batch), self._queue)
        self._running[ref] = worker

    def poll(self, timeout_s: float) -> list[Message]:
        """Rows from the queue, then the batches that ended (their rows were queued before they returned).

        Raises:
            WorkerFailed: the queue actor did not answer within ``RAY_CALL_TIMEOUT_S`` or is gone.
        """
        with self._signals_kept():
            return self._poll(timeout_s)

    def _poll(self, timeout_s: float) -> list[Message]:
        ray = self._ray
        ready: list[Any] = []
        if self._running:
            ready, _ = ray.wait(list(self._running), num_returns=len(self._running), timeout=timeout_s)
        out: list[Message] = [json.loads(text) for text in self._drain()]
        for ref in ready:
            worker = self._running.pop(ref)
            try:
                out.append(json.loads(ray.get(ref, timeout=RAY_CALL_TIMEOUT_S)))
            except ray.exceptions.RayActorError as exc:
                out.append({"kind": "died", "worker": worker, "detail": f"Ray actor died ({exc})"})
            except ray.exceptions.RayError as exc:
                out.append({"kind": "error", "worker": worker, "batch": None, "error": type(exc).__name__,
                            "message": str(exc)})
        return out

    def _drain(self) -> list[str]:
        """The rows queued so far, each call to the queue actor bounded by ``RAY_CALL_TIMEOUT_S``.

        Raises:
            WorkerFailed: the queue actor did not answer in time or is gone.
        """
        ray, queue = self._ray, self._queue.actor
        try:
            size = ray.get(queue.qsize.remote(), timeout=RAY_CALL_TIMEOUT_S)
            return list(ray.get(queue.get_nowait_batch.remote(size), timeout=RAY_CALL_TIMEOUT_S)) if size else []
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as exc:
            what = f"did not answer within {RAY_CALL_TIMEOUT_S:g} s" if isinstance(
                exc, ray.exceptions.GetTimeoutError) else f"is gone ({exc})"
            raise WorkerFailed(f"the Ray queue actor that carries the workers' result rows {what}; the rows it "
                               "held are lost with it") from exc

    def describe(self, worker: int) -> str:
        """``Ray worker N/W (host:pid)``."""
        return f"Ray worker {worker + 1}/{self.workers} ({self._where[worker]})"

    def close(self, *, abort: bool = False) -> None:
        """Stop the actors (their policy servers end with them) and a local Ray instance this backend started.

        ``abort`` first asks each running batch to stop (``EvalActor.stop``), so its runs end with ``run_aborted``,
        and waits up to ``ABORT_WAIT_S`` for them before killing the actors.
        """
        ray = self._ray
        if abort and self._running:
            with contextlib.suppress(Exception):
                for worker in set(self._running.values()):
                    self._actors[worker].stop.options(concurrency_group="control").remote()
                ray.wait(list(self._running), num_returns=len(self._running), timeout=ABORT_WAIT_S)
        if not abort:
            with contextlib.suppress(Exception):
                ray.get([a.shutdown.remote() for a in self._actors], timeout=15)
        for actor in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        if self._owns:
            ray.shutdown()
