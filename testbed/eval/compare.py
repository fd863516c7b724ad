"""``testbed compare RUN_A RUN_B``: is the difference in success between two evaluations significant, per group?

Groups are matched by (policy, variation_label). Each matched group gets one named
two-sided test of "same success probability in both runs":

- **two-proportion z-test (pooled)** when every cell of the 2×2 table expects at
  least 5 counts under the pooled rate (the usual rule for the normal approximation);
- **Fisher's exact test** otherwise (computed exactly from binomial coefficients:
  two-sided, summing every table as likely as or less likely than the observed one).

p-values are per group, not corrected for the number of groups compared.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.errors import ResultsError, TestbedError
from testbed.eval.stats import wilson_interval

if TYPE_CHECKING:
    from rich.table import Table

Z_TEST = "two-proportion z-test (pooled)"
FISHER = "Fisher's exact test"
MIN_EXPECTED = 5.0  # smallest expected cell count at which the z-test's normal approximation is used
COMPARE_COLUMNS = ("episode_id", "policy", "variation", "variation_label", "success")


def two_proportion_z_test(successes_a: int, n_a: int, successes_b: int, n_b: int) -> tuple[float, float]:
    """Pooled two-proportion z-test, two-sided.

    Returns:
        ``(z, p_value)`` with ``z = (p_b - p_a) / sqrt(p(1-p)(1/n_a + 1/n_b))`` and ``p`` the pooled rate;
        ``(0.0, 1.0)`` when both runs are all successes or all failures (no variance, no difference).
    """
    _check_counts(successes_a, n_a, successes_b, n_b)
    pooled = (successes_a + successes_b) / (n_a + n_b)
    variance = pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b)
    if variance <= 0.0:
        return 0.0, 1.0
    z = (successes_b / n_b - successes_a / n_a) / math.sqrt(variance)
    return z, min(1.0, math.erfc(abs(z) / math.sqrt(2.0)))


def fisher_exact(successes_a: int, n_a: int, successes_b: int, n_b: int) -> float:
    """Two-sided Fisher's exact test of the table [[successes_a, n_a - successes_a], [successes_b, n_b - successes_b]].

    With the margins fixed, the count of successes in run A is hypergeometric; the
    p-value sums the probabilities of every table no more likely than the observed one.
    Probabilities are compared as exact integers (binomial coefficients), so ties are exact.
    """
    _check_counts(successes_a, n_a, successes_b, n_b)
    total_successes = successes_a + successes_b
    n = n_a + n_b

    def weight(k: int) -> int:  # C(n_a, k) C(n_b, total - k): the table's probability × C(n, total)
        return math.comb(n_a, k) * math.comb(n_b, total_successes - k)

    observed = weight(successes_a)
    low, high = max(0, total_successes - n_b), min(n_a, total_successes)
    tail = sum(w for w in (weight(k) for k in range(low, high + 1)) if w <= observed)
    return min(1.0, float(Fraction(tail, math.comb(n, total_successes))))


def _check_counts(successes_a: int, n_a: int, successes_b: int, n_b: int) -> None:
    for name, successes, trials in (("a", successes_a, n_a), ("b", successes_b, n_b)):
        if trials < 1 or not 0 <= successes <= trials:
            raise ValueError(f"run {name}: expected 0 <= successes <= n and n >= 1, got {successes}/{trials}")


def choose_test(successes_a: int, n_a: int, successes_b: int, n_b: int) -> str:
    """``Z_TEST`` when every expected cell count under the pooled rate is at least 5, else ``FISHER``."""
    pooled = (successes_a + successes_b) / (n_a + n_b)
    expected = [n * rate for n in (n_a, n_b) for rate in (pooled, 1.0 - pooled)]
    return Z_TEST if min(expected) >= MIN_EXPECTED else FISHER


@dataclass(frozen=True)
class GroupComparison:
    """One (policy, variation_label) group present in both runs."""

    policy: str
    variation_label: str
    successes_a: int
    episodes_a: int
    rate_a: float
    ci95_a: tuple[float, float]
    successes_b: int
    episodes_b: int
    rate_b: float
    ci95_b: tuple[float, float]
    difference: float  # rate_b - rate_a
    test: str
    p_value: float
    significant: bool


@dataclass(frozen=True)
class Comparison:
    """Every matched group, and the groups only one run has."""

    run_a: str
    run_b: str
    alpha: float
    groups: tuple[GroupComparison, ...]
    only_in_a: tuple[tuple[str, str], ...]  # (policy, variation_label)
    only_in_b: tuple[tuple[str, str], ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly form (``testbed compare --json``)."""
        data = asdict(self)
        data["only_in_a"] = [{"policy": p, "variation_label": v} for p, v in self.only_in_a]
        data["only_in_b"] = [{"policy": p, "variation_label": v} for p, v in self.only_in_b]
        data["note"] = "p-values are per group, not corrected for multiple comparisons"
        return data


