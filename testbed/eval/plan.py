"""Which parts arrive when, for every episode of a run, decided before the first step."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from testbed.errors import DatasetError
from testbed.scenario.schema import Scenario
from testbed.scenario.workload import PART_TYPES, PartArrival
from testbed.sim.randomize import draw_episode


def plan_arrivals(scenario: Scenario) -> list[list[PartArrival]]:
    """Arrivals per episode, fully determined by the launch file and its seed.

    Scripted parts repeat every episode; random parts are drawn from
    ``(seed, episode)``, their types by the episode's part mix when ``randomize.part_mix_concentration``
    is set (the same draw the cell gets, ``testbed.sim.randomize.draw_episode``); an order log is
    consumed in windows of ``limit`` orders per episode (the whole log each episode when no limit is
    set), wrapping around at its end, times re-based to each window's first order.
    """
    workload = scenario.workload
    plans: list[list[PartArrival]] = []
    if workload.orders is not None:
        orders = _load_orders(Path(workload.orders), workload.time_scale)
        window = workload.limit or len(orders)
        for episode in range(scenario.episodes):
            start = (episode * window) % max(len(orders), 1)
            chunk = [orders[(start + i) % len(orders)] for i in range(min(window, len(orders)))]
            t0 = chunk[0].t_s if chunk else 0.0
            rebased: list[PartArrival] = []
            for a in chunk:
                # wrapping past the end of the log restarts its clock: keep arrivals in order
                rebased.append(replace(a, t_s=max(a.t_s - t0, rebased[-1].t_s if rebased else 0.0)))
            plans.append(rebased)
    elif workload.parts is not None:
        scripted = [PartArrival(t_s=e.t, part_type=e.type, order_id=f"part-{i}") for i, e in
                    enumerate(sorted(workload.parts, key=lambda e: e.t))]
        plans = [list(scripted) for _ in range(scenario.episodes)]
    else:
        rnd = workload.random
        assert rnd is not None
        for episode in range(scenario.episodes):
            rng = np.random.default_rng([scenario.seed, episode])
            times = np.arange(rnd.count) * rnd.interval_s + rng.uniform(0.0, rnd.jitter_s, rnd.count)
            mix = draw_episode(scenario.randomize, scenario.seed, episode).part_mix
            if mix is None:
                kinds = rng.integers(0, len(rnd.types), rnd.count)
            else:  # this episode's weights over the workload's own types
                weights = np.array([mix[PART_TYPES.index(t)] for t in rnd.types]) + 1e-12
                kinds = rng.choice(len(rnd.types), rnd.count, p=weights / weights.sum())
            plans.append([PartArrival(t_s=round(float(t), 6), part_type=rnd.types[int(k)],
                                      order_id=f"ep{episode}-{i}") for i, (t, k) in enumerate(zip(times, kinds,
                                                                                                   strict=True))])
    return plans


def _load_orders(directory: Path, time_scale: float) -> list[PartArrival]:
    """Arrivals from an imported order dataset, or from a raw ``orders.csv`` + ``card.yaml`` imported on the fly.

    Raises:
        DatasetError: the raw log has bad rows (import it with ``testbed datasets import-orders`` to keep
            the good ones and see every problem).
    """
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
