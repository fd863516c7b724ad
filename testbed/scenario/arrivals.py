"""Which parts arrive when: every episode's arrivals, drawn from (run seed, episode index) before it starts.

Random workloads take their part types from the episode's part mix when the launch file randomizes
it (``testbed.scenario.randomize.draw_episode``). Runs plan all their episodes up front
(``plan_arrivals``); the gymnasium environment, which has no fixed episode count, asks
``ArrivalPlan.arrivals`` for one episode at a time. Both are the same rule.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from testbed.errors import DatasetError
from testbed.scenario.randomize import draw_episode
from testbed.scenario.schema import Scenario
from testbed.scenario.workload import PART_TYPES, PartArrival


class ArrivalPlan:
    """The launch file's workload, ready to give any episode's arrivals.

    Args:
        scenario: the validated launch file (an order log is read once, here).

    Raises:
        DatasetError: the order log cannot be read or has bad rows.
    """

    def __init__(self, scenario: Scenario) -> None:
        self.workload = scenario.workload
        self.randomize = scenario.randomize
        self._orders = (_load_orders(Path(self.workload.orders), self.workload.time_scale)
                        if self.workload.orders is not None else None)

    def arrivals(self, seed: int, episode: int) -> list[PartArrival]:
        """Arrivals of episode ``episode`` of a run seeded ``seed``, in time order."""
        workload = self.workload
        if self._orders is not None:
            orders = self._orders
            if not orders:
                return []
            window = workload.limit or len(orders)
            start = (episode * window) % len(orders)
            chunk = [orders[(start + i) % len(orders)] for i in range(min(window, len(orders)))]
            t0 = chunk[0].t_s
            rebased: list[PartArrival] = []
            for a in chunk:
                # wrapping past the end of the log restarts its clock: keep arrivals in order
                rebased.append(replace(a, t_s=max(a.t_s - t0, rebased[-1].t_s if rebased else 0.0)))
            return rebased
        if workload.parts is not None:
            return [PartArrival(t_s=e.t, part_type=e.type, order_id=f"part-{i}")
                    for i, e in enumerate(sorted(workload.parts, key=lambda e: e.t))]
        rnd = workload.random
        assert rnd is not None  # the schema gives exactly one source, random by default
        rng = np.random.default_rng([seed, episode])
        times = np.arange(rnd.count) * rnd.interval_s + rng.uniform(0.0, rnd.jitter_s, rnd.count)
        mix = draw_episode(self.randomize, seed, episode).part_mix
        if mix is None:
            kinds = rng.integers(0, len(rnd.types), rnd.count)
        else:  # this episode's weights over the workload's own types
            weights = np.array([mix[PART_TYPES.index(t)] for t in rnd.types]) + 1e-12
            kinds = rng.choice(len(rnd.types), rnd.count, p=weights / weights.sum())
        return [PartArrival(t_s=round(float(t), 6), part_type=rnd.types[int(k)], order_id=f"ep{episode}-{i}")
                for i, (t, k) in enumerate(zip(times, kinds, strict=True))]

    def most_per_type(self) -> dict[str, int]:
        """An upper bound of the parts of each type in any one episode (the cell's part pool)."""
        workload = self.workload
        if self._orders is not None:
            window = min(workload.limit or len(self._orders), len(self._orders))
            present = {a.part_type for a in self._orders}
            return {name: window if name in present else 0 for name in PART_TYPES}
        if workload.parts is not None:
            return {name: sum(1 for e in workload.parts if e.type == name) for name in PART_TYPES}
        rnd = workload.random
        assert rnd is not None
        return {name: rnd.count if name in rnd.types else 0 for name in PART_TYPES}


def plan_arrivals(scenario: Scenario) -> list[list[PartArrival]]:
    """Arrivals per episode of a run, fully determined by the launch file and its seed.

    Scripted parts repeat every episode; random parts are drawn from ``(seed, episode)``; an order
    log is consumed in windows of ``limit`` orders per episode (the whole log each episode when no
    limit is set), wrapping around at its end, times re-based to each window's first order.

    Raises:
        DatasetError: the order log cannot be read or has bad rows.
    """
    plan = ArrivalPlan(scenario)
    return [plan.arrivals(scenario.seed, episode) for episode in range(scenario.episodes)]


def _load_orders(directory: Path, time_scale: float) -> list[PartArrival]:
    """Arrivals from an imported order dataset, or from a raw ``orders.csv`` + ``card.yaml`` imported on the fly."""
    from testbed.data.orders import import_orders, load_order_workload

    if (directory / "orders.parquet").is_file() or not (directory / "orders.csv").is_file():
        return load_order_workload(directory, time_scale=time_scale)
    with tempfile.TemporaryDirectory() as scratch:
        report = import_orders(directory / "orders.csv", Path(scratch))
        if report.errors:
            shown = "; ".join(report.error_lines()[:3])
            raise DatasetError(f"workload.orders: {directory}/orders.csv has {report.rows_rejected} bad row(s): "
                               f"{shown}. Import it with `testbed datasets import-orders` to keep the good rows")
        return load_order_workload(Path(scratch), time_scale=time_scale)
