"""Per-episode tallies and the run's ``metrics.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class EpisodeTally:
    """What one episode did."""

    episode: int
    parts: int = 0
    placed: int = 0
    misplaced: int = 0
    dropped: int = 0
    collisions: int = 0
    safety_stops: int = 0
    policy_timeouts: int = 0
    duration_s: float = 0.0
    success: bool = False
    end_reason: str = ""
    cycle_times_s: list[float] = field(default_factory=list)
    policy_errors: list[str] = field(default_factory=list)  # distinct client failures (PolicyClientFailed)
    starved_steps: int = 0  # control steps a policy-driven robot had no action left and held
    late_chunks: int = 0  # chunks that arrived after every one of their rows was due


def _percentiles(values: list[float], qs: dict[str, float], digits: int) -> dict[str, float | None]:
    if not values:
        return {name: None for name in qs}
    arr = np.asarray(values, dtype=np.float64)
    return {name: round(float(np.percentile(arr, q)), digits) for name, q in qs.items()}


def build_metrics(*, run_id: str, scenario: str, tallies: list[EpisodeTally], policy_latency_ms: list[float],
                  sim_s: float, wall_s: float, control: dict[str, Any], physics_s: float = 0.0,
                  physics_steps: int = 0, physics_hz: float = 0.0) -> dict[str, Any]:
    """Assemble ``metrics.json`` with the fields DESIGN.md promises.

    ``physics_s`` is the wall time the episodes spent inside pybullet's ``stepSimulation`` over
    ``physics_steps`` steps at ``physics_hz``: ``physics_us_per_step`` and the real-time factor that physics
    alone would allow, ``physics_rtf_ceiling`` (None when not measured).
    """
    physics_step_s = physics_s / physics_steps if physics_steps and physics_s > 0 else None
    cycle = [c for t in tallies for c in t.cycle_times_s]
    cycle_stats = _percentiles(cycle, {"p50": 50, "p95": 95}, 4)
    return {
        "run_id": run_id,
        "scenario": scenario,
        "episodes": len(tallies),
        "success_rate": round(sum(t.success for t in tallies) / max(len(tallies), 1), 6),
        "parts_total": sum(t.parts for t in tallies),
        "parts_placed": sum(t.placed for t in tallies),
        "parts_misplaced": sum(t.misplaced for t in tallies),
        "parts_dropped": sum(t.dropped for t in tallies),
        "cycle_time_s": {"mean": round(float(np.mean(cycle)), 4) if cycle else None, **cycle_stats},
        "collisions": sum(t.collisions for t in tallies),
        "safety_stops": sum(t.safety_stops for t in tallies),
        "policy_timeouts": sum(t.policy_timeouts for t in tallies),
        "policy_errors": list(dict.fromkeys(e for t in tallies for e in t.policy_errors)),
        "policy_latency_ms": _percentiles(policy_latency_ms, {"p50": 50, "p99": 99}, 4),
        "starved_steps": sum(t.starved_steps for t in tallies),
        "late_chunks": sum(t.late_chunks for t in tallies),
        "sim_s": round(sim_s, 6),
        "sim_rtf": round(sim_s / wall_s, 3) if wall_s > 0 else None,
        "physics_us_per_step": round(physics_step_s * 1e6, 3) if physics_step_s else None,
        "physics_rtf_ceiling": round(1.0 / (physics_step_s * physics_hz), 3) if physics_step_s and physics_hz else None,
        "control": control,
        "episode_results": [
            {k: v for k, v in asdict(t).items() if k != "cycle_times_s"} for t in tallies
        ],
    }
