"""Open the action source a launch file's ``policy`` section names, one per robot."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import numpy as np

from testbed.errors import PolicyUnavailable, ScenarioError, SpecMismatch
from testbed.policies.observations import ENV_STATE_DIM
from testbed.policies.protocol import ActionKind, PolicySpec, TensorSpec
from testbed.policies.source import ActionChunk, ActionSource, LocalActionSource
from testbed.scenario.schema import CameraConfig, PolicyConfig, RobotConfig
from testbed.sites.links import LinkSpec

if TYPE_CHECKING:
    from testbed.bridge.spawn import PolicyServerProcess


def _args_for(cfg: PolicyConfig, target: str, robot: RobotConfig) -> dict[str, str]:
    args = dict(cfg.args)
    if target == "expert":
        args.setdefault("robot", robot.model)
    return args


def token_from_env(field: str, variable: str | None) -> str | None:
    """The bearer token a launch file names by environment variable (``field`` is where it was named).

    Raises:
        ScenarioError: the variable is named but not set.
    """
    if variable is None:
        return None
    token = os.environ.get(variable)
    if not token:
        raise ScenarioError(f"{field}: environment variable {variable!r} is not set")
    return token


def cell_observations(n_joints: int, cameras: tuple[CameraConfig, ...]) -> dict[str, TensorSpec]:
    """Every observation the cell provides to a robot with ``n_joints`` joints."""
    return {
        "observation.state": TensorSpec("float32", (n_joints + 1,)),
        "observation.environment_state": TensorSpec("float32", (ENV_STATE_DIM,)),
        **{f"observation.images.{c.name}": TensorSpec("uint8", (c.height, c.width, 3)) for c in cameras},
    }


def policy_log_path(log_dir: Path, robot: RobotConfig) -> Path:
    """Where a served policy's output goes: ``<log_dir>/policy-<robot>.log`` (unsafe characters as ``_``)."""
    return log_dir / f"policy-{re.sub(r'[^A-Za-z0-9_.-]', '_', robot.name)}.log"


class ServedPolicySource:
    """The gRPC source of a policy server this run started, which knows when that process has ended.

    Once the child has ended, ``submit`` and ``result`` fail at once and ``reset`` returns at
    once (no deadline or reconnect grace is waited out for a process that cannot answer), and
    every ``PolicyUnavailable`` says how the child ended and where its output is, so the run's
    events record what happened.

    Args:
        source: the client of ``server``.
        server: the child process it talks to.
    """

    def __init__(self, source: ActionSource, server: PolicyServerProcess) -> None:
        self._source = source
        self._server = server
        # result() found the child running and got an answer, and nothing else was asked since: the
        # submit that follows it in the same control cycle does not ask the OS again (a waitpid)
        self._seen_running = False

    def _ended(self) -> PolicyUnavailable | None:
        status = self._server.exit_status()  # never blocks: safe on the control loop's thread
        if status is None:
            return None
        return PolicyUnavailable(f"{self._server.endpoint}: the policy server process {self._server.pid} ended "
                                 f"({status}); its output is in {self._server.log_path}")

    def _raise_explained(self, exc: PolicyUnavailable) -> NoReturn:
        ended = self._ended()
        if ended is None:
            raise exc  # as it is: `raise exc from exc` would replace its cause (a client failure's error) by itself
        raise ended from exc

    def spec(self) -> PolicySpec:
        """The served policy's spec."""
        try:
            return self._source.spec()
        except PolicyUnavailable as exc:
            self._raise_explained(exc)

    def reset(self, episode: int) -> None:
        """Start episode ``episode``; for an ended child, return at once (its first ``submit`` says why)."""
        self._seen_running = False
        if self._ended() is not None:
            return  # nothing will come back: waiting out the episode-start grace would only delay the record
        try:
            self._source.reset(episode)
        except PolicyUnavailable as exc:
            self._raise_explained(exc)

    def submit(self, obs: Mapping[str, np.ndarray], step: int) -> None:
        """Ask for a chunk for ``obs`` at policy step ``step``."""
        if self._seen_running:
            self._seen_running = False
        else:
            ended = self._ended()
            if ended is not None:
                raise ended
        try:
            self._source.submit(obs, step)
        except PolicyUnavailable as exc:
            self._raise_explained(exc)

    def result(self, timeout_s: float | None) -> ActionChunk | None:
        """The newest chunk that arrived, waiting at most ``timeout_s``."""
        self._seen_running = False
        ended = self._ended()
        if ended is not None:
            raise ended
        try:
            chunk = self._source.result(timeout_s)
        except PolicyUnavailable as exc:
            self._raise_explained(exc)
        self._seen_running = chunk is not None  # an answer just came: the child was running
        return chunk

    def close(self) -> None:
        """Close the client (the server is stopped by whoever started it)."""
        self._source.close()


