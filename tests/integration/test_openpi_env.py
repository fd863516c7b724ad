"""The openpi peer's virtualenv: in the cache outside the clone, keyed by its requirements, built once and atomically.

These build real (small) virtualenvs in a temporary cache; the openpi tests themselves build the real one
(``compat/openpi/requirements.txt``) on first use and fail, never skip, when it cannot be built.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from testbed.bridge import openpi_peer
from testbed.bridge.openpi_peer import OpenPiEnvError, OpenPiServer, openpi_venv_dir
from testbed.venv_cache import MARKER, VenvBuildError, cached_venv, venv_dir


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("TESTBED_CACHE_DIR", str(root))
    return root


@pytest.fixture
def no_requirements(tmp_path: Path) -> Path:
    path = tmp_path / "requirements.txt"
    path.write_text("# nothing to install: the virtualenv alone\n")
    return path


@pytest.fixture
def missing_wheel(tmp_path: Path) -> Path:
    path = tmp_path / "bad-requirements.txt"
    path.write_text(f"{tmp_path / 'no_such_package-0.1-py3-none-any.whl'}\n")
    return path


def _marker(python: Path) -> dict[str, object]:
    return json.loads((python.parent.parent / MARKER).read_text())


def test_openpi_env_lives_in_the_cache_keyed_by_its_requirements(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    key = hashlib.sha256(openpi_peer.REQUIREMENTS.read_bytes()).hexdigest()[:12]
    monkeypatch.delenv("TESTBED_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert openpi_venv_dir() == tmp_path / "home" / ".cache" / "testbed" / "venvs" / f"openpi-{key}"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert openpi_venv_dir() == tmp_path / "xdg" / "testbed" / "venvs" / f"openpi-{key}"
    monkeypatch.setenv("TESTBED_CACHE_DIR", str(tmp_path / "override"))
    assert openpi_venv_dir() == tmp_path / "override" / "venvs" / f"openpi-{key}"
    assert not str(openpi_venv_dir()).startswith(str(openpi_peer.REPO_ROOT))


BUILD_AND_REPORT = """
import json, sys
from pathlib import Path
from testbed.venv_cache import MARKER, cached_venv
python = cached_venv("t", Path(sys.argv[1]), pip_args=("--no-index",))
print(json.loads((python.parent.parent / MARKER).read_text())["built_by_pid"])
"""


def test_two_processes_asking_at_once_build_the_env_once(cache: Path, no_requirements: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(BUILD_AND_REPORT), str(no_requirements)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (_, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err
    builders = {int(out.strip()) for out, _ in outs}
    assert len(builders) == 1 and builders <= {proc.pid for proc in procs}
    python = cached_venv("t", no_requirements, pip_args=("--no-index",))  # a third caller reuses it
    assert _marker(python)["built_by_pid"] in builders
    assert python.parent.parent == cache / "venvs" / python.parent.parent.name


def test_env_without_its_marker_is_wiped_and_rebuilt(cache: Path, no_requirements: Path) -> None:
    python = cached_venv("t", no_requirements, pip_args=("--no-index",))
    root = python.parent.parent
    (root / MARKER).unlink()  # as a build killed before it finished leaves it
    (root / "left-by-the-killed-build").write_text("junk")
    again = cached_venv("t", no_requirements, pip_args=("--no-index",))
    assert again == python and again.exists()
    assert (root / MARKER).is_file()
    assert not (root / "left-by-the-killed-build").exists()


def test_failed_build_names_the_pip_command_and_the_end_of_its_output(cache: Path, missing_wheel: Path) -> None:
    with pytest.raises(VenvBuildError, match=r"(?s)`.*-m pip install .*` exited with 1; output \(.*\.log\) ends:.*"
                                             r"no_such_package-0\.1-py3-none-any\.whl") as caught:
        cached_venv("t", missing_wheel, pip_args=("--no-index",))
    assert re.search(r"No such file|does not exist", str(caught.value))
    assert not (venv_dir("t", missing_wheel) / MARKER).exists()  # never taken for a good build


def test_openpi_server_fails_with_the_pip_error_when_its_env_cannot_be_built(
        cache: Path, missing_wheel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openpi_peer, "REQUIREMENTS", missing_wheel)
    with pytest.raises(OpenPiEnvError, match=r"(?s)building the openpi environment from .* failed: .*"
                                             r"-m pip install .*output \(.*\.log\) ends:.*no_such_package"):
        OpenPiServer("echo").start()
