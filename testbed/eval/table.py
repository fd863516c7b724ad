"""The final table ``testbed eval`` prints: one row per (policy, variation) from ``summary.json``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich import box
from rich.table import Table


def summary_table(summary: Mapping[str, Any]) -> Table:
    """A rich table of a summary (``summarize(...)``'s result).

    Columns: policy, variation (label), episodes, success rate (successes/episodes), its
    95 % Wilson interval, cycle time mean/p95 (s), placed parts per simulated minute, CPU seconds
    per episode, energy per episode (J) and cost per 1,000 episodes. The title carries the overall
    figures, the caption how energy and cost were obtained. Missing figures show "–".
    """
    overall = summary["overall"]
    cost = summary["cost"]
    currency = cost["currency"]
    rate = overall.get("episodes_per_minute")
    title = (f"{overall['episodes']} episodes, {overall['workers']} worker(s), {_num(overall['wall_s'], '.1f')} s wall"
             + (f", {rate:.1f} episodes/min" if rate is not None else ""))
    caption = (f"n: episodes; 95 % CI: Wilson score interval; cycle s: mean/p95 per placed part; parts/min on the "
               f"simulated clock; CPU s, J: per episode; energy {cost['method']}; cost at "
               f"{cost['price_per_core_hour']:g} {currency} per busy core-hour")
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAVY, collapse_padding=True)
    table.add_column("policy", overflow="fold", min_width=6)
    table.add_column("variation", overflow="fold", min_width=12, ratio=1)  # long labels take what the numbers leave
    for name in ("n", "success", "95 % CI", "cycle s", "parts/min", "CPU s", "J", f"{currency}/1k"):
        # numbers never break or shorten: a clipped interval would misread
        table.add_column(name, justify="right", no_wrap=True, min_width=5)
    for group in summary["groups"]:
        lo, hi = group["success_ci95"]
        cycle = group["cycle_time_s"]
        table.add_row(
            str(group["policy"]),
            str(group["variation_label"]),
            str(group["episodes"]),
            f"{group['successes']}/{group['episodes']} = {group['success_rate']:.3f}",
            f"{lo:.3f}–{hi:.3f}",
            f"{_num(cycle['mean'], '.2f')}/{_num(cycle['p95'], '.2f')}",
            _num(group["parts_per_min"], ".2f"),
            _num(group["cpu_s_per_episode"], ".2f"),
            _num(group["energy_j_per_episode"], ".1f"),
            _num(group["cost_per_1000_episodes"], ".4f"),
        )
    return table


def _num(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)
