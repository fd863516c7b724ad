"""``testbed.v1.ControllerService``: outside callers see and drive the cell's robots over gRPC.

The server is a synchronous ``grpc.server`` on its own thread pool (one thread per
open call), so a run loop can start it, keep ticking, and stop it. Requests are checked before they
reach a controller: an unknown robot, a wrong joint count, a bad dtype or NaN/inf is
answered with ``INVALID_ARGUMENT`` naming the field; a transition the lifecycle refuses
(or a set-point for a robot that is not ACTIVE) with ``FAILED_PRECONDITION``; a job
when no job language is available with ``UNIMPLEMENTED``; a control loop that is not
ticking, or whose ticking thread died ("control loop died: ..."), with ``UNAVAILABLE`` (a
command that waited in vain is dropped, except a stop: it stays queued and applies at the
loop's next cycle, however late). ``FollowTrajectory`` streams feedback read from the
backend's bounded queue, the result last; an invalid goal is ``INVALID_ARGUMENT``
before anything moves, and a cancelled call stops its trajectory (the robot holds).
Security follows the policy server: bearer token checked by the same interceptor
(``UNAUTHENTICATED``), refused to listen beyond loopback without one, optional TLS
(mutual with a client CA), message size caps, health service.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from testbed.bridge import codec
from testbed.bridge.controller_backend import ControllerBackend, LoopDied, RobotSnapshot, Transition
from testbed.bridge.generated import common_pb2, controller_pb2, controller_pb2_grpc
from testbed.bridge.handles import GrpcServerHandle, format_address
from testbed.bridge.server import TokenInterceptor, channel_options, is_loopback
from testbed.bridge.trajectory_goals import TrajectoryFeedback, TrajectoryResultCode
from testbed.control import TrajectoryPoint
from testbed.errors import (
    BridgeConfigError,
    ControllerError,
    FeatureUnavailable,
    InvalidCommand,
    JobError,
    SpecMismatch,
)

SERVICE_NAME = "testbed.v1.ControllerService"
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
DEFAULT_COMMAND_TIMEOUT_S = 2.0
_T = TypeVar("_T")

_TRANSITIONS = {
    controller_pb2.TRANSITION_ACTIVATE: Transition.ACTIVATE,
    controller_pb2.TRANSITION_DEACTIVATE: Transition.DEACTIVATE,
    controller_pb2.TRANSITION_RESET: Transition.RESET,
    controller_pb2.TRANSITION_PROTECTIVE_STOP: Transition.PROTECTIVE_STOP,
    controller_pb2.TRANSITION_EMERGENCY_STOP: Transition.EMERGENCY_STOP,
}

_RESULT_CODES = {
    TrajectoryResultCode.SUCCESSFUL: controller_pb2.TRAJECTORY_RESULT_SUCCESSFUL,
    TrajectoryResultCode.INVALID_GOAL: controller_pb2.TRAJECTORY_RESULT_INVALID_GOAL,
    TrajectoryResultCode.PATH_TOLERANCE_VIOLATED: controller_pb2.TRAJECTORY_RESULT_PATH_TOLERANCE_VIOLATED,
    TrajectoryResultCode.GOAL_TOLERANCE_VIOLATED: controller_pb2.TRAJECTORY_RESULT_GOAL_TOLERANCE_VIOLATED,
    TrajectoryResultCode.PREEMPTED: controller_pb2.TRAJECTORY_RESULT_PREEMPTED,
    TrajectoryResultCode.ABORTED: controller_pb2.TRAJECTORY_RESULT_ABORTED,
}


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS server; with ``client_ca`` clients must present a certificate it signed."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """gRPC server credentials.

        Raises:
            BridgeConfigError: a file is missing.
        """
        for field, path in (("cert", self.cert), ("key", self.key), ("client_ca", self.client_ca)):
            if path is not None and not Path(path).is_file():
                raise BridgeConfigError(f"controller server tls.{field} {path}: file not found")
        pair = (Path(self.key).read_bytes(), Path(self.cert).read_bytes())
        client_ca = Path(self.client_ca).read_bytes() if self.client_ca is not None else None
        return grpc.ssl_server_credentials(
            [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
        )


def snapshot_to_message(snap: RobotSnapshot) -> controller_pb2.RobotState:
    """A ``RobotState`` message from a backend snapshot."""
    return controller_pb2.RobotState(
        robot=snap.robot,
        lifecycle_state=snap.lifecycle_state,
        joint_pos_rad=codec.encode_tensor(snap.joint_pos_rad, "joint_pos_rad"),
        joint_vel_rad_s=codec.encode_tensor(snap.setpoint_vel_rad_s, "joint_vel_rad_s"),
        gripper_on=snap.gripper_on,
        t_s=snap.t_s,
        protective_stop=snap.protective_stop,
        job=snap.job,
        setpoint_rad=codec.encode_tensor(snap.setpoint_rad, "setpoint_rad"),
        speed_scale=snap.speed_scale,
        last_error=snap.last_error,
        cycle=snap.cycle,
    )


def feedback_to_message(item: TrajectoryFeedback, dropped: int = 0) -> controller_pb2.TrajectoryFeedback:
    """A ``TrajectoryFeedback`` message from a backend feedback item (``result`` set on the last one)."""
    msg = controller_pb2.TrajectoryFeedback(
        t_s=item.t_s,
        time_from_start_s=item.time_from_start_s,
        desired=codec.encode_tensor(item.desired, "desired"),
        actual=codec.encode_tensor(item.actual, "actual"),
        error=codec.encode_tensor(item.error, "error"),
        dropped=dropped,
    )
    if item.result is not None:
        msg.result.code = _RESULT_CODES[item.result.code]
        msg.result.text = item.result.text
    return msg


def points_from_request(request: controller_pb2.FollowTrajectoryRequest) -> list[TrajectoryPoint]:
    """The request's points as ``TrajectoryPoint`` (an empty velocities/accelerations field means none)."""
    return [
        TrajectoryPoint(
            positions=list(p.positions),
            time_from_start_s=p.time_from_start_s,
            velocities=list(p.velocities) if p.velocities else None,
            accelerations=list(p.accelerations) if p.accelerations else None,
        )
        for p in request.points
    ]


