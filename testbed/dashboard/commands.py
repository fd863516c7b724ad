"""``testbed dashboard``: serve the recorded runs, live runs and launches in a browser."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

from testbed.dashboard.launcher import TOKEN_ENV


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``dashboard``."""
    parser = subparsers.add_parser("dashboard", help="serve the runs in a browser (live views, compare, launch)")
    parser.add_argument("--host", default="127.0.0.1",
                        help=f"address to listen on (default 127.0.0.1; beyond loopback needs ${TOKEN_ENV})")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="the run records (default: runs/)")
    parser.add_argument("--launch-dir", type=Path, default=Path("launch"),
                        help="launch files the page may start (default: launch/)")
    # set by `testbed launch --dashboard` for the dashboard process it starts: the socket it bound, and itself
    parser.add_argument("--fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--owner-pid", type=int, default=None, help=argparse.SUPPRESS)
    parser.set_defaults(func=_dashboard)


def _dashboard(args: argparse.Namespace) -> int:
    from testbed.dashboard.server import serve

    if args.owner_pid is not None:
        # the `testbed launch --dashboard` that started this process ends it with SIGTERM when its run ends:
        # that is the normal way out, not worth a "stopped" line in the user's terminal
        signal.signal(signal.SIGTERM, _quiet_exit)

    serve(runs_dir=args.runs, launch_dir=args.launch_dir, host=args.host, port=args.port,
          token=os.environ.get(TOKEN_ENV) or None,
          announce_to=None if args.fd is not None else lambda line: print(line, flush=True),
          fd=args.fd, owner_pid=args.owner_pid)
    return 0


def _quiet_exit(_signum: int, _frame: object) -> None:
    raise SystemExit(0)