def compare_rows(rows_a: Sequence[Mapping[str, Any]], rows_b: Sequence[Mapping[str, Any]], *, alpha: float = 0.05,
                 run_a: str = "A", run_b: str = "B") -> Comparison:
    """Compare success per (policy, variation_label) between two runs' rows.

    Raises:
        ValueError: alpha outside (0, 1).
        ResultsError: a row's success is not true or false, or its policy or variation_label not a string.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: expected a significance level between 0 and 1, got {alpha}")
    counts_a, counts_b = _success_counts(rows_a), _success_counts(rows_b)
    groups = []
    for key in counts_a:
        if key not in counts_b:
            continue
        (xa, na), (xb, nb) = counts_a[key], counts_b[key]
        test = choose_test(xa, na, xb, nb)
        p_value = two_proportion_z_test(xa, na, xb, nb)[1] if test == Z_TEST else fisher_exact(xa, na, xb, nb)
        groups.append(GroupComparison(
            policy=key[0], variation_label=key[1],
            successes_a=xa, episodes_a=na, rate_a=round(xa / na, 6), ci95_a=_rounded(wilson_interval(xa, na)),
            successes_b=xb, episodes_b=nb, rate_b=round(xb / nb, 6), ci95_b=_rounded(wilson_interval(xb, nb)),
            difference=round(xb / nb - xa / na, 6), test=test, p_value=p_value, significant=p_value < alpha))
    return Comparison(run_a, run_b, alpha, tuple(groups),
                      tuple(k for k in counts_a if k not in counts_b), tuple(k for k in counts_b if k not in counts_a))


def _success_counts(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], tuple[int, int]]:
    """(successes, episodes) per (policy, variation_label), ordered by variation index then policy."""
    order: dict[tuple[str, str], tuple[int, str]] = {}
    counts: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        for column, kind, expected in (("success", bool, "true or false"), ("policy", str, "a string"),
                                       ("variation_label", str, "a string")):
            if not isinstance(row[column], kind):
                raise ResultsError(f"results row {row.get('episode_id')!r}: {column}: expected {expected}, got "
                                   f"{row[column]!r}")
        key = (row["policy"], row["variation_label"])
        tally = counts.setdefault(key, [0, 0])
        tally[0] += row["success"]
        tally[1] += 1
        match = re.fullmatch(r"v(\d+)", str(row.get("variation", "")))
        order.setdefault(key, (int(match.group(1)) if match else 1 << 30, key[0]))
    return {key: (counts[key][0], counts[key][1]) for key in sorted(counts, key=lambda k: (order[k], k))}


def _rounded(interval: tuple[float, float]) -> tuple[float, float]:
    return round(interval[0], 6), round(interval[1], 6)


def load_results(run_dir: Path, columns: Sequence[str] = COMPARE_COLUMNS) -> list[dict[str, Any]]:
    """An evaluation's rows: ``results.parquet``, or the ``results.jsonl`` journal when the parquet is missing.

    From the journal, a last line cut short (an evaluation killed mid-write) is left
    out, and an episode journaled twice counts once (its first row, as ``testbed eval --resume`` keeps it).

    Raises:
        ResultsError: not a directory, neither file present, a file unreadable, a column missing or of the wrong
            type (a parquet column not of the contract's type or holding nulls; a journal field, naming its line).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ResultsError(f"{run_dir}: not a directory (expected an evaluation's run directory, "
                           "e.g. runs/<run_id> written by `testbed eval`)")
    parquet, journal = run_dir / "results.parquet", run_dir / "results.jsonl"
    if parquet.is_file():
        rows = _read_parquet(parquet, columns)
    elif journal.is_file():
        rows = _read_journal(journal, columns)
    else:
        raise ResultsError(f"{run_dir}: no results.parquet or results.jsonl (expected the run directory of "
                           "`testbed eval`, which writes one row per episode there)")
    if not rows:
        raise ResultsError(f"{parquet if parquet.is_file() else journal}: no episodes recorded")
    return rows