class ControllerServicer(controller_pb2_grpc.ControllerServiceServicer):
    """``ControllerService`` over a ``ControllerBackend``.

    Args:
        backend: the controllers.
        command_timeout_s: how long a command may wait for the control loop's next cycle.
    """

    def __init__(self, backend: ControllerBackend, *, command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S) -> None:
        self._backend = backend
        self._timeout_s = command_timeout_s
        self.streams_open = 0

    def ListRobots(
        self, request: controller_pb2.ListRobotsRequest, context: grpc.ServicerContext
    ) -> controller_pb2.ListRobotsResponse:
        out = controller_pb2.ListRobotsResponse()
        for desc in self._backend.robots():
            snap = self._backend.snapshot(desc.name)
            out.robots.append(
                controller_pb2.RobotInfo(
                    name=desc.name,
                    model=desc.model,
                    joint_names=desc.joint_names,
                    lifecycle_state=snap.lifecycle_state,
                    cycle_ms=desc.cycle_s * 1e3,
                    joint_types=desc.joint_types,
                    lower=desc.lower.tolist(),
                    upper=desc.upper.tolist(),
                    velocity_max=desc.velocity_max.tolist(),
                    acceleration_max=desc.acceleration_max.tolist(),
                    speed_scale=snap.speed_scale,
                )
            )
        return out

    def GetState(self, request: controller_pb2.GetStateRequest, context: grpc.ServicerContext
                 ) -> controller_pb2.RobotState:
        try:
            snap = self._backend.snapshot(request.robot)
        except _EXPECTED as exc:
            _abort(context, exc)
        return snapshot_to_message(snap)

    def ChangeState(
        self, request: controller_pb2.ChangeStateRequest, context: grpc.ServicerContext
    ) -> controller_pb2.ChangeStateResponse:
        transition = _TRANSITIONS.get(request.transition)
        if transition is None:
            known = ", ".join(controller_pb2.Transition.Name(v) for v in _TRANSITIONS)
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"transition: expected one of {known}, got {request.transition}",
            )
        late = None
        if transition in (Transition.PROTECTIVE_STOP, Transition.EMERGENCY_STOP):
            late = (f"the {transition.name} is queued, not lost: the control loop ran no cycle within "
                    f"{self._timeout_s:g} s, and the stop applies at its next cycle however late "
                    "(is the run paused, finished or not started?)")
        try:
            state = self._wait(self._backend.change_state(request.robot, transition), late=late)
        except _EXPECTED as exc:
            _abort(context, exc)
        return controller_pb2.ChangeStateResponse(lifecycle_state=state)

    def SendJob(
        self, request: controller_pb2.SendJobRequest, context: grpc.ServicerContext
    ) -> controller_pb2.SendJobResponse:
        try:
            name = self._wait(self._backend.send_job(request.robot, request.job_yaml), late=(
                f"the job did not start within {self._timeout_s:g} s (it is planned in a child process first; "
                "a long job, a busy machine or a loop that stopped ticking); it was cancelled and the robot holds"))
        except _EXPECTED as exc:
            _abort(context, exc)
        return controller_pb2.SendJobResponse(job=name)

    def StreamSetpoints(
        self, request_iterator: Iterator[controller_pb2.Setpoint], context: grpc.ServicerContext
    ) -> Iterator[controller_pb2.RobotState]:
        streamed: set[str] = set()
        self.streams_open += 1
        try:
            # the loop ends normally only when the client closes its side; a cancelled or broken
            # call raises out of it, and the robot's stream timeout then stops it
            for msg in request_iterator:
                try:
                    targets = _decode_targets(msg.joint_pos_rad)
                    future = self._backend.stream_setpoints(
                        msg.robot, targets, dt_s=msg.dt_s or None, gripper_on=msg.gripper_on
                    )
                    streamed.add(msg.robot)
                    snap = self._wait(future)
                except _EXPECTED as exc:
                    _abort(context, exc)
                yield snapshot_to_message(snap)
            # a normal end of the stream: reach the last set-point and hold (no stream-timeout stop)
            for robot in streamed:
                self._backend.end_stream(robot)
        finally:
            self.streams_open -= 1

    def FollowTrajectory(
        self, request: controller_pb2.FollowTrajectoryRequest, context: grpc.ServicerContext
    ) -> Iterator[controller_pb2.TrajectoryFeedback]:
        try:
            handle = self._backend.follow_trajectory(
                request.robot,
                points_from_request(request),
                joint_names=list(request.joint_names) or None,
                path_tolerance=list(request.path_tolerance) or None,
                goal_tolerance=list(request.goal_tolerance) or None,
                goal_time_tolerance_s=(
                    request.goal_time_tolerance_s if request.HasField("goal_time_tolerance_s") else None
                ),
            )
        except _EXPECTED as exc:
            _abort(context, exc)
        # however the call ends (client gone, deadline, server stop), a trajectory still running stops
        if not context.add_callback(handle.cancel):
            handle.cancel()  # the call already ended: the goal must not start
            return
        self.streams_open += 1
        try:
            while True:
                item = handle.get(self._timeout_s)
                if item is None:
                    handle.cancel()
                    _abort(context, _LoopNotTicking(
                        f"the control loop gave no trajectory feedback within {self._timeout_s:g} s; "
                        "is the run paused, finished or not started?"
                    ))
                yield feedback_to_message(item, handle.dropped)
                if item.result is not None:
                    return
        finally:
            self.streams_open -= 1

    def _wait(self, future: Future[_T], *, late: str | None = None) -> _T:
        """The command's result; ``late`` says what a timeout means when it is not a loop that stopped ticking."""
        try:
            return future.result(self._timeout_s)
        except TimeoutError:
            future.cancel()  # never applied late: the backend skips cancelled commands (a stop cannot be cancelled)
            raise _LoopNotTicking(late or (
                f"the control loop ran no cycle within {self._timeout_s:g} s; "
                "is the run paused, finished or not started?"
            )) from None


