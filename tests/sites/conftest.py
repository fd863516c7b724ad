from pathlib import Path

import pytest

from testbed.sites.profile import load_profiles

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "launch" / "sites"
TRILATERAL = REPO / "launch" / "trilateral.yaml"
KR_ORDERS = REPO / "datasets" / "kr_electronics_orders"


@pytest.fixture(autouse=True)
def keys_dir(tmp_path, monkeypatch):
    """Pseudonymization keys go to a scratch directory, never the user's own."""
    path = tmp_path / "keys"
    monkeypatch.setenv("TESTBED_KEYS_DIR", str(path))
    return path


@pytest.fixture(autouse=True)
def repo_cwd(monkeypatch):
    """Launch files name datasets relative to the repository."""
    monkeypatch.chdir(REPO)


@pytest.fixture(scope="session")
def profiles():
    return load_profiles(PROFILES)
