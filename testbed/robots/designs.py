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
        JointDesign(
            "joint_1",
            "revolute",
            "base_link",
            "link_1",
            (0.0, 0.0, 0.33),
            axis=(0, 0, 1),
            lower=deg(-170),
            upper=deg(170),
            effort=300.0,
            velocity=deg(375),
        ),
        JointDesign(
            "joint_2",
            "revolute",
            "link_1",
            "link_2",
            (0.04, 0.0, 0.0),
            axis=(0, 1, 0),
            lower=deg(-65),
            upper=deg(145),
            effort=300.0,
            velocity=deg(315),
        ),
        JointDesign(
            "joint_3",
            "revolute",
            "link_2",
            "link_3",
            (0.0, 0.0, 0.445),
            axis=(0, -1, 0),
            lower=deg(-70),
            upper=deg(190),
            effort=150.0,
            velocity=deg(410),
        ),
        JointDesign(
            "joint_4",
            "revolute",
            "link_3",
            "link_4",
            (0.20, 0.0, 0.04),
            axis=(-1, 0, 0),
            lower=deg(-190),
            upper=deg(190),
            effort=17.0,
            velocity=deg(550),
        ),
        JointDesign(
            "joint_5",
            "revolute",
            "link_4",
            "link_5",
            (0.24, 0.0, 0.0),
            axis=(0, -1, 0),
            lower=deg(-135),
            upper=deg(135),
            effort=17.0,
            velocity=deg(550),
        ),
        JointDesign(
            "joint_6",
            "revolute",
            "link_5",
            "link_6",
            (0.08, 0.0, 0.0),
            axis=(-1, 0, 0),
            lower=deg(-360),
            upper=deg(360),
            effort=10.0,
            velocity=deg(1000),
        ),
    ]
    # link_6's frame is on the flange face (its disc is drawn 4 mm short so the cup never touches
    # it); tool0 turns z onto the flange normal (+x of link_6)
    tool_links, tool_joints = _tooling("link_6", (0.0, math.pi / 2, 0.0))
    return RobotDesign("gp7", GP7_COMMENT, tuple(links + tool_links), tuple(joints + tool_joints))


#: SCARA tool heights in its base frame (origin on the mounting face): tcp z at the top and the
#: bottom of the 200 mm Z stroke.
SCARA_STROKE_M = 0.20
SCARA_TCP_Z_TOP_M = 0.20
SCARA_TCP_Z_BOTTOM_M = SCARA_TCP_Z_TOP_M - SCARA_STROKE_M
_SCARA_J1_Z_M = 0.30  # J1 (top of the base column) above the mounting face
_SCARA_ARM1_H_M = 0.07  # arm 1 thickness; arm 2 rides on top of it
_SCARA_FLANGE_BELOW_J2_M = 0.13  # flange face below the J2 plane at the top of the stroke

SCARA_COMMENT = """
Epson T6-602S-class 4-axis SCARA, own description from public figures (ROBOTS.md section 2).

Source figures: reach 600 mm split 325 (arm 1) + 275 (arm 2, catalogue value not confirmed),
J1 +-132 deg, J2 +-150 deg, J3 Z stroke 200 mm, J4 +-360 deg, payload 6 kg, mass about 22 kg.
Maximum speeds are NOT published for this model; the values here are chosen to be catalogue-like
for a 600 mm SCARA: J1 400 deg/s, J2 600 deg/s, J3 1.1 m/s, J4 2000 deg/s.

Conventions: base_link origin at the centre of the mounting face (the underside of the base),
z up, x forward. J1 and J2 turn about +z; joint_3 is prismatic along -z (positive moves the
shaft down, 0 = top of the stroke); J4 turns the shaft about +z. All link frames are parallel to
base_link at zero; zero pose = both arms stretched along +x, shaft at the top of its stroke.
Heights above the mounting face: J1 300 mm, arm 1 300..370, arm 2 370..430, flange face 240 at
the top of the stroke. tool0 is on the flange face with z pointing down (out of the tool); the
suction cup (40 mm x r15 mm) hangs below it and tcp is at its tip: tcp z = 0.20 m at the top of
the stroke and 0.00 m (the mounting-face plane) at the bottom. Link masses sum to 22 kg; the cup
adds 0.15 kg.
"""


