"""The ``testbed`` command: a thin front that delegates to each subpackage.

Each subpackage that offers commands has a ``commands`` module with
``register(subparsers)``; the parser it adds sets ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from testbed import __version__, interrupts
from testbed.errors import TestbedError
from testbed.interrupts import Terminated
from testbed.quiet import import_pybullet_quietly

COMMAND_MODULES = (
    "testbed.bridge.commands",
    "testbed.dashboard.commands",
    "testbed.data.commands",
    "testbed.eval.commands",  # after testbed.data.commands: it adds ``datasets record`` to that group
    "testbed.eval.compare",  # ``testbed compare RUN_A RUN_B``
    "testbed.scenario.commands",
    "testbed.sites.commands",  # after testbed.data.commands: it adds ``datasets export`` to that group
)


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser from every subpackage's ``register``."""
    parser = argparse.ArgumentParser(prog="testbed", description="Physical-AI robotics testbed orchestrator")
    parser.add_argument("--version", action="version", version=f"testbed {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; user mistakes print one line and return 2."""
    interrupts.install()
    import_pybullet_quietly()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may stand before or after options: `launch FILE --quiet episodes:=3`
    if extra and hasattr(args, "overrides") and all(":=" in item for item in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except TestbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Terminated as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (e.g. `| head`): stop quietly, and keep Python from complaining at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
