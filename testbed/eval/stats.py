"""Summaries of an evaluation's results rows: success with Wilson intervals, cycle time, throughput, cost.

``summarize(rows, cost=..., wall_s=..., workers=...)`` returns the content of
``summary.json``: one group per (policy, variation) and the overall figures. The
rows are the evaluation contract's (one per episode, as in ``results.parquet``).
Every figure is defined in the summary's own ``definitions`` block.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from testbed.errors import ResultsError
from testbed.eval.cost import CostSettings, EnergyMeasurement
from testbed.eval.journal import LATENCIES_KEY
from testbed.eval.metrics import _percentiles

REQUIRED_COLUMNS = ("episode_id", "policy", "variation", "variation_label", "success", "parts_placed",
                    "cycle_times_s", "sim_s", "wall_s", "cpu_s", "policy_latency_ms_p50", "policy_latency_ms_p95")

# optional: the journal's raw round trips of an episode (ms), not a results column
RAW_LATENCIES = LATENCIES_KEY

DEFINITIONS = {
    "success_ci95": "95 % Wilson score interval of the success rate (z = 1.96)",
    "cycle_time_s": "per placed part, pooled over the group's episodes: mean and 95th percentile (linear "
                    "interpolation); null when no part was placed",
    "parts_per_min": "placed parts per simulated minute: sum(parts_placed) / sum(sim_s) × 60 (simulated clock, "
                     "not wall time)",
    "policy_latency_ms": "policy round trip in ms; basis 'pooled round trips': p50 and p95 of every round trip of "
                         "the group's episodes (rows carry the journal's raw policy_latency_ms samples); basis "
                         "'median of episode percentiles': median over episodes of each episode's own p50, and of "
                         "its own p95 (not pooled percentiles); episodes: how many had a round trip; null when none",
    "cpu_s_per_episode": "mean CPU seconds per episode: the worker process (all threads) and its policy-server "
                         "child, from episode start to end; with --policy-servers shared, plus an equal share of "
                         "the shared server's CPU seconds (from ready to the session's end) over the episodes it "
                         "served in that session",
    "wall_s_per_episode": "mean wall seconds of one episode's loop (workers run episodes side by side, so this is "
                          "not the evaluation's wall time divided by episodes)",
    "energy_j_per_episode": "mean joules per episode: each episode's cpu_s × the energy per CPU second "
                            "(see cost.method)",
    "cost_per_1000_episodes": "busy core-hours of 1,000 episodes (cpu_s_per_episode × 1000 / 3600) × "
                              "cost.price_per_core_hour",
    "overall.episodes_per_minute": "episodes / the evaluation's wall seconds × 60",
    "overall.workers": "the most worker processes any session of the evaluation started (at most one per batch, "
                       "so fewer than --workers when there are fewer batches)",
    "overall.reserved_core_s": "core-seconds held if each worker holds one core for its session's wall time: the "
                               "sum over sessions of wall_s × the workers that session started",
    "overall.cost_per_1000_episodes_reserved": "cost of 1,000 episodes if each worker holds one core for its "
                                               "session's whole wall time: reserved_core_s / episodes × 1000 / "
                                               "3600 × price_per_core_hour",
}


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion.

    ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)`` with ``p = successes / n``;
    unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or n.

    Args:
        successes: number of successes, 0 <= successes <= n.
        n: number of trials, n >= 1.
        z: standard normal quantile (1.96 for 95 %).

    Returns:
        ``(lo, hi)``, with lo exactly 0 when successes == 0 and hi exactly 1 when successes == n.

    Raises:
        ValueError: n < 1, successes outside 0..n, or z <= 0.
    """
    if n < 1:
        raise ValueError(f"wilson_interval: expected n >= 1 trials, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: expected 0 <= successes <= n = {n}, got {successes}")
    if not z > 0:
        raise ValueError(f"wilson_interval: expected z > 0, got {z}")
    p = successes / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    lo = 0.0 if successes == 0 else max(0.0, center - half)
    hi = 1.0 if successes == n else min(1.0, center + half)
    return lo, hi


