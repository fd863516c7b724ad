"""Mass properties computed from primitive shapes agree with textbook formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from testbed.robots.authoring import (
    LinkDesign,
    RobotDesign,
    Shape,
    mass_properties,
    matrix_to_rpy,
    render_urdf,
    rpy_to_matrix,
    segment,
)
from testbed.robots.designs import DESIGNS

angles = st.floats(min_value=-math.pi, max_value=math.pi, allow_nan=False)


def _tensor(props_rpy: tuple[float, float, float], principal: tuple[float, float, float]) -> np.ndarray:
    rot = rpy_to_matrix(props_rpy)
    return rot @ np.diag(principal) @ rot.T


def test_solid_cylinder_along_z_has_textbook_inertia() -> None:
    props = mass_properties(LinkDesign("l", 2.0, (Shape("cylinder", (0.1, 0.4), (0.0, 0.0, 0.2)),)))
    side = 2.0 * (3 * 0.1**2 + 0.4**2) / 12
    np.testing.assert_allclose(props.com_xyz, (0.0, 0.0, 0.2))
    np.testing.assert_allclose(_tensor(props.principal_rpy, props.principal_inertia), np.diag([side, side, 0.01]))


def test_segment_along_x_turns_cylinder_axis_onto_x() -> None:
    shape = segment((0.0, 0.0, 0.0), (0.5, 0.0, 0.0), 0.05)
    np.testing.assert_allclose(rpy_to_matrix(shape.rpy)[:, 2], (1.0, 0.0, 0.0), atol=1e-12)
    props = mass_properties(LinkDesign("l", 3.0, (shape,)))
    tensor = _tensor(props.principal_rpy, props.principal_inertia)
    assert tensor[0, 0] == pytest.approx(3.0 * 0.05**2 / 2)
    assert tensor[1, 1] == pytest.approx(3.0 * (3 * 0.05**2 + 0.5**2) / 12)


def test_two_boxes_use_parallel_axis_theorem() -> None:
    cube = 0.1
    link = LinkDesign(
        "l",
        2.0,
        (Shape("box", (cube, cube, cube), (-0.5, 0.0, 0.0)), Shape("box", (cube, cube, cube), (0.5, 0.0, 0.0))),
    )
    props = mass_properties(link)
    own = 2.0 * (2 * cube**2) / 12
    tensor = _tensor(props.principal_rpy, props.principal_inertia)
    np.testing.assert_allclose(tensor, np.diag([own, own + 2.0 * 0.25, own + 2.0 * 0.25]), atol=1e-12)


@given(angles, st.floats(min_value=-1.5, max_value=1.5), angles)
def test_rpy_round_trips_through_rotation_matrix(roll: float, pitch: float, yaw: float) -> None:
    rot = rpy_to_matrix((roll, pitch, yaw))
    np.testing.assert_allclose(rpy_to_matrix(matrix_to_rpy(rot)), rot, atol=1e-9)


@given(
    st.tuples(*[st.floats(min_value=-0.3, max_value=0.3) for _ in range(3)]),
    st.tuples(*[st.floats(min_value=-0.3, max_value=0.3) for _ in range(3)]),
)
def test_principal_frame_reproduces_inertia_of_any_segment(a: tuple[float, ...], b: tuple[float, ...]) -> None:
    start = (a[0], a[1], a[2])
    end = (b[0], b[1], b[2])
    if math.dist(start, end) < 1e-3:
        return
    shape = segment(start, end, 0.04)
    props = mass_properties(LinkDesign("l", 1.5, (shape,)))
    rot = rpy_to_matrix(shape.rpy)
    direct = rot @ shape.inertia_about_centre(1.5) @ rot.T
    np.testing.assert_allclose(_tensor(props.principal_rpy, props.principal_inertia), direct, atol=1e-9)
    assert min(props.principal_inertia) > 0


def test_every_design_link_with_shapes_has_positive_inertia() -> None:
    for design in DESIGNS:
        for link in design.links:
            props = mass_properties(link)
            if link.shapes:
                assert props.mass_kg > 0
                assert min(props.principal_inertia) > 0
                a, b, c = sorted(props.principal_inertia)
                assert c <= a + b + 1e-12, (design.name, link.name)  # triangle inequality of real bodies
            else:
                assert props.mass_kg == 0.0


def test_comment_with_double_dash_is_refused() -> None:
    design = RobotDesign("x", "a -- b", (LinkDesign("base_link"),), ())
    with pytest.raises(ValueError, match="may not contain '--'"):
        render_urdf(design)
