"""PNG plots of an evaluation: success per variation with Wilson intervals, and policy latency per policy.

matplotlib draws through its Agg canvas directly (no pyplot, no global backend
switch), so plotting works without a display and leaves the process's state alone.
It comes with the ``plots`` extra: ``pip install 'testbed[plots]'``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from testbed.errors import FeatureUnavailable

SUCCESS_PNG = "success_per_variation.png"
LATENCY_PNG = "policy_latency_per_policy.png"


def write_plots(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], out_dir: Path, *,
                notes: list[str] | None = None) -> list[Path]:
    """Write the evaluation's plots as PNG files into ``out_dir`` (created if needed).

    - ``success_per_variation.png``: success rate per variation (x, by label) with
      its 95 % Wilson interval, one series per policy (from ``summary["groups"]``).
    - ``policy_latency_per_policy.png``: box plot per policy of the episodes' own
      p50 and p95 policy round trips (from ``rows``); skipped when no episode had a
      policy round trip, with a line saying so appended to ``notes``.

    Args:
        rows: the results rows (``policy``, ``policy_latency_ms_p50``, ``policy_latency_ms_p95``).
        summary: ``summarize(...)``'s result.
        out_dir: directory for the PNGs.
        notes: if given, why a plot was skipped is appended here.

    Returns:
        The paths written, in the order above.

    Raises:
        FeatureUnavailable: matplotlib is not installed (the ``plots`` extra).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise FeatureUnavailable("evaluation plots need matplotlib: install the plots extra "
                                 "(pip install 'testbed[plots]')") from exc
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [_success_plot(summary, out_dir / SUCCESS_PNG, Figure, FigureCanvasAgg)]
    latency = _latency_plot(rows, out_dir / LATENCY_PNG, Figure, FigureCanvasAgg)
    if latency is not None:
        written.append(latency)
    elif notes is not None:
        notes.append(f"{LATENCY_PNG} not written: no episode had a policy round trip (no latency recorded)")
    return written


def _save(figure: Any, canvas_type: Any, path: Path) -> Path:
    canvas_type(figure)
    figure.tight_layout()
    # no Software tag: the same results give the same bytes whatever matplotlib version drew them
    figure.savefig(path, format="png", dpi=100, metadata={"Software": None})
    return path


def _success_plot(summary: Mapping[str, Any], path: Path, figure_type: Any, canvas_type: Any) -> Path:
    groups = list(summary["groups"])
    labels = list(dict.fromkeys(str(g["variation_label"]) for g in groups))
    policies = sorted(dict.fromkeys(str(g["policy"]) for g in groups))
    figure = figure_type(figsize=(max(6.0, 1.5 * len(labels) + 2.0), 5.0))
    axes = figure.add_subplot()
    width = 0.6 / max(len(policies), 1)
    for number, policy in enumerate(policies):
        mine = {str(g["variation_label"]): g for g in groups if str(g["policy"]) == policy}
        xs, ys, below, above = [], [], [], []
        for index, label in enumerate(labels):
            if label not in mine:
                continue
            group = mine[label]
            lo, hi = group["success_ci95"]
            xs.append(index + (number - (len(policies) - 1) / 2) * width)
            ys.append(group["success_rate"])
            below.append(group["success_rate"] - lo)
            above.append(hi - group["success_rate"])
        axes.errorbar(xs, ys, yerr=[below, above], fmt="o", capsize=4, label=policy)
    axes.set_xticks(range(len(labels)))
    # long labels would overlap side by side
    tilted = len(labels) > 3 or max((len(label) for label in labels), default=0) > 12
    axes.set_xticklabels(labels, rotation=20 if tilted else 0, ha="right" if tilted else "center")
    axes.set_ylim(-0.03, 1.03)
    axes.set_xlim(-0.6, len(labels) - 0.4)
    axes.set_ylabel("success rate")
    axes.set_xlabel("variation")
    episodes = sorted({int(g["episodes"]) for g in groups})
    per_group = f"{episodes[0]}" if len(episodes) == 1 else f"{episodes[0]}–{episodes[-1]}"
    axes.set_title(f"success per variation with 95 % Wilson intervals\n({per_group} episodes per point)", fontsize=11)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(title="policy", loc="best")
    return _save(figure, canvas_type, path)


def _latency_plot(rows: Sequence[Mapping[str, Any]], path: Path, figure_type: Any, canvas_type: Any) -> Path | None:
    per_policy: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        for column, key in (("policy_latency_ms_p50", "p50"), ("policy_latency_ms_p95", "p95")):
            value = row.get(column)
            if value is not None:
                per_policy.setdefault(str(row["policy"]), {"p50": [], "p95": []})[key].append(float(value))
    if not per_policy:
        return None
    policies = sorted(per_policy)
    figure = figure_type(figsize=(max(6.0, 1.6 * len(policies) + 2.0), 4.5))
    axes = figure.add_subplot()
    for offset, key, color in ((-0.18, "p50", "tab:blue"), (0.18, "p95", "tab:orange")):
        data = [per_policy[p][key] for p in policies]
        positions = [i + offset for i, values in enumerate(data) if values]
        present = [values for values in data if values]
        if present:
            axes.boxplot(present, positions=positions, widths=0.3, patch_artist=True,
                         boxprops={"facecolor": color, "alpha": 0.5}, medianprops={"color": "black"})
            axes.plot([], [], color=color, linewidth=8, alpha=0.5, label=f"episode {key}")
    axes.set_xticks(range(len(policies)))
    axes.set_xticklabels([f"{p}\n({len(per_policy[p]['p50'])} episodes)" for p in policies])
    axes.set_xlim(-0.6, len(policies) - 0.4)
    axes.set_ylabel("policy round trip (ms)")
    axes.set_title("policy latency per policy: each episode's own p50 and p95")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(loc="best")
    return _save(figure, canvas_type, path)