def summarize(rows: Sequence[Mapping[str, Any]], *, cost: CostSettings, wall_s: float, workers: int,
              energy: EnergyMeasurement | None = None, reserved_core_s: float | None = None) -> dict[str, Any]:
    """The content of ``summary.json`` for an evaluation's rows.

    Args:
        rows: one mapping per episode with the contract's columns (``REQUIRED_COLUMNS`` at least);
            latency, cycle-time, cpu_s and wall_s values may be null. Rows that also carry the journal's
            raw round trips (``policy_latency_ms``: list of ms) give pooled latency percentiles.
        cost: prices and the declared power figure.
        wall_s: the evaluation's wall seconds (for episodes per minute).
        workers: worker processes the evaluation started (the most of any session).
        energy: RAPL energy measured around the evaluation (``EnergyMeter.measurement``); when None
            or not measured, energy is cpu_s × ``cost.cpu_watts_per_core``.
        reserved_core_s: core-seconds the workers held, summed over sessions (wall_s × workers started);
            None for one session: ``wall_s × workers``.

    Returns:
        ``{"groups": [...], "overall": {...}, "cost": {...}, "definitions": {...}}``; groups are ordered
        by variation index, then policy name, whatever the order of the rows.

    Raises:
        ResultsError: no rows, a required column missing, success not a bool, or an episode id appearing twice.
    """
    _check_rows(rows)
    joules_per_cpu_s, cost_block = _energy_rate(rows, cost, energy)
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((str(row["variation"]), str(row["policy"])), []).append(row)
    ordered = sorted(groups, key=lambda key: (_variation_index(key[0]), key[0], key[1]))
    summary_groups = [_group(groups[key], cost, joules_per_cpu_s) for key in ordered]

    figures = _figures(rows, cost, joules_per_cpu_s)
    episodes = len(rows)
    reserved = wall_s * workers if reserved_core_s is None else reserved_core_s
    overall = {
        "episodes": episodes,
        "successes": figures["successes"],
        "success_rate": figures["success_rate"],
        "success_ci95": figures["success_ci95"],
        "workers": int(workers),
        "wall_s": _round(wall_s),
        "episodes_per_minute": _round(episodes / wall_s * 60.0) if wall_s > 0 else None,
        "parts_per_min": figures["parts_per_min"],
        "cpu_s_total": _round(sum(_present(rows, "cpu_s"))),
        "cpu_s_per_episode": figures["cpu_s_per_episode"],
        "wall_s_per_episode": figures["wall_s_per_episode"],
        "energy_j_total": _round(sum(_present(rows, "cpu_s")) * joules_per_cpu_s),
        "energy_j_per_episode": figures["energy_j_per_episode"],
        "cost_per_1000_episodes": figures["cost_per_1000_episodes"],
        "reserved_core_s": _round(reserved) if reserved > 0 else None,
        "cost_per_1000_episodes_reserved": _round(reserved / episodes * 1000.0 / 3600.0 * cost.price_per_core_hour)
        if reserved > 0 else None,
    }
    return {"groups": summary_groups, "overall": overall, "cost": cost_block, "definitions": dict(DEFINITIONS)}


