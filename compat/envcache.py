"""LeRobot's environment in the testbed's cache, keyed by its pinned requirements (``testbed.venv_cache``).

LeRobot's environment is several GB (torch comes with it), so it is built once per machine, not per
clone, at ``<cache>/venvs/lerobot-<first 12 hex of sha256(lerobot-requirements.txt)>``.

    .venv/bin/python compat/envcache.py lerobot             # build if needed, print the path
    .venv/bin/python compat/envcache.py lerobot --no-build  # print the path, exit 1 if not built
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from testbed.venv_cache import VenvBuildError, cached_venv, is_complete, venv_dir

HERE = Path(__file__).resolve().parent
# lerobot 0.4.4 pins torch<2.11 and torchvision<0.26: both are pinned in the same file, so pip takes those
# versions instead of choosing torch by itself
RECIPES = {"lerobot": HERE / "lerobot-requirements.txt"}
BUILD_TIMEOUT_S = 3600.0


def ensure_env(name: str) -> Path:
    """The environment's directory (its interpreter is ``<dir>/bin/python``), built first if needed.

    Raises:
        VenvBuildError: the build failed (naming the command and the end of its output).
    """
    print(f"envcache: {name} environment at {venv_dir(name, RECIPES[name])}", file=sys.stderr, flush=True)
    python = cached_venv(name, RECIPES[name], pip_args=(), timeout_s=BUILD_TIMEOUT_S)
    return python.parent.parent


def main() -> int:
    """Print the environment's path, building it first unless ``--no-build``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--no-build", action="store_true", help="only print the path; exit 1 if it is not built")
    args = parser.parse_args()
    if args.no_build:
        path = venv_dir(args.name, RECIPES[args.name])
        print(path)
        return 0 if is_complete(args.name, RECIPES[args.name]) else 1
    try:
        print(ensure_env(args.name))
    except VenvBuildError as exc:
        print(f"envcache: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