class _LoopNotTicking(Exception):
    pass


def _decode_targets(msg: common_pb2.Tensor) -> np.ndarray:
    if not msg.data and not msg.shape:
        raise InvalidCommand("joint_pos_rad: missing; send a float64 or float32 tensor [joints] or [steps, joints]")
    arr = codec.decode_tensor(msg, "joint_pos_rad")
    if arr.dtype.kind != "f":
        raise InvalidCommand(f"joint_pos_rad: expected dtype float64 or float32, got {arr.dtype.name}")
    return arr


_STATUS: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (InvalidCommand, grpc.StatusCode.INVALID_ARGUMENT),
    (SpecMismatch, grpc.StatusCode.INVALID_ARGUMENT),
    (JobError, grpc.StatusCode.INVALID_ARGUMENT),
    (FeatureUnavailable, grpc.StatusCode.UNIMPLEMENTED),
    (LoopDied, grpc.StatusCode.UNAVAILABLE),  # before ControllerError, of which it is one
    (ControllerError, grpc.StatusCode.FAILED_PRECONDITION),
    (_LoopNotTicking, grpc.StatusCode.UNAVAILABLE),
)
_EXPECTED = tuple(kind for kind, _ in _STATUS)


def _abort(context: grpc.ServicerContext, exc: Exception) -> NoReturn:
    for kind, code in _STATUS:
        if isinstance(exc, kind):
            context.abort(code, str(exc))
    context.abort(grpc.StatusCode.INTERNAL, f"controller service: {type(exc).__name__}: {exc}")
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