def _check_rows(rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        raise ResultsError("no results rows to summarize (expected one row per episode)")
    for index, row in enumerate(rows):
        missing = [c for c in REQUIRED_COLUMNS if c not in row]
        if missing:
            raise ResultsError(f"results row {index} ({row.get('episode_id', 'no episode_id')}): missing column(s) "
                               f"{', '.join(missing)}; expected the evaluation contract's columns")
        if not isinstance(row["success"], bool):
            raise ResultsError(f"results row {index} ({row['episode_id']}): success: expected true or false, got "
                               f"{row['success']!r}")
    seen: set[str] = set()
    for row in rows:
        episode_id = str(row["episode_id"])
        if episode_id in seen:
            raise ResultsError(f"results: episode {episode_id!r} appears twice; each episode must be counted once")
        seen.add(episode_id)


def _energy_rate(rows: Sequence[Mapping[str, Any]], cost: CostSettings,
                 energy: EnergyMeasurement | None) -> tuple[float, dict[str, Any]]:
    """Joules per CPU second, and the summary's ``cost`` block naming the method."""
    block: dict[str, Any] = {"price_per_core_hour": cost.price_per_core_hour, "currency": cost.currency}
    note = energy.note if energy is not None else "no energy meter was run"
    if energy is not None and energy.joules is not None:
        covered = [r for r in rows if energy.episode_ids is None or str(r["episode_id"]) in energy.episode_ids]
        cpu_s = sum(_present(covered, "cpu_s"))
        if cpu_s > 0:
            rate = energy.joules / cpu_s
            block.update(method="rapl", rapl={"joules": _round(energy.joules), "wall_s": _round(energy.wall_s),
                                              "episodes": len(covered), "cpu_s": _round(cpu_s),
                                              "joules_per_cpu_s": _round(rate), "note": note})
            return rate, block
        note = f"RAPL measured {energy.joules:.3f} J but the episodes it covered report no CPU seconds"
    block.update(method=cost.declared_method, cpu_watts_per_core=cost.cpu_watts_per_core, note=note)
    return cost.cpu_watts_per_core, block


def _group(rows: list[Mapping[str, Any]], cost: CostSettings, joules_per_cpu_s: float) -> dict[str, Any]:
    first = rows[0]
    figures = _figures(rows, cost, joules_per_cpu_s)
    return {
        "policy": str(first["policy"]),
        "variation": str(first["variation"]),
        "variation_label": str(first["variation_label"]),
        "episodes": len(rows),
        "successes": figures["successes"],
        "success_rate": figures["success_rate"],
        "success_ci95": figures["success_ci95"],
        "parts_placed": figures["parts_placed"],
        "cycle_time_s": figures["cycle_time_s"],
        "sim_s": figures["sim_s"],
        "parts_per_min": figures["parts_per_min"],
        "policy_latency_ms": _latency(rows),
        "cpu_s_per_episode": figures["cpu_s_per_episode"],
        "wall_s_per_episode": figures["wall_s_per_episode"],
        "energy_j_per_episode": figures["energy_j_per_episode"],
        "cost_per_1000_episodes": figures["cost_per_1000_episodes"],
    }


def _figures(rows: Sequence[Mapping[str, Any]], cost: CostSettings, joules_per_cpu_s: float) -> dict[str, Any]:
    """Figures shared by a group and the overall block."""
    n = len(rows)
    successes = sum(1 for r in rows if bool(r["success"]))
    lo, hi = wilson_interval(successes, n)
    cycle = [float(c) for r in rows for c in (r["cycle_times_s"] or []) if c is not None]
    placed = sum(int(r["parts_placed"] or 0) for r in rows)
    sim_s = sum(_present(rows, "sim_s"))
    cpu = _present(rows, "cpu_s")
    wall = _present(rows, "wall_s")
    cpu_per_episode = sum(cpu) / len(cpu) if cpu else None
    return {
        "successes": successes,
        "success_rate": _round(successes / n),
        "success_ci95": [_round(lo), _round(hi)],
        "parts_placed": placed,
        "cycle_time_s": {
            "mean": _round(float(np.mean(cycle))) if cycle else None,
            "p95": _percentiles(cycle, {"p95": 95}, 6)["p95"],
            "parts": len(cycle),
        },
        "sim_s": _round(sim_s),
        "parts_per_min": _round(placed / sim_s * 60.0) if sim_s > 0 else None,
        "cpu_s_per_episode": _round(cpu_per_episode),
        "wall_s_per_episode": _round(sum(wall) / len(wall)) if wall else None,
        "energy_j_per_episode": _round(cpu_per_episode * joules_per_cpu_s) if cpu_per_episode is not None else None,
        "cost_per_1000_episodes": _round(cpu_per_episode * 1000.0 / 3600.0 * cost.price_per_core_hour)
        if cpu_per_episode is not None else None,
    }


def _latency(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Pooled percentiles when every served episode carries its raw samples, else medians of episode percentiles."""
    served = [r for r in rows if r.get("policy_latency_ms_p50") is not None]
    samples = [r.get(RAW_LATENCIES) for r in served]
    if served and all(isinstance(s, list) and s for s in samples):
        pooled = [float(x) for s in samples for x in s]
        return {**_percentiles(pooled, {"p50": 50, "p95": 95}, 6),
                "episodes": len(served), "basis": "pooled round trips", "round_trips": len(pooled)}
    p50 = _present(served, "policy_latency_ms_p50")
    p95 = _present(served, "policy_latency_ms_p95")
    return {"p50": _round(float(np.median(p50))) if p50 else None,
            "p95": _round(float(np.median(p95))) if p95 else None,
            "episodes": len(served), "basis": "median of episode percentiles"}


def _present(rows: Iterable[Mapping[str, Any]], column: str) -> list[float]:
    """The column's finite values (null and NaN left out)."""
    values = []
    for row in rows:
        value = row.get(column)
        if value is not None and math.isfinite(float(value)):
            values.append(float(value))
    return values


def _variation_index(variation: str) -> int:
    match = re.fullmatch(r"v(\d+)", variation)
    return int(match.group(1)) if match else 1 << 30


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)