def scara_t6() -> RobotDesign:
    """Epson T6-class 4-axis SCARA; tcp z spans [0, 0.2] m above its mounting face."""
    white, grey = "white", "grey"
    a1, a2 = 0.325, 0.275
    h1 = _SCARA_ARM1_H_M
    flange_z = -_SCARA_FLANGE_BELOW_J2_M
    shaft_len = 0.42
    links = [
        LinkDesign(
            "base_link",
            12.0,
            (
                Shape("box", (0.24, 0.20, 0.06), (-0.02, 0.0, 0.03)),
                Shape("cylinder", (0.085, _SCARA_J1_Z_M - 0.07), (0.0, 0.0, 0.06 + (_SCARA_J1_Z_M - 0.07) / 2)),
            ),
            white,
        ),
        LinkDesign(
            "link_1",
            5.0,
            (
                Shape("cylinder", (0.08, h1), (0.0, 0.0, h1 / 2)),
                Shape("box", (a1, 0.12, h1), (a1 / 2, 0.0, h1 / 2)),
                Shape("cylinder", (0.065, h1), (a1, 0.0, h1 / 2)),
            ),
            white,
        ),
        LinkDesign(
            "link_2",
            3.5,
            (
                Shape("cylinder", (0.06, 0.06), (0.0, 0.0, 0.03)),
                Shape("box", (a2, 0.10, 0.06), (a2 / 2, 0.0, 0.03)),
                Shape("cylinder", (0.05, 0.06), (a2, 0.0, 0.03)),
            ),
            white,
        ),
        LinkDesign(
            "link_3",
            1.0,
            # ends 4 mm above the flange face, like the flange disc, so the cup never touches it
            (Shape("cylinder", (0.01, shaft_len), (0.0, 0.0, flange_z + 0.004 + shaft_len / 2)),),
            grey,
        ),
        # the flange disc is drawn 4 mm above the face so the cup below never touches it
        LinkDesign("link_4", 0.5, (Shape("cylinder", (0.025, 0.012), (0.0, 0.0, 0.010)),), grey),
    ]
    joints = [
        JointDesign(
            "joint_1",
            "revolute",
            "base_link",
            "link_1",
            (0.0, 0.0, _SCARA_J1_Z_M),
            axis=(0, 0, 1),
            lower=deg(-132),
            upper=deg(132),
            effort=120.0,
            velocity=deg(400),
        ),
        JointDesign(
            "joint_2",
            "revolute",
            "link_1",
            "link_2",
            (a1, 0.0, h1),
            axis=(0, 0, 1),
            lower=deg(-150),
            upper=deg(150),
            effort=60.0,
            velocity=deg(600),
        ),
        JointDesign(
            "joint_3",
            "prismatic",
            "link_2",
            "link_3",
            (a2, 0.0, 0.0),
            axis=(0, 0, -1),
            lower=0.0,
            upper=SCARA_STROKE_M,
            effort=200.0,
            velocity=1.1,
        ),
        JointDesign(
            "joint_4",
            "revolute",
            "link_3",
            "link_4",
            (0.0, 0.0, flange_z),
            axis=(0, 0, 1),
            lower=deg(-360),
            upper=deg(360),
            effort=12.0,
            velocity=deg(2000),
        ),
    ]
    # tool0 z points down, out of the tool
    tool_links, tool_joints = _tooling("link_4", (math.pi, 0.0, 0.0))
    return RobotDesign("scara_t6", SCARA_COMMENT, tuple(links + tool_links), tuple(joints + tool_joints))


SIA10F_COMMENT = """
Yaskawa MOTOMAN SIA10F-class 7-axis arm, own description from public figures (ROBOTS.md 3a).

Source figures: base to S/L 360 mm, L to U 360 (E sits halfway on this segment), U to B 360 (R
halfway), B to flange 155; payload 10 kg, mass 60 kg (catalogue). Ranges (deg): S +-180,
L +-110, E +-170, U +-135, R +-180, B +-110, T +-180; max speeds (deg/s) 170 170 170 170 200 200
400, converted to rad and rad/s.

Conventions: base_link origin at the centre of the mounting face, z up, x forward. All link
frames are parallel to base_link at zero joint angles; axes: S +z, L +y (positive leans
forward), E +z, U -y, R +z, B -y, T +z. Zero pose: the arm stands straight up, flange facing +z.
tool0 sits on the flange face with z pointing out of the flange; suction_cup (40 mm x r15 mm)
is on that axis and tcp is at its tip. Link masses sum to 60 kg; the cup adds 0.15 kg.
Efforts: S, L sized for the stretched arm with full payload, E and U for the forearm, R, B, T
from the catalogue allowable wrist moments (about 31, 31, 20 N m).
"""


