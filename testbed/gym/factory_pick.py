"""The conveyor pick-and-sort cell as a gymnasium environment, driven through the real control loop.

One ``step`` is one policy step of the launch file (20 Hz by default: 12 physics steps at 240 Hz).
The action is what a testbed policy sends for one step: the robot's joint position targets and the
suction flag (``state_names(joint_names)``). The targets go to the same ``ControlLoop`` a run uses:
it ramps its target linearly from the previous action's to this one over the step, and holds the
set-point to the joint range and the velocity and acceleration limits; a following error or a TCP
speed above the cell's limit makes a protective stop. An agent never commands the joints directly.

Actions outside the joint range are clamped into it by the controller, as for any policy in a run
(its ``limit_clamped`` event, counted in ``info["tally"]["limit_clamped"]``). An action of the wrong
shape, or with NaN or inf, is refused with ``SpecMismatch``. Suction is on for a value above 0.5 and
switches at the start of the step.

Reward (``Rewards``, every weight settable): +1 for each part placed in its own bin, -1 for a part in
another bin, -1 for a dropped part (fell off the belt, released outside a bin), -0.1 for each new
contact of the robot with anything but its pedestal and the part it holds (counted as a run counts
collisions, at 20 Hz), -1 for a protective or emergency stop. The episode terminates when every part
of its workload is placed or dropped, or at a stop; it is truncated at ``sim.max_episode_s``.

Seeding: episode ``k`` of a run seeded ``s`` gets the workload (and the launch file's randomization)
that ``testbed launch`` gives its episode ``k`` with ``seed: s``. ``reset(seed=s)`` starts at episode
0 of seed ``s``, each later ``reset()`` takes the next episode, ``reset(options={"episode": k})``
picks one. Before any seed is given the launch file's ``seed`` is used.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

import testbed
from testbed.control import ControlLoop, TcpSpeedGuard
from testbed.control.tcp_limit import monitored_tcp_limit_m_s
from testbed.errors import FeatureUnavailable, ScenarioError, SpecMismatch
from testbed.policies.observations import ENV_STATE_NAMES, state_names
from testbed.scenario import load
from testbed.scenario.arrivals import ArrivalPlan
from testbed.scenario.randomize import EpisodeDraw, draw_episode
from testbed.scenario.schema import CameraConfig, Scenario
from testbed.scenario.workload import PART_TYPES, PartArrival
from testbed.sim import Cell, build_cell

ENV_ID = "testbed/FactoryPick-v0"
DEFAULT_LAUNCH = Path(testbed.__file__).resolve().parents[1] / "launch" / "factory_cell.yaml"
OBS_MODES = ("state", "images")
PART_CHECK_EVERY = 4  # physics steps between part bookkeeping passes, as in a run (60 Hz at 240 Hz physics)
MONITOR_HZ = 20.0  # contacts (collisions) and the TCP speed check, as in a run
STATE_KEY = "observation.state"
ENV_STATE_KEY = "observation.environment_state"
IMAGE_PREFIX = "observation.images."


@dataclass(frozen=True)
class Rewards:
    """Reward weights: what each outcome adds to the step's reward."""

    placed: float = 1.0  # a part in the bin for its type
    misplaced: float = -1.0  # a part in another bin
    dropped: float = -1.0  # off the belt, released outside any bin, or no free part for an arrival
    collision: float = -0.1  # each new contact of the robot (not its pedestal, not the part it holds)
    safety_stop: float = -1.0  # a protective or emergency stop (it also ends the episode)


@dataclass
class Tally:
    """What the episode did so far (``info["tally"]``)."""

    parts: int = 0
    placed: int = 0
    misplaced: int = 0
    dropped: int = 0
    collisions: int = 0
    safety_stops: int = 0
    limit_clamped: int = 0
    cycle_times_s: list[float] = field(default_factory=list)
    success: bool = False
    end_reason: str = ""


class FactoryPickEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """The conveyor pick-and-sort cell of a launch file, one policy step per ``step``.

    Args:
        launch: launch file (default: the repository's ``launch/factory_cell.yaml``). It must have one robot,
            driven by a policy (no ``job``, not ``external``), and no ``sites``; its ``policy`` section only
            gives the rate (``policy.args.control_hz``, else ``policy.control_hz``); ``ros2``,
            ``controller_service``, ``record`` and ``sim.realtime`` belong to runs and are not used.
        overrides: ``key:=value`` overrides, as on the command line (``sim.max_episode_s:=20``).
        render_mode: ``None`` or ``"rgb_array"`` (the first camera, or ``render_camera``; a launch file
            without cameras gets the schema's default overhead camera).
        obs_mode: ``"state"`` (joint state and privileged environment state) or ``"images"`` (also every
            camera's image); default ``"images"`` when the launch file has cameras, else ``"state"``.
        control_hz: policy rate, overriding the launch file's.
        rewards: reward weights (a ``Rewards`` or a mapping of its fields).
        render_camera: name of the camera ``render`` shows.

    Raises:
        ScenarioError: the launch file is invalid or uses what the environment does not support.
        FeatureUnavailable: an unknown ``render_mode`` or ``obs_mode``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, launch: str | Path | None = None, overrides: Sequence[str] = (), *,
                 render_mode: str | None = None, obs_mode: str | None = None, control_hz: float | None = None,
                 rewards: Rewards | Mapping[str, float] | None = None, render_camera: str | None = None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise FeatureUnavailable(f"render_mode {render_mode!r} is not supported (supported: rgb_array, None)")
        self.render_mode = render_mode
        self.launch_path = Path(launch) if launch is not None else DEFAULT_LAUNCH
        loaded = load(self.launch_path, list(overrides))
        scenario = loaded.scenario
        _check_supported(scenario, self.launch_path)
        if render_mode is not None and not scenario.cell.cameras:
            cell_config = scenario.cell.model_copy(update={"cameras": (CameraConfig(),)})
            scenario = scenario.model_copy(update={"cell": cell_config})
        self.scenario: Scenario = scenario
        self.rewards = rewards if isinstance(rewards, Rewards) else Rewards(**dict(rewards or {}))
        cameras = scenario.cell.cameras
        self.obs_mode = obs_mode if obs_mode is not None else ("images" if launch_has_cameras(loaded.scenario)
                                                                 else "state")
        if self.obs_mode not in OBS_MODES:
            raise FeatureUnavailable(f"obs_mode {self.obs_mode!r} is not supported (supported: {', '.join(OBS_MODES)})")
        if self.obs_mode == "images" and not cameras:
            raise ScenarioError(f"{self.launch_path}: obs_mode 'images' needs cameras, and cell.cameras is empty")
        names = [c.name for c in cameras]
        if render_camera is not None and render_camera not in names:
            raise ScenarioError(f"{self.launch_path}: render_camera {render_camera!r} is not a camera of the cell "
                                f"(cameras: {', '.join(names) or 'none'})")
        self._render_index = names.index(render_camera) if render_camera is not None else 0
        self._image_cameras = list(enumerate(names)) if self.obs_mode == "images" else []

        hz = control_hz if control_hz is not None else float(scenario.policy.args.get("control_hz",
                                                                                         scenario.policy.control_hz))
        if not (math.isfinite(hz) and hz > 0):
            raise ScenarioError(f"{self.launch_path}: control_hz must be a positive number, got {hz!r}")
        self._plan = ArrivalPlan(scenario)
        most = self._plan.most_per_type()
        pool = [[PartArrival(0.0, name) for name in PART_TYPES for _ in range(most[name])]]
        self.cell: Cell = build_cell(scenario.cell, scenario.sim.physics_hz, pool)
        try:
            self._setup(hz)
        except BaseException:
            self.cell.close()
            raise

    def _setup(self, control_hz: float) -> None:
        cell, scenario = self.cell, self.scenario
        robot = cell.robots[0]
        model = robot.model
        settings = scenario.cell.robots[0].controller
        self.model = model
        self.n_joints = model.n_joints
        self.control = ControlLoop([model], cell.dt_s, stream_timeout_s=[settings.stream_timeout_s],
                                   robot_speed_scale=[settings.speed_scale])
        self.control.reset(cell.read_joint_positions().copy())
        self._sent_version = -1
        self._monitor_every = max(1, round(1.0 / (MONITOR_HZ * cell.dt_s)))
        self._guard = _tcp_speed_guard(settings, self.control, model, self._monitor_every)
        self.steps_per_action = max(1, round(1.0 / (control_hz * cell.dt_s)))
        self.period_s = self.steps_per_action * cell.dt_s
        self.control_hz = 1.0 / self.period_s
        self.metadata = {**self.metadata, "render_fps": self.control_hz}
        self.max_steps = round(scenario.sim.max_episode_s / cell.dt_s)
        self.action_names = state_names(model.joint_names)

        lower, upper = model.lower, model.upper
        self.action_space = spaces.Box(low=_inward(np.append(lower, 0.0), up=True),
                                       high=_inward(np.append(upper, 1.0), up=False), dtype=np.float32)
        # the controller stops the robot once the measured position is this far from its set-point,
        # and the set-point stays in the joint range: the measured joints stay within the range widened by it
        following = np.array([0.1 if t == "prismatic" else 0.5 for t in model.joint_types])
        obs: dict[str, spaces.Space] = {
            STATE_KEY: spaces.Box(low=np.append(lower - following, 0.0).astype(np.float32),
                                  high=np.append(upper + following, 1.0).astype(np.float32), dtype=np.float32),
            ENV_STATE_KEY: _environment_state_space(),
        }
        for _, name in self._image_cameras:
            cam = next(c for c in scenario.cell.cameras if c.name == name)
            obs[IMAGE_PREFIX + name] = spaces.Box(0, 255, (cam.height, cam.width, 3), dtype=np.uint8)
        self.observation_space = spaces.Dict(obs)

        self._run_seed = scenario.seed
        self._episode = -1
        self._started = False
        self._ended = True
        self._step = 0  # physics steps into the episode
        self._frame: tuple[int, np.ndarray] | None = None  # (physics step, image) of the render camera
        self.draw: EpisodeDraw | None = None

    # ---- the gymnasium interface -----------------------------------------------------------------------

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode: ``seed`` starts a run at its episode 0, ``options={"episode": k}`` picks episode k.

        Raises:
            ScenarioError: unknown options, or an episode index that is not a non-negative integer.
        """
        super().reset(seed=seed)
        options = dict(options or {})
        episode = options.pop("episode", None)
        if options:
            raise ScenarioError(f"reset(options=...): unknown key(s) {', '.join(sorted(options))} (known: episode)")
        if seed is not None:
            self._run_seed, self._episode = int(seed), 0
        else:
            self._episode += 1
        if episode is not None:
            if isinstance(episode, bool) or not isinstance(episode, int | np.integer) or episode < 0:
                raise ScenarioError(f"reset(options={{'episode': {episode!r}}}): expected an integer >= 0")
            self._episode = int(episode)
        cell, control = self.cell, self.control
        # the same randomization `testbed launch` applies to this (seed, episode)
        self.draw = draw_episode(self.scenario.randomize, self._run_seed, self._episode)
        cell.reset_episode(self.draw)
        control.reset(cell.read_joint_positions().copy())
        if self._guard is not None:  # its check count and the loop's narrowed bound start over, as in runs
            self._guard.reset()
        self._sent_version = -1  # the control loop's setpoint_version last sent to the motors: none this episode
        control.drain_events()
        self._target = control.setpoint[0, : self.n_joints].copy()
        # streaming starts now: the robot holds here until the first action
        control.submit_chunk(0, self._target[None], 0.0, self.period_s)
        arrivals = self._plan.arrivals(self._run_seed, self._episode)
        self._arrivals = len(arrivals)
        self._pending: deque[PartArrival] = deque(arrivals)
        self._resolved = 0
        self._contacts: set[str] = set()
        self._step = 0
        self._frame = None
        self.tally = Tally(parts=len(arrivals))
        self._started, self._ended = True, False
        info = self._info([])
        info["randomize"] = self.draw.summary()
        return self._observe(), info

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Apply one action for one policy step (``steps_per_action`` physics steps).

        Raises:
            SpecMismatch: the action has the wrong shape or holds NaN or inf.
            ScenarioError: the episode has ended (call ``reset``).
        """
        if self._ended:
            raise ScenarioError("step() before reset() or after the episode ended: call reset() first")
        act = self._check_action(action)
        n, cell, control, dt = self.n_joints, self.cell, self.control, self.cell.dt_s
        target = act[:n]
        # the target ramps from the previous action's to this one over the step (the controller clamps both)
        control.submit_chunk(0, np.stack([self._target, target]), self._step * dt, self.period_s)
        self._target = np.clip(target, self.model.lower, self.model.upper)
        suction = bool(act[n] > 0.5)
        if suction != cell.robots[0].suction_on:
            cell.set_suction(0, suction)
        reward = 0.0
        events: list[dict[str, Any]] = []
        terminated = truncated = False
        for _ in range(self.steps_per_action):
            step = self._step
            t = step * dt
            reward += self._spawn_due(t, events)
            measured = cell.read_joint_positions()
            if step % self._monitor_every == 0:
                reward += self._check_contacts(t, events)
            setpoint = control.tick(t, measured)
            if self._guard is not None:
                self._guard.check()
            if control.setpoint_version != self._sent_version:  # unchanged set-points: the motors keep them
                self._sent_version = control.setpoint_version
                cell.apply_joint_commands(setpoint, control.setpoint_vel)
            cell.step()
            if step % PART_CHECK_EVERY == 0:
                reward += self._part_events(t, events)
            stopped, r = self._control_events(events)
            reward += r
            self._step += 1
            if stopped:
                terminated, self.tally.end_reason = True, "protective_stop"
            elif not self._pending and self._resolved >= self._arrivals:
                terminated, self.tally.end_reason = True, "all parts handled"
            elif self._step >= self.max_steps:
                truncated, self.tally.end_reason = True, "max_episode_s reached"
            if terminated or truncated:
                self._end()
                break
        return self._observe(), reward, terminated, truncated, self._info(events)

    def render(self) -> np.ndarray | None:
        """The render camera's image, uint8 ``(height, width, 3)``; ``None`` without ``render_mode``."""
        if self.render_mode is None:
            return None
        if self._frame is not None and self._frame[0] == self._step:
            return self._frame[1].copy()
        return self.cell.render(self._render_index)

    def close(self) -> None:
        """Disconnect from pybullet (a second call does nothing)."""
        cell = getattr(self, "cell", None)
        if cell is not None:
            cell.close()

    # ---- one step's parts ----------------------------------------------------------------------------------

    @property
    def episode_index(self) -> int:
        """Index of the current episode within its run."""
        return self._episode

    @property
    def run_seed(self) -> int:
        """Seed of the run the current episode belongs to."""
        return self._run_seed

    def _check_action(self, action: np.ndarray) -> np.ndarray:
        arr = np.asarray(action)
        size = self.n_joints + 1
        if arr.shape != (size,):
            raise SpecMismatch(f"{ENV_ID} action: expected shape ({size},) ({', '.join(self.action_names)}), "
                               f"got {arr.shape}")
        if arr.dtype.kind not in "fiu":
            raise SpecMismatch(f"{ENV_ID} action: expected numbers, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
        bad = ~np.isfinite(arr)
        if bad.any():
            names = [self.action_names[i] for i in np.flatnonzero(bad)]
            raise SpecMismatch(f"{ENV_ID} action: NaN or inf in {', '.join(names)}")
        return arr

    def _spawn_due(self, t: float, events: list[dict[str, Any]]) -> float:
        reward = 0.0
        while self._pending and self._pending[0].t_s <= t + 1e-9:
            arrival = self._pending.popleft()
            if self.cell.spawn(arrival, 0):
                events.append({"kind": "part_arrival", "t_s": round(t, 6), "part_type": arrival.part_type,
                               "order_id": arrival.order_id})
            else:  # the pool is sized for any episode of the workload: this is not expected
                self.tally.dropped += 1
                self._resolved += 1
                reward += self.rewards.dropped
                events.append({"kind": "drop", "t_s": round(t, 6), "part_type": arrival.part_type,
                               "order_id": arrival.order_id, "reason": "no free part in the pool"})
        return reward

    def _check_contacts(self, t: float, events: list[dict[str, Any]]) -> float:
        touching = self.cell.robot_contacts(0)
        new = sorted(touching - self._contacts)
        self._contacts = touching
        for name in new:
            events.append({"kind": "collision", "t_s": round(t, 6), "other": name})
        self.tally.collisions += len(new)
        return self.rewards.collision * len(new)

    def _part_events(self, t: float, events: list[dict[str, Any]]) -> float:
        reward = 0.0
        for ev in self.cell.update_parts():
            events.append({"kind": ev.kind, "t_s": round(t, 6), "part_type": ev.part_type, "order_id": ev.order_id,
                           **ev.detail})
            if ev.kind == "place":
                self._resolved += 1
                if ev.detail.get("correct"):
                    self.tally.placed += 1
                    self.tally.cycle_times_s.append(float(ev.detail["cycle_time_s"]))
                    reward += self.rewards.placed
                else:
                    self.tally.misplaced += 1
                    reward += self.rewards.misplaced
            elif ev.kind == "drop":
                self._resolved += 1
                self.tally.dropped += 1
                reward += self.rewards.dropped
        return reward

    def _control_events(self, events: list[dict[str, Any]]) -> tuple[bool, float]:
        stopped, reward = False, 0.0
        for ev in self.control.drain_events():
            if ev.kind == "state_change":
                continue
            events.append({"kind": ev.kind, "t_s": round(ev.t_s, 6), **ev.detail})
            if ev.kind in ("protective_stop", "emergency_stop"):
                self.tally.safety_stops += 1
                reward += self.rewards.safety_stop
                stopped = True
            elif ev.kind == "limit_clamped":
                self.tally.limit_clamped += 1
        return stopped, reward

    def _end(self) -> None:
        self._ended = True
        tally, success = self.tally, self.scenario.success
        fraction = tally.placed / tally.parts if tally.parts else 1.0
        tally.success = (fraction >= success.min_placed_fraction - 1e-9 and tally.safety_stops == 0
                         and (success.allow_drops or tally.dropped == 0) and tally.misplaced == 0)

    def _observe(self) -> dict[str, np.ndarray]:
        n = self.n_joints
        state = np.empty(n + 1, dtype=np.float32)
        state[:n] = self.cell.read_joint_positions()[0, :n]
        state[n] = 1.0 if self.cell.robots[0].suction_on else 0.0
        obs = {STATE_KEY: state, ENV_STATE_KEY: self.cell.environment_state(0)}
        for index, name in self._image_cameras:
            image = self.cell.render(index)
            obs[IMAGE_PREFIX + name] = image
            if index == self._render_index:
                self._frame = (self._step, image.copy())
        return obs

    def _info(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        info: dict[str, Any] = {"seed": self._run_seed, "episode_index": self._episode,
                                "t_s": round(self._step * self.cell.dt_s, 6), "tally": asdict(self.tally),
                                "events": events}
        if self._ended:
            info["is_success"] = self.tally.success
        return info


def launch_has_cameras(scenario: Scenario) -> bool:
    """Whether the launch file itself declares cameras."""
    return bool(scenario.cell.cameras)


def _check_supported(scenario: Scenario, path: Path) -> None:
    robots = scenario.cell.robots
    if len(robots) != 1:
        raise ScenarioError(f"{path}: cell.robots: {ENV_ID} drives one robot, the launch file has {len(robots)} "
                            "(run several robots with `testbed launch`)")
    if robots[0].job is not None or robots[0].external:
        raise ScenarioError(f"{path}: cell.robots[0]: {ENV_ID} drives the robot from the agent's actions; "
                            "remove its job / external setting")
    if scenario.sites is not None:
        raise ScenarioError(f"{path}: sites: compliance and site safety profiles apply to runs (`testbed launch`); "
                            f"{ENV_ID} takes launch files without a sites section")


def _tcp_speed_guard(settings: Any, control: ControlLoop, model: Any, every: int) -> TcpSpeedGuard | None:
    """The TCP speed limit the robot's controller settings ask for, held every tick and checked at 20 Hz.

    The lowest limit that applies (``monitored_tcp_limit_m_s``, as in runs); no guard when none does.
    """
    limit = monitored_tcp_limit_m_s(reduced_speed=settings.reduced_speed,
                                    reduced_limit_m_s=model.reduced_tcp_speed_m_s,
                                    tcp_speed_limit_m_s=settings.tcp_speed_limit_m_s)
    if math.isinf(limit):
        return None
    return TcpSpeedGuard(control, [model], limits_m_s=[limit], every_n_ticks=every)


def _inward(values: np.ndarray, *, up: bool) -> np.ndarray:
    """``values`` as float32, rounded towards the inside of the range (a lower bound up, an upper one down)."""
    out = values.astype(np.float32)
    if up:
        low = out.astype(np.float64) < values
        out[low] = np.nextafter(out[low], np.float32(np.inf))
    else:
        high = out.astype(np.float64) > values
        out[high] = np.nextafter(out[high], np.float32(-np.inf))
    return out


def _environment_state_space() -> spaces.Box:
    """Bounds of ``observation.environment_state``: flags in [0, 1], the part type an index, the yaw an angle.

    Positions are unbounded: a part held by the robot goes wherever the robot takes it.
    """
    low = np.full(len(ENV_STATE_NAMES), -np.inf, dtype=np.float32)
    high = np.full(len(ENV_STATE_NAMES), np.inf, dtype=np.float32)
    bounds = {"part_yaw": (-math.pi, math.pi), "part_type": (0, len(PART_TYPES) - 1),
              "part_ready": (0, 1), "holding": (0, 1)}
    for name, (lo, hi) in bounds.items():
        i = ENV_STATE_NAMES.index(name)
        low[i], high[i] = lo, hi
    return spaces.Box(low=low, high=high, dtype=np.float32)
