"""Generate the shipped production-order log of a Korean electronics-parts line.

Synthetic but shaped like a real MES export: one row per part released to the
robot cell's infeed, work orders that batch one part family, three 8-hour
shifts (A 06-14, B 14-22, C 22-06) with a handover pause, conveyor set-points
per work order, plausible sizes and weights per family. A fixed seed makes the
output byte-identical on every run.

    python scripts/generate_orders.py            # writes datasets/kr_electronics_orders/
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import random
from pathlib import Path

import yaml

SEED = 20240513
KST = dt.timezone(dt.timedelta(hours=9))
COLUMNS = (
    "timestamp", "work_order", "line", "shift", "station", "part_id", "part_type",
    "length_mm", "width_mm", "height_mm", "weight_g", "target_bin", "line_speed_m_min",
    "lot_no", "operator_id",
)  # fmt: skip

# family -> (log code, share, (length, width, height) mm ranges, weight g range, bin code, batch size range)
FAMILIES = {
    "capacitor": ("CAP", 0.5, ((10.0, 16.0), (10.0, 16.0), (12.0, 25.0)), (1.2, 6.5), "BIN-C1", (20, 40)),
    "connector": ("CONN", 0.3, ((18.0, 42.0), (5.0, 9.0), (4.5, 8.0)), (0.8, 4.5), "BIN-N1", (15, 30)),
    "module": ("MOD", 0.2, ((30.0, 60.0), (20.0, 40.0), (5.0, 14.0)), (9.0, 48.0), "BIN-M1", (8, 16)),
}
LINES = ("SMT-2", "ASSY-1")
LINE_SPEEDS_M_MIN = (8.0, 9.0, 10.0, 12.0)
SHIFT_START_H = {"A": 6, "B": 14, "C": 22}
OPERATORS = {"A": ("OP-1027", "OP-1142"), "B": ("OP-2031", "OP-2088"), "C": ("OP-3005",)}


def shift_of(stamp: dt.datetime) -> str:
    """Shift letter of a local time: A 06-14, B 14-22, C 22-06."""
    hour = stamp.hour
    return "A" if 6 <= hour < 14 else "B" if 14 <= hour < 22 else "C"


def generate_rows(n_rows: int, rng: random.Random) -> list[dict[str, str]]:
    """``n_rows`` good rows starting late in shift A so the log spans a shift change."""
    stamp = dt.datetime(2024, 5, 13, 13, 12, 0, tzinfo=KST)
    rows: list[dict[str, str]] = []
    order_seq, serials = 30, dict.fromkeys(FAMILIES, 0)
    families, shares = list(FAMILIES), [f[1] for f in FAMILIES.values()]
    while len(rows) < n_rows:
        family = rng.choices(families, shares)[0]
        code, _, dims, weight, bin_code, batch = FAMILIES[family]
        order_seq += 1
        line = rng.choice(LINES)
        work_order = f"WO{stamp:%Y%m%d}-{line.replace('-', '')}-{order_seq:04d}"
        speed = rng.choice(LINE_SPEEDS_M_MIN)
        lot = f"L{stamp:%y%m%d}{shift_of(stamp)}{rng.randint(1, 9):02d}"
        for _ in range(rng.randint(*batch)):
            if len(rows) == n_rows:
                break
            shift = shift_of(stamp)
            serials[family] += 1
            size = [rng.uniform(lo, hi) for lo, hi in dims]
            rows.append(
                {
                    "timestamp": stamp.isoformat(timespec="milliseconds"),
                    "work_order": work_order,
                    "line": line,
                    "shift": shift,
                    "station": "RC-02",
                    "part_id": f"{code}-{lot}-{serials[family]:05d}",
                    "part_type": family if rng.random() < 0.7 else code,  # MES exports mix names and codes
                    "length_mm": f"{size[0]:.1f}",
                    "width_mm": f"{size[1]:.1f}",
                    "height_mm": f"{size[2]:.1f}",
                    "weight_g": f"{rng.uniform(*weight):.2f}",
                    "target_bin": bin_code,
                    "line_speed_m_min": f"{speed:.1f}",
                    "lot_no": lot,
                    "operator_id": rng.choice(OPERATORS[shift]),
                }
            )
            # releases follow the conveyor pitch (~0.9 m between parts) with jitter and short stops
            gap_s = 0.9 / (speed / 60.0) * rng.uniform(0.8, 1.3)
            if rng.random() < 0.03:
                gap_s += rng.uniform(20.0, 90.0)  # feeder refill / micro-stop
            nxt = stamp + dt.timedelta(seconds=gap_s)
            if shift_of(nxt) != shift:
                nxt += dt.timedelta(minutes=rng.uniform(8.0, 12.0))  # shift handover
            stamp = nxt
        stamp += dt.timedelta(seconds=rng.uniform(30.0, 120.0))  # work-order changeover
    return rows


def bad_rows(good: list[dict[str, str]]) -> list[list[str]]:
    """Five good rows, then one row per kind of mistake the importer must locate."""
    base = [[r[c] for c in COLUMNS] for r in good[:5]]
    col = {c: i for i, c in enumerate(COLUMNS)}

    def broken(i: int, **changes: str) -> list[str]:
        cells = [good[i][c] for c in COLUMNS]
        for key, value in changes.items():
            cells[col[key]] = value
        return cells

    return [
        *base,
        broken(5, weight_g="abc"),
        broken(6, length_mm="-3.0"),
        broken(7, timestamp="2024-05-13 13:20:01"),
        broken(8, part_type="resistor"),
        broken(9, part_id=""),
        broken(10, part_id=good[0]["part_id"]),
        broken(11, shift="D", line_speed_m_min="0"),
        broken(12)[:-3],
        [good[13][c] for c in COLUMNS],
    ]


CARD = {
    "card_version": 1,
    "name": "kr_electronics_orders",
    "description": (
        "Production-order log of a Korean electronics-parts line (SMT and assembly) feeding a robot "
        "sorting cell: one row per part released to the infeed. Synthetic, generated by "
        "scripts/generate_orders.py; terms modelled on a national manufacturing data platform."
    ),
    "kind": "orders",
    "origin": {"site": "gumi-electronics-plant", "jurisdiction": "KR"},
    "owner": "Hanbit Components Co., Ltd. (fictional)",
    "licence": "LicenseRef-KR-platform-terms (no redistribution, no export of confidential fields)",
    "collection_date": "2024-05-13",
    "data_classes": {
        "timestamp": "industrial-confidential",
        "work_order": "industrial-confidential",
        "line": "industrial-confidential",
        "shift": "public",
        "station": "public",
        "part_id": "industrial-confidential",
        "part_type": "public",
        "length_mm": "public",
        "width_mm": "public",
        "height_mm": "public",
        "weight_g": "public",
        "target_bin": "public",
        "line_speed_m_min": "industrial-confidential",
        "lot_no": "industrial-confidential",
        "operator_id": "personal",
    },
    "terms": {
        "attribution_required": True,
        "redistribution_allowed": False,
        "export_allowed": False,
        "export_allowed_classes": ["public"],
        "note": (
            "Process data may not leave Korea; part geometry and type (public fields) may be shared "
            "abroad for model training. operator_id is pseudonymous employee data under PIPA."
        ),
    },
    "provenance": {"seed": SEED, "generator": "scripts/generate_orders.py"},
}


def main() -> None:
    """Write orders.csv, orders_bad_rows.csv and card.yaml."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "datasets/kr_electronics_orders"
    )
    parser.add_argument("--rows", type=int, default=400)
    args = parser.parse_args()
    rng = random.Random(SEED)
    rows = generate_rows(args.rows, rng)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "orders.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    with (args.out / "orders_bad_rows.csv").open("w", newline="", encoding="utf-8") as fh:
        raw = csv.writer(fh, lineterminator="\n")
        raw.writerow(COLUMNS)
        raw.writerows(bad_rows(rows))
    (args.out / "card.yaml").write_text(
        yaml.safe_dump(CARD, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    print(f"wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
