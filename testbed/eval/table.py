"""The final table ``testbed eval`` prints: one row per (policy, variation) from ``summary.json``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.table import Table


def summary_table(summary: Mapping[str, Any]) -> Table:
    """A rich table of a summary (``summarize(...)``'s result).

    Columns: policy, variation, episodes, success rate with its 95 % Wilson interval,
    cycle time mean / p95, placed parts per simulated minute, CPU seconds per episode,
    energy per episode and cost per 1,000 episodes. The title carries the overall
    figures, the caption how energy and cost were obtained. Missing figures show "–".
    """
    overall = summary["overall"]
    cost = summary["cost"]
    currency = cost["currency"]
    rate = overall.get("episodes_per_minute")
    title = (f"{overall['episodes']} episodes, {overall['workers']} worker(s), {_num(overall['wall_s'], '.1f')} s wall"
             + (f", {rate:.1f} episodes/min" if rate is not None else ""))
    caption = (f"energy: {cost['method']}; cost at {cost['price_per_core_hour']:g} {currency} per busy core-hour; "
               "parts/min on the simulated clock")
    table = Table(title=title, caption=caption)
    for name in ("policy", "variation", "episodes", "success [95 % CI]", "cycle s mean / p95", "parts/min (sim)",
                 "CPU s/episode", "energy J/episode", f"{currency} per 1k episodes"):
        table.add_column(name, justify="left" if name in ("policy", "variation") else "right")
    for group in summary["groups"]:
        lo, hi = group["success_ci95"]
        cycle = group["cycle_time_s"]
        table.add_row(
            str(group["policy"]),
            str(group["variation_label"]),
            str(group["episodes"]),
            f"{group['successes']}/{group['episodes']} = {group['success_rate']:.3f} [{lo:.3f}, {hi:.3f}]",
            f"{_num(cycle['mean'], '.2f')} / {_num(cycle['p95'], '.2f')}",
            _num(group["parts_per_min"], ".2f"),
            _num(group["cpu_s_per_episode"], ".2f"),
            _num(group["energy_j_per_episode"], ".1f"),
            _num(group["cost_per_1000_episodes"], ".4f"),
        )
    return table


def _num(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)
