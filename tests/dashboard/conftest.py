"""Fixtures of the dashboard's tests."""

from __future__ import annotations

import pytest
from dashboard_helpers import Recorded, record_all


@pytest.fixture(scope="session")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """Real run records, made once per session (copy them before changing anything)."""
    return record_all(tmp_path_factory.mktemp("runs"))
