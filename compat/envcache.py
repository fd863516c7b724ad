"""Large helper environments in a cache outside the clone, keyed by their pinned requirements.

LeRobot's environment is several GB (torch comes with it), so it is built once per
machine, not per clone: at ``<cache>/venvs/<name>-<first 12 hex of sha256(requirements)>``,
where ``<cache>`` is ``$TESTBED_CACHE_DIR``, else ``$XDG_CACHE_HOME/testbed``, else
``~/.cache/testbed``. Changing the requirements file changes the path, so a new pin gets
a new environment and an old clone keeps its own.

A virtualenv's scripts hard-code its path, so an environment is built in place at its
final path, under an exclusive file lock (``<path>.lock``), and a completion marker is
written last. A directory without the marker is a build that was killed or failed: it is
wiped and rebuilt, never used. The build's output goes to ``<path>.log``.

    .venv/bin/python compat/envcache.py lerobot           # build if needed, print the path
    .venv/bin/python compat/envcache.py lerobot --no-build  # print the path, exit 1 if not built
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from testbed.errors import TestbedError

HERE = Path(__file__).resolve().parent
MARKER = ".testbed-env-complete"
BUILD_TIMEOUT_S = 3600.0


class EnvBuildError(TestbedError):
    """A helper environment could not be built; the message names the command and its output's end."""


@dataclass(frozen=True)
class EnvRecipe:
    """How to build one helper environment.

    Args:
        name: the environment's name, the first part of its directory name.
        requirements: pinned requirements file; its sha256 keys the environment.
        what: a few words for progress and error messages.
    """

    name: str
    requirements: Path
    what: str


# lerobot 0.4.4 pins torch<2.11 and torchvision<0.26, so the CPU torch 2.13 wheel on this
# machine does not fit it: torch and torchvision are pinned in the same file, so pip takes
# those versions instead of choosing torch by itself
RECIPES: dict[str, EnvRecipe] = {
    "lerobot": EnvRecipe("lerobot", HERE / "lerobot-requirements.txt", "LeRobot with torch (~8 GB)"),
}


def cache_root() -> Path:
    """The testbed's cache: ``$TESTBED_CACHE_DIR``, else ``$XDG_CACHE_HOME/testbed``, else ``~/.cache/testbed``."""
    override = os.environ.get("TESTBED_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "testbed"


def _recipe(env: EnvRecipe | str) -> EnvRecipe:
    if isinstance(env, EnvRecipe):
        return env
    try:
        return RECIPES[env]
    except KeyError:
        raise EnvBuildError(f"helper environment {env!r}: unknown (known: {', '.join(RECIPES)})") from None


def env_path(env: EnvRecipe | str) -> Path:
    """Where an environment lives (built or not): ``<cache>/venvs/<name>-<sha256 of requirements, 12 hex>``.

    Args:
        env: a recipe, or the name of one in ``RECIPES``.

    Raises:
        EnvBuildError: unknown name, or the requirements file cannot be read.
    """
    recipe = _recipe(env)
    try:
        digest = hashlib.sha256(recipe.requirements.read_bytes()).hexdigest()
    except OSError as exc:
        raise EnvBuildError(f"{recipe.requirements}: cannot read the pinned requirements ({exc})") from exc
    return cache_root() / "venvs" / f"{recipe.name}-{digest[:12]}"


def is_built(path: Path) -> bool:
    """True if ``path`` holds a finished environment for this Python version (its marker is written last)."""
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("python") == _python_version() and (path / "bin" / "python").exists()


def _python_version() -> str:
    return sys.version.split()[0]


def ensure_env(env: EnvRecipe | str, *, log: bool = True) -> Path:
    """The path of an environment, building it first if it is missing or unfinished.

    Safe to call from several processes at once: one builds, the others wait on the lock.

    Args:
        env: a recipe, or the name of one in ``RECIPES``.
        log: print progress lines to stderr.

    Returns:
        The environment's directory; its interpreter is ``<path>/bin/python``.

    Raises:
        EnvBuildError: a build command failed or timed out (with the command and its output's end).
    """
    recipe = _recipe(env)
    path = env_path(recipe)
    if is_built(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if this process dies
        if is_built(path):  # another process finished it while this one waited
            return path
        if path.exists():
            if log:
                print(f"envcache: {path} is unfinished or for another Python: wiping it", file=sys.stderr)
            # the marker goes first, so that a wipe cut short is never taken for a finished build
            (path / MARKER).unlink(missing_ok=True)
            shutil.rmtree(path)
        if log:
            print(f"envcache: building {recipe.what} at {path}", file=sys.stderr, flush=True)
        start = time.monotonic()
        _build(recipe, path)
        seconds = time.monotonic() - start
        marker = {"requirements": str(recipe.requirements), "python": _python_version(),
                  "built_unix": round(time.time()), "build_s": round(seconds, 1)}
        tmp = path / (MARKER + ".tmp")
        tmp.write_text(json.dumps(marker) + "\n")
        os.replace(tmp, path / MARKER)
        if log:
            print(f"envcache: built {path} in {seconds:.0f} s", file=sys.stderr)
    return path


def _build(recipe: EnvRecipe, path: Path) -> None:
    python = path / "bin" / "python"
    commands = [
        [sys.executable, "-m", "venv", str(path)],
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-r", str(recipe.requirements)],
    ]
    log_path = path.with_name(path.name + ".log")
    with open(log_path, "w") as out:
        for command in commands:
            out.write(f"$ {' '.join(command)}\n")
            out.flush()
            try:
                done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S)
            except subprocess.TimeoutExpired as exc:
                raise EnvBuildError(
                    f"{path}: `{' '.join(command)}` did not finish in {BUILD_TIMEOUT_S:.0f} s; "
                    f"its output is in {log_path}:\n{_tail(log_path)}"
                ) from exc
            if done.returncode != 0:
                raise EnvBuildError(
                    f"{path}: building {recipe.what} failed: `{' '.join(command)}` exited {done.returncode}; "
                    f"output ({log_path}) ends:\n{_tail(log_path)}"
                )


def _tail(path: Path, max_chars: int = 3000) -> str:
    text = path.read_text(errors="replace")
    # pip repeats a warning per missing local index page; they say nothing about the failure
    lines = [line for line in text.splitlines() if not line.startswith("WARNING: Location ")]
    return "\n".join(lines)[-max_chars:]


def main() -> int:
    """Print the environment's path, building it first unless ``--no-build``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--no-build", action="store_true", help="only print the path; exit 1 if it is not built")
    args = parser.parse_args()
    try:
        if args.no_build:
            path = env_path(args.name)
            print(path)
            return 0 if is_built(path) else 1
        print(ensure_env(args.name))
    except EnvBuildError as exc:
        print(f"envcache: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
