"""The launch-file schema: every key a scenario may set, with its type and default.

Launch-file keys equal these field names. Unknown keys are errors: a typo must
never be silently ignored.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from testbed.scenario.workload import PART_TYPES


class Strict(BaseModel):
    """Base for every section: unknown keys are refused, values are not coerced across kinds.

    No float field takes NaN or infinity (``.nan``, ``.inf``): a setting without a limit is written as
    null where the schema allows it (e.g. ``tcp_speed_limit_m_s``), never as ``.inf``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


# Measured with the expert (6 episodes each): every part sorted at 120 Hz in the default and the randomized cell;
# at 100 Hz the randomized cell drops and misplaces parts (success 0.83), at 60 Hz the default one (0.67),
# at 40 Hz and below nothing works: contacts and suction grasps need the shorter step
MIN_PHYSICS_HZ = 120.0


class SimConfig(Strict):
    """Physics and time."""

    physics_hz: float = Field(240.0, le=10000, description=f"physics (and lockstep control) rate in Hz, from "
                                                           f"{MIN_PHYSICS_HZ:g} (below it pybullet contacts and "
                                                           "suction grasps fail) to 10000, and at least the "
                                                           "policy's rate; default 240")
    realtime: bool = Field(False, description="pace the loop by the wall clock instead of lockstep")
    max_episode_s: float = Field(60.0, gt=0, description="simulated seconds before an episode is cut off")

    @field_validator("physics_hz")
    @classmethod
    def _fast_enough_for_contacts(cls, hz: float) -> float:
        if hz < MIN_PHYSICS_HZ:
            raise ValueError(f"expected at least {MIN_PHYSICS_HZ:g} Hz (pybullet contacts and suction grasps are "
                             "unstable at longer steps; the default is 240)")
        return hz


class Pose(Strict):
    """A pose in the world frame: position in metres, roll/pitch/yaw in degrees."""

    xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rpy_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)


class ControllerSettings(Strict):
    """Per-robot controller settings that override robots/<model>/controller.yaml."""

    speed_scale: float = Field(1.0, gt=0, le=1.0, description="fraction of the model's joint speed limits")
    stream_timeout_s: float = Field(0.5, gt=0, description="no new set-points for this long -> protective stop")
    reduced_speed: bool = Field(False, description="monitor the TCP against the model's reduced (collaborative) "
                                                   "speed limit")
    tcp_speed_limit_m_s: float | None = Field(None, gt=0, description="monitor the TCP against this speed; above "
                                                                      "it the robot makes a protective stop")


class RobotConfig(Strict):
    """One robot in the cell."""

    name: str = Field("arm", min_length=1)
    model: str = Field("gp7", min_length=1, description="a directory name under robots/")
    base: Pose = Pose(xyz=(0.0, 0.0, 0.30))
    controller: ControllerSettings = ControllerSettings()
    external: bool = Field(False, description="driven by ControllerService or ROS 2 clients (needs "
                                              "controller_service.serve or ros2.enabled)")
    job: dict[str, Any] | str | None = Field(
        None, description="a teach-pendant job (inline, or a YAML file path) that drives this robot instead of the "
                          "policy; it restarts each time it ends")


class ConveyorConfig(Strict):
    """The infeed conveyor: parts travel along +x to a stopper at the pick station."""

    speed: float = Field(0.2, gt=0, le=1.0, description="belt speed in m/s")
    length: float = Field(0.9, gt=0.2, le=3.0, description="belt length in m, ending at the pick station")
    top_z: float = Field(0.40, gt=0.05, le=1.5, description="height of the belt surface above the floor in m")


class BinConfig(Strict):
    """A bin collecting one part type; ``xyz`` is its floor centre in the world frame."""

    name: str
    part_type: Literal["capacitor", "connector", "module"]
    xyz: tuple[float, float, float]


class CameraConfig(Strict):
    """A camera rendered at the policy rate only."""

    name: str = "overhead"
    width: int = Field(96, gt=0, le=1024)
    height: int = Field(96, gt=0, le=1024)
    fov_deg: float = Field(60.0, gt=1, lt=179)
    eye: tuple[float, float, float] = (0.12, 0.05, 1.9)  # above the cell: pick station, bins and robot in view
    target: tuple[float, float, float] = (0.12, 0.05, 0.3)


