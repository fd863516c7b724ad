"""Per-episode domain randomization: what one episode of a randomized cell looks like.

Every draw comes from generators seeded by ``(salt, quantity, run seed, episode index)`` only, so an
episode is the same whichever worker runs it, in whatever order, next to whichever other episodes.
Each quantity has its own stream: widening one range never changes what another draws. Per-part
values are drawn by arrival index (``EpisodeDraw.part(i)``), each from its own stream too, so they do
not depend on how many parts the episode has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from testbed.scenario.schema import RandomizeConfig
from testbed.scenario.workload import PART_TYPES

SALT = 0x52_41_4E_44  # "RAND": keeps these streams apart from the workload's (seed, episode) stream
# one stream per quantity; never renumber (that would change every randomized run)
_STREAM_SPEED, _STREAM_STOPPER, _STREAM_CAMERA, _STREAM_LIGHT, _STREAM_MIX, _STREAM_PART = range(6)
DEFAULT_LIGHT_AZIMUTH_DEG = 45.0
DEFAULT_LIGHT_ELEVATION_DEG = 60.0
DEFAULT_LIGHT_AMBIENT = 0.6  # pybullet's TinyRenderer default


def _rng(stream: int, seed: int, episode: int, *more: int) -> np.random.Generator:
    return np.random.default_rng([SALT, stream, seed, episode, *more])


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    return float(lo) if lo == hi else float(rng.uniform(lo, hi))


@dataclass(frozen=True)
class PartDraw:
    """How one arriving part differs from the nominal one.

    Args:
        lateral_m: offset of its centre across the belt (x), m.
        yaw_rad: yaw on the belt, rad.
        mass_scale: multiplies the part type's mass.
        friction: lateral friction coefficient, or None for the part's own.
    """

    lateral_m: float = 0.0
    yaw_rad: float = 0.0
    mass_scale: float = 1.0
    friction: float | None = None


@dataclass(frozen=True)
class LightDraw:
    """The TinyRenderer light of an episode (``getCameraImage``'s light arguments)."""

    direction: tuple[float, float, float]
    colour: tuple[float, float, float]
    ambient: float


@dataclass(frozen=True)
class EpisodeDraw:
    """One episode's randomization, applied by ``Cell.reset_episode`` and ``Cell.spawn``.

    Args:
        seed: the run seed it was drawn from.
        episode: the episode index it was drawn for.
        conveyor_speed_scale: multiplies ``cell.conveyor.speed``.
        stopper: whether the stoppers stand at the pick stations (else parts must be caught moving).
        camera_eye_offset_m: added to every camera's eye, m.
        camera_target_offset_m: added to every camera's target, m.
        light: the render light, or None for pybullet's default.
        part_mix: weights over ``PART_TYPES`` for a random workload, or None for uniform.
        config: the ranges per-part values are drawn from.
    """

    seed: int
    episode: int
    conveyor_speed_scale: float = 1.0
    stopper: bool = True
    camera_eye_offset_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    camera_target_offset_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    light: LightDraw | None = None
    part_mix: tuple[float, ...] | None = None
    config: RandomizeConfig = field(default_factory=RandomizeConfig)

    def part(self, arrival_index: int) -> PartDraw:
        """The draw of the episode's ``arrival_index``-th arriving part (0-based, in arrival order)."""
        cfg = self.config
        rng = _rng(_STREAM_PART, self.seed, self.episode, arrival_index)
        lateral = _uniform(rng, cfg.part_lateral_m)
        yaw = math.radians(_uniform(rng, cfg.part_yaw_deg))
        mass = _uniform(rng, cfg.part_mass_scale)
        friction = _uniform(rng, cfg.part_friction) if cfg.part_friction is not None else None
        return PartDraw(lateral, yaw, mass, friction)

    def summary(self) -> dict[str, object]:
        """A compact, JSON-ready description for the ``episode_start`` event."""
        out: dict[str, object] = {"stopper": self.stopper, "conveyor_speed_scale": round(self.conveyor_speed_scale, 4)}
        if any(self.camera_eye_offset_m) or any(self.camera_target_offset_m):
            out["camera_eye_offset_m"] = [round(v, 4) for v in self.camera_eye_offset_m]
            out["camera_target_offset_m"] = [round(v, 4) for v in self.camera_target_offset_m]
        if self.light is not None:
            out["light"] = {"direction": [round(v, 3) for v in self.light.direction],
                            "colour": [round(v, 3) for v in self.light.colour], "ambient": round(self.light.ambient, 3)}
        if self.part_mix is not None:
            out["part_mix"] = dict(zip(PART_TYPES, (round(w, 3) for w in self.part_mix), strict=True))
        return out


def draw_episode(config: RandomizeConfig, seed: int, episode: int) -> EpisodeDraw:
    """Draw one episode's randomization from ``(seed, episode)`` alone.

    Args:
        config: the launch file's ``randomize`` block.
        seed: the run seed (``scenario.seed``).
        episode: the episode index.

    Returns:
        The draw; with the default ``RandomizeConfig`` it changes nothing.
    """
    speed = _uniform(_rng(_STREAM_SPEED, seed, episode), config.conveyor_speed_scale)
    p_absent = config.stopper_absent_probability
    stopper = True if p_absent == 0 else bool(_rng(_STREAM_STOPPER, seed, episode).random() >= p_absent)
    cam = _rng(_STREAM_CAMERA, seed, episode)
    eye_u, target_u = cam.uniform(-1.0, 1.0, 3), cam.uniform(-1.0, 1.0, 3)
    eye = tuple(float(v) * config.camera_eye_jitter_m if config.camera_eye_jitter_m else 0.0 for v in eye_u)
    target = tuple(float(v) * config.camera_target_jitter_m if config.camera_target_jitter_m else 0.0
                   for v in target_u)
    light = None
    if config.light_randomized:
        rng = _rng(_STREAM_LIGHT, seed, episode)
        az = math.radians(_uniform(rng, config.light_azimuth_deg or (DEFAULT_LIGHT_AZIMUTH_DEG,) * 2))
        el = math.radians(_uniform(rng, config.light_elevation_deg or (DEFAULT_LIGHT_ELEVATION_DEG,) * 2))
        direction = (math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el))
        colour = tuple(float(1.0 - v) for v in rng.uniform(0.0, config.light_colour_jitter, 3))
        ambient = _uniform(rng, config.light_ambient or (DEFAULT_LIGHT_AMBIENT,) * 2)
        light = LightDraw(direction, colour, ambient)  # type: ignore[arg-type]
    mix = None
    if config.part_mix_concentration is not None:
        weights = _rng(_STREAM_MIX, seed, episode).dirichlet([config.part_mix_concentration] * len(PART_TYPES))
        mix = tuple(float(w) for w in weights)
    return EpisodeDraw(seed, episode, speed, stopper, eye, target, light, mix, config)  # type: ignore[arg-type]


__all__ = ["EpisodeDraw", "LightDraw", "PartDraw", "draw_episode"]
