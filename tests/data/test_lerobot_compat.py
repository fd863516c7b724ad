"""LeRobot itself loads our datasets and we read LeRobot's, in LeRobot's cached environment.

The environment (~8 GB with torch) is found at ``compat/envcache.py``'s path, or built there
by the same builder ``make compat-env`` runs; a failed build fails this test, never skips it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _envcache() -> ModuleType:
    """``compat/envcache.py`` (compat/ is scripts, not a package)."""
    name = "testbed_compat_envcache"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "compat" / "envcache.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.timeout(3600 + 900)  # a cold build of the environment, then the check itself
def test_lerobot_loads_our_datasets_and_we_read_lerobots(tmp_path: Path) -> None:
    envcache = _envcache()
    try:
        venv = envcache.ensure_env("lerobot")
    except envcache.EnvBuildError as exc:
        pytest.fail(f"LeRobot's environment could not be built (`make compat-env` builds it alone): {exc}")
    done = subprocess.run(
        [sys.executable, str(REPO / "compat" / "check.py"), "--venv", str(venv), "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["lerobot_loads_ours_png"] and summary["lerobot_loads_ours_mp4"]
    assert summary["testbed_reads_lerobot"]
    pins = dict(line.split("==") for line in (REPO / "compat" / "lerobot-requirements.txt").read_text().split()
                if "==" in line)
    lerobot_version, torch_version = summary["lerobot_torch"].split()
    assert (lerobot_version, torch_version.split("+")[0]) == (pins["lerobot"], pins["torch"])  # +cu128: a build tag


def _recipe(tmp_path: Path, requirements: str) -> object:
    envcache = _envcache()
    file = tmp_path / "requirements.txt"
    file.write_text(requirements)
    return envcache.EnvRecipe("probe", file, "a probe environment")


def test_cache_root_prefers_testbed_cache_dir_then_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    envcache = _envcache()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TESTBED_CACHE_DIR", str(tmp_path / "mine"))
    assert envcache.cache_root() == tmp_path / "mine"
    monkeypatch.delenv("TESTBED_CACHE_DIR")
    assert envcache.cache_root() == tmp_path / "xdg" / "testbed"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert envcache.cache_root() == Path.home() / ".cache" / "testbed"


def test_environment_path_is_keyed_by_the_requirements_hash(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    envcache = _envcache()
    monkeypatch.setenv("TESTBED_CACHE_DIR", str(tmp_path / "cache"))
    recipe = _recipe(tmp_path, "# nothing\n")
    digest = hashlib.sha256(b"# nothing\n").hexdigest()[:12]
    assert envcache.env_path(recipe) == tmp_path / "cache" / "venvs" / f"probe-{digest}"
    recipe.requirements.write_text("# something else\n")
    assert envcache.env_path(recipe).name != f"probe-{digest}"


def test_unfinished_environment_is_wiped_and_rebuilt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    envcache = _envcache()
    monkeypatch.setenv("TESTBED_CACHE_DIR", str(tmp_path / "cache"))
    recipe = _recipe(tmp_path, "# no packages: a bare virtualenv\n")
    path = envcache.env_path(recipe)
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python").write_text("a build killed half way\n")
    assert not envcache.is_built(path)
    assert envcache.ensure_env(recipe, log=False) == path
    assert envcache.is_built(path)
    done = subprocess.run([str(path / "bin" / "python"), "-c", "import sys; print(sys.prefix)"],
                          capture_output=True, text=True, timeout=60, check=True)
    assert Path(done.stdout.strip()) == path


def test_failed_build_names_the_command_and_its_output(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    envcache = _envcache()
    monkeypatch.setenv("TESTBED_CACHE_DIR", str(tmp_path / "cache"))
    recipe = _recipe(tmp_path, "this is not a requirement ((\n")  # pip rejects it before any download
    with pytest.raises(envcache.EnvBuildError, match=r"(?s)pip install .*-r .*requirements\.txt.*exited 1.*Invalid"):
        envcache.ensure_env(recipe, log=False)
    assert not envcache.is_built(envcache.env_path(recipe))