def sia10f() -> RobotDesign:
    """Yaskawa SIA10F-class 7-axis arm."""
    blue, white = "yaskawa_blue", "white"
    half = 0.18  # E halfway between L and U, R halfway between U and B
    links = [
        LinkDesign(
            "base_link",
            14.0,
            (
                Shape("box", (0.28, 0.28, 0.03), (0.0, 0.0, 0.015)),
                Shape("cylinder", (0.10, 0.16), (0.0, 0.0, 0.11)),
            ),
            blue,
        ),
        LinkDesign(
            "link_1",
            11.0,
            (
                Shape("cylinder", (0.095, 0.10), (0.0, 0.0, 0.05)),
                segment((0.0, -0.09, 0.16), (0.0, 0.09, 0.16), 0.085),
            ),
            blue,
        ),
        LinkDesign(
            "link_2",
            9.0,
            (segment((0.0, -0.08, 0.0), (0.0, 0.08, 0.0), 0.08), segment((0.0, 0.0, 0.0), (0.0, 0.0, 0.17), 0.07)),
            white,
        ),
        LinkDesign(
            "link_3",
            8.0,
            (
                segment((0.0, 0.0, 0.01), (0.0, 0.0, half), 0.07),
                segment((0.0, -0.075, half), (0.0, 0.075, half), 0.075),
            ),
            blue,
        ),
        LinkDesign(
            "link_4",
            6.5,
            (segment((0.0, -0.07, 0.0), (0.0, 0.07, 0.0), 0.07), segment((0.0, 0.0, 0.0), (0.0, 0.0, 0.17), 0.06)),
            white,
        ),
        LinkDesign(
            "link_5",
            5.5,
            (
                segment((0.0, 0.0, 0.01), (0.0, 0.0, half), 0.06),
                segment((0.0, -0.06, half), (0.0, 0.06, half), 0.06),
            ),
            blue,
        ),
        LinkDesign(
            "link_6",
            4.5,
            (segment((0.0, -0.055, 0.0), (0.0, 0.055, 0.0), 0.055), segment((0.0, 0.0, 0.0), (0.0, 0.0, 0.135), 0.05)),
            white,
        ),
        # flange disc drawn 4 mm short of the face so the cup never touches it
        LinkDesign("link_7", 1.5, (segment((0.0, 0.0, -0.016), (0.0, 0.0, -0.004), 0.04),), "grey"),
    ]
    spec = [  # name, parent, child, origin z, axis, range deg, effort N m, speed deg/s
        ("joint_1", "base_link", "link_1", 0.20, (0, 0, 1), 180, 400.0, 170),
        ("joint_2", "link_1", "link_2", 0.16, (0, 1, 0), 110, 400.0, 170),
        ("joint_3", "link_2", "link_3", half, (0, 0, 1), 170, 200.0, 170),
        ("joint_4", "link_3", "link_4", half, (0, -1, 0), 135, 200.0, 170),
        ("joint_5", "link_4", "link_5", half, (0, 0, 1), 180, 31.0, 200),
        ("joint_6", "link_5", "link_6", half, (0, -1, 0), 110, 31.0, 200),
        ("joint_7", "link_6", "link_7", 0.155, (0, 0, 1), 180, 20.0, 400),
    ]
    joints = [
        JointDesign(
            name,
            "revolute",
            parent,
            child,
            (0.0, 0.0, z),
            axis=axis,
            lower=deg(-rng),
            upper=deg(rng),
            effort=effort,
            velocity=deg(speed),
        )
        for name, parent, child, z, axis, rng, effort, speed in spec
    ]
    tool_links, tool_joints = _tooling("link_7", (0.0, 0.0, 0.0))
    return RobotDesign("sia10f", SIA10F_COMMENT, tuple(links + tool_links), tuple(joints + tool_joints))


DESIGNS: tuple[RobotDesign, ...] = (gp7(), scara_t6(), sia10f())
