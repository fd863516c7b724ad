"""The robot designs behind ``robots/<model>/robot.urdf``: public datasheet figures, own geometry.

Each design is written out by :mod:`testbed.robots.authoring`; a test checks
that the files in ``robots/`` are what these designs render. Lengths in m,
angles converted from the datasheets' degrees, speeds in rad/s (m/s).
"""

from __future__ import annotations

import math

from testbed.robots.authoring import JointDesign, LinkDesign, RobotDesign, Shape, segment

#: Suction cup on every flange: length and radius in m, mass in kg (tooling, not in the catalogue mass).
CUP_LENGTH_M = 0.04
CUP_RADIUS_M = 0.015
CUP_MASS_KG = 0.15


def deg(value: float) -> float:
    """Degrees to radians, rounded to 6 decimals so the URDF text stays stable."""
    return round(math.radians(value), 6)


def _tooling(flange_link: str, flange_rpy: tuple[float, float, float]) -> tuple[list[LinkDesign], list[JointDesign]]:
    """tool0 (z out of the flange), a suction cup on the flange axis and the frameless tcp at its tip."""
    links = [
        LinkDesign("tool0"),
        LinkDesign(
            "suction_cup",
            CUP_MASS_KG,
            (Shape("cylinder", (CUP_RADIUS_M, CUP_LENGTH_M), (0.0, 0.0, CUP_LENGTH_M / 2)),),
            "black",
        ),
        LinkDesign("tcp"),
    ]
    joints = [
        JointDesign("flange-tool0", "fixed", flange_link, "tool0", rpy=flange_rpy),
        JointDesign("tool0-suction_cup", "fixed", "tool0", "suction_cup"),
        JointDesign("suction_cup-tcp", "fixed", "suction_cup", "tcp", xyz=(0.0, 0.0, CUP_LENGTH_M)),
    ]
    return links, joints


GP7_COMMENT = """
Yaskawa MOTOMAN GP7-class 6-axis arm, own description from public figures (ROBOTS.md section 1).

Source figures: base to J2 height 330 mm, J1-J2 offset 40, upper arm 445, J3-J4 offset 40,
forearm 440, J5 to flange 80 (OPW a1 40, a2 -40, c1 330, c2 445, c3 440, c4 80); payload 7 kg,
reach 927 mm, mass 34 kg (catalogue). Ranges (deg): S +-170, L -65..+145, U -70..+190,
R +-190, B +-135, T +-360; max speeds (deg/s) 375 315 410 550 550 1000, converted to rad and rad/s.

Conventions: base_link origin at the centre of the mounting face, z up, x forward. All link
frames are parallel to base_link at zero joint angles (ROS-Industrial style), joint axes:
S +z, L +y (positive leans forward), U -y (positive raises the forearm), R -x, B -y, T -x.
Zero pose: upper arm vertical, forearm horizontal along +x, flange facing +x.
tool0 sits on the flange face with z pointing out of the flange; suction_cup (40 mm x r15 mm)
is on that axis and tcp is at its tip. Arm link masses sum to 34 kg; the cup adds 0.15 kg.
Efforts: J1-J3 sized for the arm held horizontal with full payload; J4-J6 from the catalogue
allowable wrist moments (about 17, 17, 10 N m).
"""


def gp7() -> RobotDesign:
    """Yaskawa GP7-class 6-axis arm."""
    blue, white = "yaskawa_blue", "white"
    links = [
        LinkDesign(
            "base_link",
            9.0,
            (
                Shape("box", (0.24, 0.24, 0.04), (0.0, 0.0, 0.02)),
                Shape("cylinder", (0.09, 0.19), (0.0, 0.0, 0.135)),
            ),
            blue,
        ),
        LinkDesign(
            "link_1",
            8.0,
            (
                Shape("cylinder", (0.088, 0.07), (0.0, 0.0, -0.05)),
                Shape("box", (0.15, 0.16, 0.10), (0.03, 0.0, 0.0)),
            ),
            blue,
        ),
        LinkDesign(
            "link_2",
            6.0,
            (
                segment((0.0, -0.07, 0.0), (0.0, 0.07, 0.0), 0.07),
                segment((0.0, 0.0, 0.07), (0.0, 0.0, 0.39), 0.05),
            ),
            blue,
        ),
        LinkDesign(
            "link_3",
            5.0,
            (
                segment((0.0, -0.065, 0.0), (0.0, 0.065, 0.0), 0.06),
                segment((-0.08, 0.0, 0.04), (0.19, 0.0, 0.04), 0.05),
            ),
            white,
        ),
        LinkDesign(
            "link_4",
            3.5,
            (
                segment((0.0, 0.0, 0.0), (0.18, 0.0, 0.0), 0.045),
                Shape("box", (0.08, 0.012, 0.07), (0.225, 0.055, 0.0)),
                Shape("box", (0.08, 0.012, 0.07), (0.225, -0.055, 0.0)),
            ),
            blue,
        ),
        LinkDesign(
            "link_5",
            2.0,
            (
                segment((0.0, -0.045, 0.0), (0.0, 0.045, 0.0), 0.038),
                segment((0.0, 0.0, 0.0), (0.064, 0.0, 0.0), 0.032),
            ),
            white,
        ),
        LinkDesign("link_6", 0.5, (segment((-0.016, 0.0, 0.0), (-0.004, 0.0, 0.0), 0.03),), "grey"),
    ]
    joints = [
        JointDesign("joint_1", "revolute", "base_link", "link_1", (0.0, 0.0, 0.33), axis=(0, 0, 1),
                    lower=deg(-170), upper=deg(170), effort=300.0, velocity=deg(375)),
        JointDesign("joint_2", "revolute", "link_1", "link_2", (0.04, 0.0, 0.0), axis=(0, 1, 0),
                    lower=deg(-65), upper=deg(145), effort=300.0, velocity=deg(315)),
        JointDesign("joint_3", "revolute", "link_2", "link_3", (0.0, 0.0, 0.445), axis=(0, -1, 0),
                    lower=deg(-70), upper=deg(190), effort=150.0, velocity=deg(410)),
        JointDesign("joint_4", "revolute", "link_3", "link_4", (0.20, 0.0, 0.04), axis=(-1, 0, 0),
                    lower=deg(-190), upper=deg(190), effort=17.0, velocity=deg(550)),
        JointDesign("joint_5", "revolute", "link_4", "link_5", (0.24, 0.0, 0.0), axis=(0, -1, 0),
                    lower=deg(-135), upper=deg(135), effort=17.0, velocity=deg(550)),
        JointDesign("joint_6", "revolute", "link_5", "link_6", (0.08, 0.0, 0.0), axis=(-1, 0, 0),
                    lower=deg(-360), upper=deg(360), effort=10.0, velocity=deg(1000)),
    ]
    # link_6's frame is on the flange face (its disc is drawn 4 mm short so the cup never touches it); tool0 turns z onto the flange normal (+x of link_6)
    tool_links, tool_joints = _tooling("link_6", (0.0, math.pi / 2, 0.0))
    return RobotDesign("gp7", GP7_COMMENT, tuple(links + tool_links), tuple(joints + tool_joints))


DESIGNS: tuple[RobotDesign, ...] = (gp7(),)
