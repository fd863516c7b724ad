"""Cartesian offset streaming: IK to joint chunks, unreachable chunks refused with an event."""

from __future__ import annotations

import numpy as np
import pytest

from testbed.control import ControlLoop, KinematicChain
from testbed.control.cartesian_stream import offsets_to_joint_rows, submit_cartesian_chunk
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


def test_unreachable_offset_is_refused_with_event(gp7) -> None:
    model, chain = gp7
    loop = ControlLoop([model], 0.001)
    loop.reset(np.asarray(model.home, float)[None])
    loop.drain_events()
    before = loop.setpoint.copy()
    assert not submit_cartesian_chunk(loop, 0, chain, np.array([[3.0, 0.0, 0.0]]), 0.0, 0.02)
    (event,) = loop.drain_events()
    assert event.kind == "command_rejected" and "row 0" in event.detail["message"]
    loop.tick(0.0)
    assert np.array_equal(loop.setpoint, before)


def test_cartesian_chunk_is_followed(gp7) -> None:
    model, chain = gp7
    loop = ControlLoop([model], 0.001)
    loop.reset(np.asarray(model.home, float)[None])
    start = chain.forward(loop.setpoint[0, :6])[:3, 3]
    offsets = np.linspace(0, 1, 11)[:, None] * np.array([0.0, 0.05, 0.0])
    assert submit_cartesian_chunk(loop, 0, chain, offsets, 0.0, 0.05)
    for k in range(600):
        loop.tick(k * 0.001, loop.setpoint)
    assert np.allclose(chain.forward(loop.setpoint[0, :6])[:3, 3] - start, [0.0, 0.05, 0.0], atol=1e-4)


def test_bad_shape_is_refused(gp7) -> None:
    model, chain = gp7
    with pytest.raises(ControllerError, match=r"shape \(steps >= 1, 3 or 6\), got \(2, 4\)"):
        offsets_to_joint_rows(chain, np.asarray(model.home, float), np.zeros((2, 4)))