ControllerServer = GrpcServerHandle[ControllerServicer]
"""A running controller server: ``address`` to dial, ``stop()`` (default grace 0.5 s) or a ``with`` block."""


def start_controller_server(
    backend: ControllerBackend,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    tls: TlsFiles | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
    max_concurrent_rpcs: int = 32,
) -> ControllerServer:
    """Serve ``backend`` as ``testbed.v1.ControllerService`` (plus gRPC health) on background threads.

    Args:
        backend: the controllers (e.g. a ``ControlLoopBackend`` whose loop another thread ticks).
        host: bind address; anything but loopback requires ``token``.
        port: TCP port, 0 for any free one (read it from the returned ``.port``).
        token: bearer token every call but health checks must carry (``authorization: Bearer <token>``).
        tls: serve TLS (mutual when ``tls.client_ca`` is set); None for plaintext.
        max_message_bytes: cap on received and sent messages.
        command_timeout_s: how long a command waits for the control loop's next cycle (else UNAVAILABLE).
        max_concurrent_rpcs: calls served at once (each open stream holds a thread); more are
            refused with RESOURCE_EXHAUSTED.

    Returns:
        The running server; it has bound its port when this returns.

    Raises:
        BridgeConfigError: no token beyond loopback, a bad limit, a TLS file missing, or the port cannot be bound.
    """
    if not is_loopback(host) and not token:
        raise BridgeConfigError(
            f"controller server host {host!r}: refusing to listen beyond loopback without a token; "
            "set controller.token (and preferably TLS), or use host 127.0.0.1"
        )
    if max_message_bytes <= 0 or max_concurrent_rpcs <= 0 or not command_timeout_s > 0:
        raise BridgeConfigError(
            "controller server: max_message_bytes, max_concurrent_rpcs and command_timeout_s must be > 0, got "
            f"{max_message_bytes}, {max_concurrent_rpcs}, {command_timeout_s}"
        )
    credentials = tls.credentials() if tls is not None else None
    servicer = ControllerServicer(backend, command_timeout_s=command_timeout_s)
    interceptors = [TokenInterceptor(token)] if token else []
    # one more thread than calls, so health checks still get through when every call is busy
    pool = ThreadPoolExecutor(max_workers=max_concurrent_rpcs + 1, thread_name_prefix="controller-rpc")
    server = grpc.server(
        pool,
        interceptors=interceptors,
        # no SO_REUSEPORT: a second server on a port in use must fail, not share its connections
        options=[*channel_options(max_message_bytes), ("grpc.so_reuseport", 0)],
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    controller_pb2_grpc.add_ControllerServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = format_address(host, port)
    try:
        bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError as exc:
        raise BridgeConfigError(f"controller server: cannot listen on {address}: {exc}") from exc
    if bound == 0:
        raise BridgeConfigError(f"controller server: cannot listen on {address} (address in use or not local?)")
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return GrpcServerHandle(server, servicer, host, bound, grace_s=0.5)
