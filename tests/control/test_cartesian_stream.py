"""Cartesian offsets to joint rows: IK per row, an unreachable row refused by index."""

from __future__ import annotations

import numpy as np
import pytest

from testbed.control import KinematicChain
from testbed.control.cartesian_stream import offsets_to_joint_rows
from testbed.errors import ControllerError
from testbed.robots import load_robot


@pytest.fixture(scope="module")
def gp7():
    model = load_robot("gp7")
    return model, KinematicChain.from_urdf(model.urdf_path, model.tcp_link)


def test_offsets_move_the_tcp_by_that_much(gp7) -> None:
    model, chain = gp7
    q0 = np.asarray(model.home, float)
    offsets = np.array([[0.0, 0.0, 0.0], [0.01, 0.0, 0.0], [0.02, 0.01, -0.01]])
    rows = offsets_to_joint_rows(chain, q0, offsets)
    base = chain.forward(q0)
    for q, off in zip(rows, offsets, strict=True):
        pose = chain.forward(q)
        assert np.allclose(pose[:3, 3] - base[:3, 3], off, atol=1e-4)
        assert np.allclose(pose[:3, :3], base[:3, :3], atol=1e-3)


def test_unreachable_offset_is_refused_naming_the_row(gp7) -> None:
    model, chain = gp7
    offsets = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    with pytest.raises(ControllerError, match=r"Cartesian chunk row 1: offset \[3.0, 0.0, 0.0\] is unreachable"):
        offsets_to_joint_rows(chain, np.asarray(model.home, float), offsets)


def test_bad_shape_is_refused(gp7) -> None:
    model, chain = gp7
    with pytest.raises(ControllerError, match=r"shape \(steps >= 1, 3 or 6\), got \(2, 4\)"):
        offsets_to_joint_rows(chain, np.asarray(model.home, float), np.zeros((2, 4)))