def _read_parquet(path: Path, columns: Sequence[str]) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    from testbed.eval.journal import NULLABLE, ROW_SCHEMA

    try:
        schema = pq.read_schema(path)
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise ResultsError(f"{path}: missing column(s) {', '.join(missing)} "
                               "(expected the evaluation contract's columns)")
        table = pq.read_table(path, columns=list(columns))
        for name in columns:
            expected = ROW_SCHEMA.field(name).type
            if table.schema.field(name).type != expected:
                raise ResultsError(f"{path}: column {name} is {table.schema.field(name).type}, expected {expected} "
                                   "(the evaluation contract's type)")
            if name not in NULLABLE and table.column(name).null_count:
                raise ResultsError(f"{path}: column {name} holds {table.column(name).null_count} null(s); expected "
                                   f"a {expected} in every row")
        return table.to_pylist()
    except ResultsError:
        raise
    except Exception as exc:  # pyarrow raises several types (ArrowInvalid, OSError) for a damaged file
        raise ResultsError(f"{path}: not a readable parquet file ({exc})") from exc


def _read_journal(path: Path, columns: Sequence[str]) -> list[dict[str, Any]]:
    from testbed.eval.journal import read_journal  # the orchestration's own reader: same rows as `testbed eval` sees

    rows = read_journal(path)
    for row in rows:
        missing = [c for c in columns if c not in row]
        if missing:
            raise ResultsError(f"{path}: episode {row['episode_id']!r} lacks field(s) {', '.join(missing)} "
                               "(expected the evaluation contract's columns)")
    return rows


def comparison_table(comparison: Comparison) -> Table:
    """A rich table with one row per matched group, and the unmatched groups as rows of their own."""
    from rich.table import Table

    table = Table(title=f"success: {comparison.run_a} (A) vs {comparison.run_b} (B), alpha = {comparison.alpha:g}",
                  caption="p-values per group, not corrected for multiple comparisons")
    for name, justify in (("policy", "left"), ("variation", "left"), ("A success [95 % CI]", "right"),
                          ("B success [95 % CI]", "right"), ("B − A", "right"), ("test", "left"),
                          ("p", "right"), ("significant", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for g in comparison.groups:
        table.add_row(g.policy, g.variation_label, _rate_cell(g.successes_a, g.episodes_a, g.ci95_a),
                      _rate_cell(g.successes_b, g.episodes_b, g.ci95_b), f"{g.difference:+.3f}", g.test,
                      f"{g.p_value:.4g}", "yes" if g.significant else "no")
    for label, keys in (("only in A", comparison.only_in_a), ("only in B", comparison.only_in_b)):
        for policy, variation in keys:
            table.add_row(policy, variation, "", "", "", label, "", "")
    return table


def _rate_cell(successes: int, n: int, ci: tuple[float, float]) -> str:
    return f"{successes}/{n} = {successes / n:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``testbed compare RUN_A RUN_B [--alpha 0.05] [--json]``."""
    parser = subparsers.add_parser("compare", help="compare the success of two evaluations, per policy and variation",
                                   description="Per (policy, variation_label) group: both success rates with 95 % "
                                               "Wilson intervals, and whether they differ significantly (pooled "
                                               "two-proportion z-test, or Fisher's exact test when an expected "
                                               "count is below 5; the test is named per row).")
    parser.add_argument("run_a", type=Path, metavar="RUN_A", help="run directory of the first evaluation")
    parser.add_argument("run_b", type=Path, metavar="RUN_B", help="run directory of the second evaluation")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level per group (default 0.05)")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON instead of a table")
    parser.set_defaults(func=_compare)


def _compare(args: argparse.Namespace) -> int:
    if not 0.0 < args.alpha < 1.0:
        raise TestbedError(f"--alpha: expected a significance level between 0 and 1, got {args.alpha}")
    comparison = compare_rows(load_results(args.run_a), load_results(args.run_b), alpha=args.alpha,
                              run_a=str(args.run_a), run_b=str(args.run_b))
    if args.json:
        print(json.dumps(comparison.to_json(), indent=2))
    else:
        from rich.console import Console

        Console().print(comparison_table(comparison))
    return 0