def _default_bins() -> tuple[BinConfig, ...]:
    return (
        BinConfig(name="bin_capacitor", part_type="capacitor", xyz=(0.05, 0.45, 0.25)),
        BinConfig(name="bin_connector", part_type="connector", xyz=(0.30, 0.40, 0.25)),
        BinConfig(name="bin_module", part_type="module", xyz=(-0.20, 0.42, 0.25)),
    )


class CellConfig(Strict):
    """The factory cell: layout, robots, conveyor, bins and cameras."""

    layout: Literal["conveyor_sort"] = "conveyor_sort"
    robots: tuple[RobotConfig, ...] = Field((RobotConfig(),), min_length=1)
    conveyor: ConveyorConfig = ConveyorConfig()
    bins: tuple[BinConfig, ...] = Field(default_factory=_default_bins, min_length=1)
    cameras: tuple[CameraConfig, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> CellConfig:
        for kind, names in (("robots", [r.name for r in self.robots]), ("bins", [b.name for b in self.bins])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind} names must be unique; repeated: {', '.join(dupes)}")
        return self


Range = tuple[float, float]


# field -> (lowest, highest, whether the lowest itself is excluded)
_RANGE_BOUNDS: dict[str, tuple[float, float, bool]] = {
    "part_lateral_m": (-0.05, 0.05, False),
    "part_yaw_deg": (-180.0, 180.0, False),
    "part_mass_scale": (0.0, 100.0, True),
    "part_friction": (0.0, 10.0, False),
    "conveyor_speed_scale": (0.0, 5.0, True),
    "light_azimuth_deg": (-360.0, 360.0, False),
    "light_elevation_deg": (0.0, 90.0, True),
    "light_ambient": (0.0, 1.0, False),
}


def _check_range(value: Range | None, info: ValidationInfo) -> Range | None:
    """Refuse ``[low, high]`` with low > high or outside the field's bounds."""
    if value is None:
        return None
    lo, hi, open_lo = _RANGE_BOUNDS[str(info.field_name)]
    a, b = value
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ValueError("expected finite [low, high]")
    if a > b:
        raise ValueError("expected [low, high] with low <= high")
    if a <= lo if open_lo else a < lo:
        raise ValueError(f"expected values {'>' if open_lo else '>='} {lo}")
    if b > hi:
        raise ValueError(f"expected values <= {hi}")
    return value


class RandomizeConfig(Strict):
    """Per-episode domain randomization, drawn from (seed, episode) only (testbed.scenario.randomize).

    Every field defaults to no randomization. Ranges are ``[low, high]``, drawn uniformly.
    """

    part_lateral_m: Range = Field((0.0, 0.0), description="part centre offset across the belt (x) in m")
    part_yaw_deg: Range = Field((0.0, 0.0), description="part yaw on the belt in degrees")
    part_mass_scale: Range = Field((1.0, 1.0), description="multiplies each part type's mass")
    part_friction: Range | None = Field(None, description="lateral friction coefficient of each part "
                                                          "(default: the part's own, 0.8)")
    stopper_absent_probability: float = Field(0.0, ge=0, le=1, description="share of episodes without a stopper: "
                                                                            "parts ride to the belt end and fall off "
                                                                            "unless caught moving")
    conveyor_speed_scale: Range = Field((1.0, 1.0), description="multiplies cell.conveyor.speed per episode")
    camera_eye_jitter_m: float = Field(0.0, ge=0, le=0.5, description="each camera eye coordinate moves by up to "
                                                                      "this many m")
    camera_target_jitter_m: float = Field(0.0, ge=0, le=0.5, description="each camera target coordinate moves by "
                                                                         "up to this many m")
    light_azimuth_deg: Range | None = Field(None, description="light direction around the vertical axis "
                                                              "(TinyRenderer; default: pybullet's own light)")
    light_elevation_deg: Range | None = Field(None, description="light direction above the horizon in degrees")
    light_colour_jitter: float = Field(0.0, ge=0, le=1, description="each light colour channel is 1 minus up to "
                                                                    "this much")
    light_ambient: Range | None = Field(None, description="ambient light coefficient")
    part_mix_concentration: float | None = Field(
        None, gt=0, le=1000, description="random workloads: part-type weights are drawn per episode from a "
                                         "Dirichlet of this concentration (small: lopsided mixes)")

    _ranges = field_validator(*_RANGE_BOUNDS)(_check_range)

    @property
    def light_randomized(self) -> bool:
        """Whether any light setting is drawn (otherwise renders use pybullet's default light)."""
        return (self.light_azimuth_deg is not None or self.light_elevation_deg is not None
                or self.light_ambient is not None or self.light_colour_jitter > 0)


class PartEntry(Strict):
    """One scripted arrival: a part of ``type`` enters the conveyor ``t`` seconds into the episode."""

    t: float = Field(ge=0)
    type: Literal["capacitor", "connector", "module"]


class RandomWorkload(Strict):
    """Parts drawn from the scenario seed: ``count`` parts every ``interval_s`` (with jitter)."""

    count: int = Field(3, ge=1, le=1000)
    interval_s: float = Field(6.0, gt=0)
    jitter_s: float = Field(0.5, ge=0)
    types: tuple[Literal["capacitor", "connector", "module"], ...] = PART_TYPES


class WorkloadConfig(Strict):
    """Which parts arrive when: exactly one of ``parts``, ``random`` or ``orders``."""

    parts: tuple[PartEntry, ...] | None = None
    random: RandomWorkload | None = None
    orders: str | None = Field(None, description="directory written by `testbed datasets import-orders`")
    time_scale: float = Field(1.0, gt=0, description="multiplies order-log intervals")
    limit: int | None = Field(None, ge=1, description="at most this many orders per episode")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> WorkloadConfig:
        given = [k for k in ("parts", "random", "orders") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give exactly one of parts, random, orders (got {', '.join(given)})")
        return self


class PolicyConfig(Strict):
    """Where actions come from: a built-in policy in-process, a served one, or a remote endpoint."""

    builtin: str | None = Field(None, description="in-process policy: 'expert' or 'pkg.module:Class'")
    serve: str | None = Field(None, description="start `testbed serve-policy TARGET` as a child process")
    endpoint: str | None = Field(None, description="grpc://host:port or ws://host:port")
    protocol: Literal["testbed", "openpi"] = "testbed"
    args: dict[str, str] = Field(default_factory=dict, description="constructor arguments for builtin/serve")
    token_env: str | None = Field(None, description="environment variable holding the bearer token")
    deadline_s: float = Field(1.0, gt=0, description="per-request deadline")
    reconnect_s: float = Field(10.0, ge=0, description="how long an episode start waits for a policy that is down")
    obs_keys: dict[str, str] = Field(default_factory=dict, description="openpi: our key -> their key")
    action_key: str = Field("actions", description="openpi: key of the action array in the server's answer")
    chunk_size: int = Field(10, ge=1, le=1000, description="openpi: the longest chunk accepted")
    control_hz: float = Field(20.0, gt=0, le=1000, description="openpi: rate at which the server is asked")
    action_kind: Literal["joint_positions", "joint_deltas"] = "joint_positions"
    static_obs: dict[str, str] = Field(default_factory=dict, description="openpi: constant fields, e.g. prompt")
    merge: Literal["latest", "average", "weighted"] = "latest"
    merge_weight: float = Field(0.7, ge=0, le=1)
    request_mode: Literal["pipelined", "blocking"] = Field(
        "pipelined", description="pipelined: ask at the policy's rate while earlier chunks are on the wire; "
                                 "blocking: the baseline of a synchronous client (one request at a time, one "
                                 "step's action per answer; lockstep only)")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> PolicyConfig:
        given = [k for k in ("builtin", "serve", "endpoint") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of builtin, serve, endpoint (got {', '.join(given) or 'none'})")
        if self.endpoint is not None and not self.endpoint.startswith(("grpc://", "grpcs://", "ws://", "wss://")):
            raise ValueError(f"endpoint must start with grpc://, grpcs:// or ws://, got {self.endpoint!r}")
        websocket = self.endpoint is not None and self.endpoint.startswith(("ws://", "wss://"))
        if websocket != (self.protocol == "openpi"):
            raise ValueError("ws:// endpoints speak protocol: openpi, grpc:// endpoints protocol: testbed")
        if self.protocol == "openpi" and not self.obs_keys:
            raise ValueError("protocol openpi needs obs_keys (our observation key -> the server's key)")
        return self

    def declared_rate(self) -> tuple[str, float] | None:
        """The policy rate the launch file gives, with the field giving it, or None when the policy's spec decides.

        openpi endpoints are asked at ``control_hz``; built-in and served policies take ``args.control_hz``
        (a constructor argument) when it is given as a number. Other policies announce their rate only in
        their spec, at run start.
        """
        if self.protocol == "openpi":
            return "policy.control_hz", self.control_hz
        given = self.args.get("control_hz")
        try:
            hz = float(given) if given is not None else math.nan
        except ValueError:
            return None  # the policy's constructor refuses it, naming the argument
        return ("policy.args.control_hz", hz) if math.isfinite(hz) and hz > 0 else None


class ControllerServiceConfig(Strict):
    """Expose the run's robots over gRPC (testbed.v1.ControllerService) while it runs."""

    serve: bool = False
    host: str = Field("127.0.0.1", description="bind address; beyond loopback a token is required")
    port: int = Field(0, ge=0, le=65535, description="0 picks a free port (written to the run_start event)")
    token_env: str | None = Field(None, description="environment variable holding the bearer token")


ROS_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"  # one token of a ROS 2 name (node, namespace part, topic part)


class Ros2Config(Strict):
    """The run as a ROS 2 node (rclpy): joint states, /tf, /clock, cameras and events out, trajectories in."""

    enabled: bool = False
    domain_id: int | None = Field(None, ge=0, le=232, description="ROS_DOMAIN_ID of the run's node (default: "
                                                                  "the environment's, else 0)")
    namespace: str = Field("/cell", pattern=r"^(/[A-Za-z][A-Za-z0-9_]*)+$", description="topics of the cell and "
                                                                                       "its robots go under it")
    rate_hz: float = Field(50.0, gt=0, le=1000, description="joint states, /tf and /clock at most this often "
                                                            "(wall clock; in lockstep the run is faster)")
    commands: Literal["external", "all"] = Field(
        "external", description="robots that follow joint_trajectory: external ones only, or all (a trajectory "
                                "then takes over from the robot's policy or job until it ends)")
    images: bool = Field(True, description="publish camera images as they are rendered")
    discovery_range: Literal["localhost", "subnet"] = Field(
        "localhost", description="ROS_AUTOMATIC_DISCOVERY_RANGE of the node's process: localhost (only this machine "
                                 "reaches the node) or subnet (any host on the network; ROS 2 has no authentication, "
                                 "so only with no robot that follows joint_trajectory, and the node then refuses "
                                 "lifecycle requests)")


class SuccessConfig(Strict):
    """When an episode counts as a success."""

    min_placed_fraction: float = Field(1.0, gt=0, le=1, description="share of the episode's parts in the right bin")
    allow_drops: bool = False


SITE_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
JURISDICTION_PATTERN = r"^[A-Z]{2}$"  # ISO 3166-1 alpha-2; a jurisdiction needs a profile under sites.profiles
DATA_CLASS_PATTERN = r"^[a-z][a-z0-9-]*$"
CONDITION_KINDS = ("consent", "contract", "approval")


class SiteSafety(Strict):
    """A site's own safety settings; they may only tighten its jurisdiction's profile (checked by testbed.sites)."""

    speed_scale_max: float | None = Field(None, gt=0, le=1.0, description="highest controller speed_scale allowed")
    tcp_speed_limit_m_s: float | None = Field(None, gt=0, description="monitored TCP speed ceiling at this site")
    require_reduced_speed: bool | None = Field(None, description="every robot monitors the reduced-speed limit")
    reduced_speed_tcp_m_s: float | None = Field(None, gt=0, description="the reduced-speed TCP limit")
    collaborative: bool | None = Field(None, description="robots share space with people: collaborative limits apply")
    manual_reset_after_protective_stop: bool | None = None


class SiteConfig(Strict):
    """One site: a name, the jurisdiction whose rules and safety profile apply there, and its network region."""

    name: str = Field(pattern=SITE_NAME_PATTERN)
    jurisdiction: str = Field(pattern=JURISDICTION_PATTERN, description="KR, US, JP, or any code with a profile")
    region: str | None = Field(None, min_length=1, description="network region for link defaults "
                                                              "(default: the jurisdiction profile's)")
    key_file: str | None = Field(None, min_length=1, description="pseudonymization key kept at this site")
    safety: SiteSafety = SiteSafety()


class Placement(Strict):
    """Which site each party sits at."""

    cell: str = Field(pattern=SITE_NAME_PATTERN, description="the cell, its robots and their controllers")
    policy: str | None = Field(None, pattern=SITE_NAME_PATTERN, description="the policy (default: the cell's site)")
    data: str | None = Field(None, pattern=SITE_NAME_PATTERN, description="the workload's dataset (default: the "
                                                                           "cell's site)")


class LinkOverride(Strict):
    """Settings of the link between two sites that replace the profile's defaults."""

    between: tuple[str, str]
    rtt_ms: float | None = Field(None, ge=0)
    jitter_ms: float | None = Field(None, ge=0)
    loss: float | None = Field(None, ge=0, lt=1)
    bandwidth_mbps: float | None = Field(None, gt=0)
    source: str | None = Field(None, min_length=1, description="where the figures come from")


class ConditionRecord(Strict):
    """Evidence a rule's condition is met: a consent record, a contract reference or an approval id."""

    kind: Literal["consent", "contract", "approval"]
    ref: str = Field(min_length=1, description="the record's identifier, as filed at the sending site")
    to: tuple[str, ...] | None = Field(None, description="jurisdictions it covers, e.g. [JP] (default: any)")

    @model_validator(mode="after")
    def _jurisdictions(self) -> ConditionRecord:
        bad = [j for j in self.to or () if not re.match(JURISDICTION_PATTERN, j)]
        if bad or self.to == ():
            raise ValueError(f"to: expected jurisdiction codes such as [JP, US], got {list(self.to or ())!r}")
        return self


class SitesConfig(Strict):
    """Sites, where each party sits, link overrides, transfer conditions and data classes of run fields."""

    profiles: str = Field("launch/sites", min_length=1, description="directory of site profiles (rules, links, "
                                                                    "safety)")
    sites: tuple[SiteConfig, ...] = Field(min_length=1)
    placement: Placement
    links: tuple[LinkOverride, ...] = ()
    conditions: dict[str, ConditionRecord] = Field(default_factory=dict, description="rule id -> the record that "
                                                                                     "meets its condition")
    data_classes: dict[str, str | tuple[str, ...]] = Field(
        default_factory=dict, description="run field (observation.state, action, policy.artifact, workload.t_s, ...) "
                                          "-> its data class or classes")

    def classes_of(self, field: str) -> tuple[str, ...] | None:
        """The classes the launch file gives ``field``, or None when it gives none."""
        given = self.data_classes.get(field)
        return (given,) if isinstance(given, str) else given

    @model_validator(mode="after")
    def _sites_exist(self) -> SitesConfig:
        names = [s.name for s in self.sites]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"site names must be unique; repeated: {', '.join(dupes)}")
        for role in ("cell", "policy", "data"):
            site = getattr(self.placement, role)
            if site is not None and site not in names:
                raise ValueError(f"placement.{role}: unknown site {site!r} (sites: {', '.join(names)})")
        pairs = set()
        for i, link in enumerate(self.links):
            a, b = link.between
            unknown = [n for n in (a, b) if n not in names]
            if unknown:
                raise ValueError(f"links[{i}].between: unknown site {unknown[0]!r} (sites: {', '.join(names)})")
            if a == b:
                raise ValueError(f"links[{i}].between: a link joins two different sites, got {a!r} twice")
            if frozenset((a, b)) in pairs:
                raise ValueError(f"links[{i}].between: the link {a} <-> {b} is given twice")
            pairs.add(frozenset((a, b)))
        for name in self.data_classes:
            classes = self.classes_of(name) or ()
            bad = [c for c in classes if not re.match(DATA_CLASS_PATTERN, c)]
            if bad or not classes:
                raise ValueError(f"data_classes.{name}: expected a list of class names such as personal or "
                                 f"industrial-confidential, got {list(classes)!r}")
        return self


class Scenario(Strict):
    """A whole launch file."""

    @model_validator(mode="after")
    def _external_robots_need_the_service(self) -> Scenario:
        for i, robot in enumerate(self.cell.robots):
            if robot.external and robot.job is not None:
                raise ValueError(f"cell.robots[{i}]: a robot is driven by a job or externally, not both")
            if robot.external and not (self.controller_service.serve or self.ros2.enabled):
                raise ValueError(f"cell.robots[{i}].external needs controller_service.serve: true "
                                 "or ros2.enabled: true")
        if self.ros2.enabled:
            named = [(f"cell.robots[{i}].name", r.name) for i, r in enumerate(self.cell.robots)]
            named += [(f"cell.cameras[{i}].name", c.name) for i, c in enumerate(self.cell.cameras)]
            for where, name in named:
                if not re.match(ROS_NAME_PATTERN, name):
                    raise ValueError(f"{where}: {name!r} is not a valid ROS 2 name for ros2.enabled (letters, digits "
                                     "and underscores, starting with a letter)")
        if self.randomize.part_mix_concentration is not None and self.workload.random is None:
            raise ValueError("randomize.part_mix_concentration: a part mix needs a random workload "
                             "(workload.random), not scripted parts or an order log")
        if self.policy.request_mode == "blocking" and self.sim.realtime:
            raise ValueError("policy.request_mode blocking is a lockstep baseline; real-time runs are pipelined")
        return self

    @model_validator(mode="after")
    def _physics_keeps_up_with_the_policy(self) -> Scenario:
        # the loop asks the policy every max(1, round(physics_hz / policy_hz)) steps: a slower physics rate would
        # silently ask it less often than it was made for; the error is located at sim.physics_hz, not the top level
        declared = self.policy.declared_rate()
        if declared is None or self.sim.physics_hz >= declared[1]:
            return self
        where, hz = declared
        message = (f"Value error, expected at least the policy's rate, {where} {hz:g} Hz (one physics step per "
                   "policy step at least): raise sim.physics_hz or lower the policy's rate")
        raise ValidationError.from_exception_data("Scenario", [InitErrorDetails(
            type=PydanticCustomError("value_error", message), loc=("sim", "physics_hz"), input=self.sim.physics_hz)])

    @field_validator("ros2")
    @classmethod
    def _no_unauthenticated_commands_beyond_loopback(cls, ros2: Ros2Config, info: ValidationInfo) -> Ros2Config:
        cell = info.data.get("cell")
        if not ros2.enabled or ros2.discovery_range == "localhost" or cell is None:
            return ros2
        takers = [f"cell.robots[{i}] ({r.name})" for i, r in enumerate(cell.robots)
                  if r.external or ros2.commands == "all"]
        if takers:
            why = "commands: all" if ros2.commands == "all" else "external: true"
            raise ValueError(
                f"discovery_range: subnet lets any host on the network reach the node, and {', '.join(takers)} "
                f"would follow its joint_trajectory commands ({why}); ROS 2 has no authentication without SROS2 "
                "security, which this install's Fast DDS lacks (built without security), so commands stay on "
                "loopback: use discovery_range: localhost, or publish only (no external robots, commands: external)")
        return ros2

    name: str = Field(min_length=1)
    seed: int = Field(0, ge=0)
    episodes: int = Field(1, ge=1, le=100000)
    sim: SimConfig = SimConfig()
    cell: CellConfig = CellConfig()
    workload: WorkloadConfig = WorkloadConfig(random=RandomWorkload())
    policy: PolicyConfig = PolicyConfig(builtin="expert")
    success: SuccessConfig = SuccessConfig()
    randomize: RandomizeConfig = Field(RandomizeConfig(), description="per-episode domain randomization "
                                                                      "(default: none)")
    controller_service: ControllerServiceConfig = ControllerServiceConfig()
    ros2: Ros2Config = Ros2Config()
    record: bool = Field(False, description="keep episodes as a LeRobot dataset under runs/<id>/dataset")
    sites: SitesConfig | None = Field(None, description="sites, links and transfer rules (testbed.sites); without it "
                                                        "the run sits at one implicit local site")
