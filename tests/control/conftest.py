"""Fixtures for control tests."""

from __future__ import annotations

import pytest
from control_fakes import FakeRobot, arm7, scara4


@pytest.fixture
def two_models() -> list[FakeRobot]:
    return [arm7(), scara4()]