def through_link(endpoint: str, link: LinkSpec, seed: tuple[int, ...], stack: ExitStack) -> str:
    """Put an emulated link (a user-space relay on loopback) in front of ``endpoint``; return the endpoint to dial.

    Raises:
        ScenarioError: a TLS endpoint (its certificate names the real host, not the relay).
    """
    from testbed.sites.relay import LinkRelay

    scheme, _, rest = endpoint.partition("://")
    if scheme not in ("grpc", "ws"):
        raise ScenarioError(f"policy.endpoint {endpoint}: a real-time run across sites relays plain grpc:// or "
                            "ws:// endpoints; TLS through the link emulator is not supported (run lockstep)")
    address, slash, path = rest.partition("/")
    host, _, port = address.rpartition(":")
    relay = stack.enter_context(LinkRelay((host.strip("[]"), int(port)), link, seed=np.random.SeedSequence(seed)))
    return f"{scheme}://{relay.address}{slash}{path}"


def open_action_source(cfg: PolicyConfig, robot: RobotConfig, stack: ExitStack, *, n_joints: int,
                       cameras: tuple[CameraConfig, ...], log_dir: Path | None = None,
                       link: LinkSpec | None = None, link_seed: tuple[int, ...] = (0,)) -> ActionSource:
    """Open the source for one robot; everything it starts is closed by ``stack``.

    Args:
        cfg: the launch file's ``policy`` section.
        robot: the robot the source drives.
        stack: closes the source, and stops a server it started, when it unwinds.
        n_joints: the robot's joint count.
        cameras: the cell's cameras.
        log_dir: where a server started for ``policy.serve`` writes its output
            (``policy_log_path``); None for a temporary file.
        link: a link the policy's traffic crosses for real (an emulating relay, ``through_link``), for
            real-time runs with the policy at another site; None for a direct connection.
        link_seed: seeds the relay's delays.
    """
    if cfg.builtin is not None:
        from testbed.bridge.targets import resolve_policy_target

        policy = resolve_policy_target(cfg.builtin, _args_for(cfg, cfg.builtin, robot))()
        source: ActionSource = LocalActionSource(policy)
    elif cfg.serve is not None:
        from testbed.bridge import GrpcActionSource, spawn_policy_server

        log_path = policy_log_path(log_dir, robot) if log_dir is not None else None
        server = stack.enter_context(spawn_policy_server(cfg.serve, _args_for(cfg, cfg.serve, robot),
                                                         log_path=log_path))
        endpoint = server.endpoint if link is None else through_link(server.endpoint, link, link_seed, stack)
        source = ServedPolicySource(GrpcActionSource(endpoint, deadline_s=cfg.deadline_s), server)
    elif cfg.endpoint is not None and cfg.protocol == "openpi":
        try:
            from testbed.bridge.openpi_source import OpenPiActionSource, openpi_spec
        except ImportError as exc:
            raise ScenarioError(f"policy.protocol openpi needs the openpi extra: pip install 'testbed[openpi]' "
                                f"({exc})") from exc
        spec = openpi_spec(available=cell_observations(n_joints, cameras), obs_keys=cfg.obs_keys,
                           action_dim=n_joints + 1, chunk_size=cfg.chunk_size, control_hz=cfg.control_hz,
                           action_kind=ActionKind(cfg.action_kind), model_name=f"openpi@{cfg.endpoint}")
        endpoint = cfg.endpoint if link is None else through_link(cfg.endpoint, link, link_seed, stack)
        source = OpenPiActionSource(endpoint, spec=spec, obs_keys=cfg.obs_keys, action_key=cfg.action_key,
                                    deadline_s=cfg.deadline_s, static_obs=cfg.static_obs)
    else:
        from testbed.bridge import GrpcActionSource

        assert cfg.endpoint is not None
        token = token_from_env("policy.token_env", cfg.token_env)
        endpoint = cfg.endpoint if link is None else through_link(cfg.endpoint, link, link_seed, stack)
        source = GrpcActionSource(endpoint, token=token, deadline_s=cfg.deadline_s)
    stack.callback(source.close)
    return source


def check_spec(spec: PolicySpec, *, robot: RobotConfig, n_joints: int, cameras: tuple[CameraConfig, ...]) -> None:
    """Fail before the first episode if the policy's spec does not fit the scenario's robot and cameras.

    Raises:
        SpecMismatch: naming the policy, the robot and the first disagreement.
    """
    where = f"policy {spec.model_name!r} for robot {robot.name!r} ({robot.model}, {n_joints} joints)"
    available = cell_observations(n_joints, cameras)
    for key, tspec in spec.observation.items():
        if key not in available:
            raise SpecMismatch(f"{where}: asks for observation {key!r}, the cell provides "
                               f"{', '.join(sorted(available))}")
        have = available[key]
        if tspec.dtype != have.dtype or tuple(tspec.shape) != have.shape:
            raise SpecMismatch(f"{where}: observation {key!r} declared {tspec.dtype}{list(tspec.shape)}, "
                               f"the cell provides {have.dtype}{list(have.shape)}")
    if spec.action_kind not in (ActionKind.JOINT_POSITIONS, ActionKind.JOINT_DELTAS):
        raise SpecMismatch(f"{where}: action kind {spec.action_kind.value!r} is not supported by this cell "
                           "(supported: joint_positions, joint_deltas)")
    if spec.action_dim != n_joints + 1:
        raise SpecMismatch(f"{where}: action_dim {spec.action_dim}, expected {n_joints + 1} "
                           f"({n_joints} joints + suction)")
