"""``testbed datasets ...`` and ``testbed train ...``: factory data on the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``datasets`` and ``train`` command groups."""
    datasets = subparsers.add_parser("datasets", help="import, inspect, validate, record and export datasets")
    sub = datasets.add_subparsers(dest="datasets_command", metavar="SUBCOMMAND", required=True)
    # other packages add their own dataset commands here (``datasets record`` runs scenarios: testbed.eval)
    datasets.set_defaults(subcommands=sub)

    imp = sub.add_parser("import-orders", help="validate a production-order CSV log and convert it")
    imp.add_argument("file", type=Path, help="CSV log (see datasets/README.md for its columns)")
    imp.add_argument("--out", type=Path, required=True, help="dataset directory to write")
    imp.add_argument("--card", type=Path, default=None, help="card.yaml to use (default: beside the CSV)")
    imp.add_argument("--encoding", default="utf-8-sig", help="text encoding of the CSV (e.g. cp949)")
    imp.set_defaults(func=_import_orders)

    info = sub.add_parser("info", help="print a dataset's card and counts")
    info.add_argument("dir", type=Path)
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(func=_info)

    val = sub.add_parser("validate", help="check structure, schema, stats and card; exit 2 on any problem")
    val.add_argument("dir", type=Path)
    val.set_defaults(func=_validate)


    train = subparsers.add_parser("train", help="train a policy from a demonstration dataset")
    train_sub = train.add_subparsers(dest="train_command", metavar="MODEL", required=True)
    bc = train_sub.add_parser("bc", help="behaviour cloning: nearest-neighbour action chunks (numpy)")
    bc.add_argument("--dataset", type=Path, required=True, help="LeRobot dataset directory")
    bc.add_argument("--out", type=Path, required=True, help="model file to write (.npz)")
    bc.add_argument("--chunk-size", type=int, default=10, help="actions per chunk (default 10)")
    bc.add_argument("--k", type=int, default=4, help="neighbours averaged per query (default 4)")
    bc.add_argument("--replan-every", type=int, default=None, help="steps between queries (default chunk/2)")
    bc.add_argument("--max-samples", type=int, default=None, help="subsample to this many frames")
    bc.add_argument("--seed", type=int, default=0, help="seed for subsampling")
    bc.set_defaults(func=_train_bc)

    bag = sub.add_parser("export-bag", help="export a run directory to a ROS 2 bag (MCAP)")
    bag.add_argument("run_dir", type=Path)
    bag.add_argument("--out", type=Path, default=None, help="bag directory to create (default RUN_DIR/bag)")
    bag.set_defaults(func=_export_bag)


def _import_orders(args: argparse.Namespace) -> int:
    from testbed.data.orders import import_orders

    report = import_orders(args.file, args.out, card=args.card, encoding=args.encoding)
    for line in report.error_lines():
        print(line, file=sys.stderr)
    for line in report.warnings:
        print(f"warning: {line}", file=sys.stderr)
    counts = ", ".join(f"{k} {v}" for k, v in report.part_type_counts.items())
    print(
        f"{args.out}: imported {report.rows_imported} of {report.rows_total} rows ({counts}); "
        f"rejected {report.rows_rejected}"
    )
    # partial success: the good rows are written, but a script should notice the rejects
    return 1 if report.errors else 0


def _print_info(summary: dict[str, Any]) -> None:
    card = summary.pop("card")
    if card is None:
        print("card: none (add card.yaml; `testbed datasets validate` will flag it)")
    else:
        origin, terms = card["origin"], card["terms"]
        print(f"name: {card['name']}  ({card['kind']})")
        print(f"origin: {origin['site']} [{origin['jurisdiction']}]  owner: {card['owner']}")
        print(f"licence: {card['licence']}  collected: {card['collection_date']}")
        print(
            f"terms: attribution {'required' if terms['attribution_required'] else 'not required'}, "
            f"redistribution {'allowed' if terms['redistribution_allowed'] else 'not allowed'}, "
            f"export {'allowed' if terms['export_allowed'] else 'not allowed'}"
            + (
                f" (classes allowed abroad: {', '.join(terms['export_allowed_classes'])})"
                if terms.get("export_allowed_classes") is not None
                else ""
            )
        )
        if terms.get("note"):
            print(f"  note: {terms['note']}")
        by_class: dict[str, list[str]] = {}
        for name, cls in card["data_classes"].items():
            by_class.setdefault(cls, []).append(name)
        for cls, names in sorted(by_class.items()):
            print(f"{cls}: {', '.join(names)}")
        if card.get("provenance"):
            print("provenance: " + ", ".join(f"{k}={v}" for k, v in card["provenance"].items()))
    for key, value in summary.items():
        if isinstance(value, dict | list):
            value = json.dumps(value, ensure_ascii=False)
        print(f"{key}: {value}")


def _info(args: argparse.Namespace) -> int:
    from testbed.data.inspect import describe_dataset

    summary = describe_dataset(args.dir)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, default=str))
    else:
        _print_info(summary)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from testbed.data.inspect import check_dataset

    problems = check_dataset(args.dir)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{args.dir}: {len(problems)} problem(s)", file=sys.stderr)
        return 2
    print(f"{args.dir}: ok")
    return 0


def _train_bc(args: argparse.Namespace) -> int:
    from testbed.policies.bc import train_bc

    report = train_bc(
        args.dataset,
        args.out,
        chunk_size=args.chunk_size,
        k=args.k,
        replan_every=args.replan_every,
        max_samples=args.max_samples,
        seed=args.seed,
    )
    skipped = f", {report.skipped_episodes} failed episode(s) left out" if report.skipped_episodes else ""
    print(f"{report.model_path}: {report.frames} frames from {report.episodes} episode(s){skipped}")
    print(f"serve it with: testbed serve-policy bc:{report.model_path}")
    return 0


def _export_bag(args: argparse.Namespace) -> int:
    from testbed.data.bag import export_bag

    result = export_bag(args.run_dir, args.out)
    counts = ", ".join(f"{topic} {n}" for topic, n in result.message_counts.items())
    print(f"{result.path}: {counts}; {result.duration_s:.3f} s")
    return 0
