"""Helper virtualenvs (openpi's peer, LeRobot) kept in a cache outside the clone, keyed by their pinned requirements.

A peer whose packages clash with the testbed's (openpi-client pins ``numpy<2``) or that is
too large to build per clone (LeRobot with torch, ~8 GB) runs from a virtualenv of its own.
:func:`cached_venv` builds it once per version of its
requirements file, at ``<cache>/venvs/<name>-<key>`` where ``<key>`` is the first 12
hex digits of the file's sha256 and ``<cache>`` is ``$TESTBED_CACHE_DIR``, else
``$XDG_CACHE_HOME/testbed``, else ``~/.cache/testbed``. A fresh clone (as in CI) reuses
what an earlier one built, and a changed pin gets a directory of its own.

A virtualenv's scripts hard-code its path, so it cannot be built elsewhere and
renamed into place. It is built at its final path under a file lock (two processes
never build it at once), and a marker file written last says it is complete: a
directory without the marker (a build that was killed or failed) is wiped and
rebuilt, never used. The build's output goes to ``<dir>.log``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from testbed.errors import TestbedError

CACHE_ENV = "TESTBED_CACHE_DIR"
MARKER = ".testbed-complete"
BUILD_TIMEOUT_S = 900.0
_OUTPUT_TAIL_CHARS = 3000


class VenvBuildError(TestbedError):
    """A cached virtualenv cannot be built (the message names the command and the end of its output)."""


def cache_root() -> Path:
    """``$TESTBED_CACHE_DIR``, else ``$XDG_CACHE_HOME/testbed``, else ``~/.cache/testbed``."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "testbed"


def requirements_key(requirements: Path) -> str:
    """The first 12 hex digits of the sha256 of ``requirements``' bytes."""
    return hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]


def venv_dir(name: str, requirements: Path) -> Path:
    """Where the virtualenv for ``requirements`` lives: ``<cache>/venvs/<name>-<key>``."""
    return cache_root() / "venvs" / f"{name}-{requirements_key(requirements)}"


def cached_venv(name: str, requirements: Path, *, pip_args: Sequence[str] = ("--only-binary=:all:",),
                timeout_s: float = BUILD_TIMEOUT_S) -> Path:
    """The python of the virtualenv for ``requirements``, building it first if it is missing or incomplete.

    Safe to call from several processes at once: one builds, the others wait for it.

    Args:
        name: prefix of the directory name, e.g. ``openpi``.
        requirements: a pinned requirements file.
        pip_args: extra ``pip install`` options.
        timeout_s: limit for each build command.

    Raises:
        VenvBuildError: ``requirements`` is missing, or a build command failed or timed out
            (naming the command and the end of its output).
    """
    if not requirements.is_file():
        raise VenvBuildError(f"{requirements}: requirements file not found")
    target = venv_dir(name, requirements)
    want = _marker_content(requirements)
    python = target / "bin" / "python"
    if _is_complete(target, want):
        return python
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.with_name(target.name + ".lock")):
        if _is_complete(target, want):  # another process built it while this one waited
            return python
        with contextlib.suppress(FileNotFoundError):
            (target / MARKER).unlink()  # first, so an interrupted wipe is never taken for a good build
        shutil.rmtree(target, ignore_errors=True)
        target.with_name(target.name + ".log").unlink(missing_ok=True)
        _run([sys.executable, "-m", "venv", str(target)], target, timeout_s)
        _run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
              "--progress-bar", "off", *pip_args, "-r", str(requirements)], target, timeout_s)
        partial = target / (MARKER + ".partial")
        marker = {**want, "built_by_pid": os.getpid(), "built_unix": round(time.time())}
        partial.write_text(json.dumps(marker, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(partial, target / MARKER)
    return python


def is_complete(name: str, requirements: Path) -> bool:
    """True when the virtualenv for ``requirements`` is built and finished (without building it)."""
    return _is_complete(venv_dir(name, requirements), _marker_content(requirements))


def _marker_content(requirements: Path) -> dict[str, str]:
    return {"requirements_sha256": hashlib.sha256(requirements.read_bytes()).hexdigest(),
            "python": sys.version.split()[0]}


def _is_complete(target: Path, want: dict[str, str]) -> bool:
    try:
        have = json.loads((target / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(have, dict) or any(have.get(key) != value for key, value in want.items()):
        return False  # another pin or another Python: rebuilt in place
    return (target / "bin" / "python").exists()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if this process dies
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(command: list[str], target: Path, timeout_s: float) -> None:
    shown = shlex.join(command)
    log_path = target.with_name(target.name + ".log")
    # to a file, not a pipe: an 8 GB install prints a lot, and the log outlives a failed build
    with open(log_path, "a", encoding="utf-8") as out:
        out.write(f"$ {shown}\n")
        out.flush()
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise VenvBuildError(f"{target}: `{shown}` did not finish in {timeout_s:.0f} s; "
                                 f"output ({log_path}) ends:\n{_tail(log_path)}") from exc
        except OSError as exc:
            raise VenvBuildError(f"{target}: `{shown}` could not start: {exc}") from exc
    if done.returncode != 0:
        raise VenvBuildError(f"{target}: `{shown}` exited with {done.returncode}; "
                             f"output ({log_path}) ends:\n{_tail(log_path)}")


def _tail(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    # pip repeats a warning per missing local index page; they say nothing about the failure
    lines = [line for line in text.splitlines() if not line.startswith("WARNING: Location ")]
    return "\n".join(lines).strip()[-_OUTPUT_TAIL_CHARS:]
