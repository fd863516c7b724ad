"""A robot's link frames from its URDF, as robot_state_publisher computes them (plain Python, no rclpy).

Every URDF joint gives one transform from its parent link to its child link: fixed joints a
constant one (``/tf_static``), moving joints one per joint position (``/tf``). The TCP pose in
the world frame composes the robot's base pose with the chain from the root link to the TCP.
Transforms are (translation, quaternion) pairs in plain floats: a handful of joints costs a few
microseconds, where 4x4 numpy matrices cost tens (this runs on the node's thread, which shares
the interpreter with the control loop).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from testbed.errors import RobotDescriptionError
from testbed.robots.urdf import UrdfJoint, UrdfRobot

Vec3 = tuple[float, float, float]
Quat = tuple[float, float, float, float]  # x, y, z, w


def quat_multiply(a: Quat, b: Quat) -> Quat:
    """The rotation ``a`` then ``b`` in ``a``'s frame (Hamilton product ``a * b``)."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz)


def rotate(q: Quat, v: Vec3) -> Vec3:
    """``v`` rotated by unit quaternion ``q``."""
    x, y, z, w = q
    vx, vy, vz = v
    # t = 2 q_vec x v; v' = v + w t + q_vec x t
    tx, ty, tz = 2.0 * (y * vz - z * vy), 2.0 * (z * vx - x * vz), 2.0 * (x * vy - y * vx)
    return (vx + w * tx + y * tz - z * ty, vy + w * ty + z * tx - x * tz, vz + w * tz + x * ty - y * tx)


def rpy_quaternion(roll: float, pitch: float, yaw: float) -> Quat:
    """Quaternion of URDF fixed-axis roll/pitch/yaw (rad): ``Rz(yaw) Ry(pitch) Rx(roll)``, w >= 0."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    q = (sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy, cr * cp * sy - sr * sp * cy,
         cr * cp * cy + sr * sp * sy)
    return q if q[3] >= 0 else (-q[0], -q[1], -q[2], -q[3])


def axis_quaternion(axis: Vec3, angle: float) -> Quat:
    """Rotation by ``angle`` (rad) about the unit vector ``axis``."""
    s = math.sin(angle / 2)
    return (axis[0] * s, axis[1] * s, axis[2] * s, math.cos(angle / 2))


@dataclass(frozen=True)
class LinkTransform:
    """One parent -> child transform: translation in m, rotation as a quaternion (x, y, z, w)."""

    parent: str
    child: str
    xyz: Vec3
    quat: Quat


def compose(a: LinkTransform, b: LinkTransform) -> LinkTransform:
    """``a`` then ``b`` (``b`` expressed in ``a``'s child frame): from ``a.parent`` to ``b.child``."""
    dx, dy, dz = rotate(a.quat, b.xyz)
    return LinkTransform(a.parent, b.child, (a.xyz[0] + dx, a.xyz[1] + dy, a.xyz[2] + dz),
                         quat_multiply(a.quat, b.quat))


@dataclass(frozen=True)
class _Joint:
    joint: UrdfJoint
    index: int  # into the joint positions; -1 for a fixed joint
    origin: LinkTransform
    axis: Vec3


class RobotFrames:
    """Link frames of one robot.

    Args:
        urdf: the parsed URDF.
        joint_names: the moving joints in the order joint positions come in.
        tcp_link: the link whose world pose ``tcp_pose`` gives.
        base_xyz, base_rpy_deg: the root link's pose in the world frame (m, degrees).

    Raises:
        RobotDescriptionError: a joint of ``joint_names`` is not a moving joint of the URDF, the
            URDF has no single root link, or ``tcp_link`` is not one of its links.
    """

    def __init__(self, urdf: UrdfRobot, joint_names: Sequence[str], tcp_link: str,
                 base_xyz: Sequence[float] = (0.0, 0.0, 0.0), base_rpy_deg: Sequence[float] = (0.0, 0.0, 0.0)) -> None:
        children = {j.child for j in urdf.joints}
        roots = [link for link in urdf.links if link not in children]
        if len(roots) != 1:
            raise RobotDescriptionError(f"URDF {urdf.name!r}: expected one root link, got {roots}")
        self.root = roots[0]
        self.links = urdf.links
        if tcp_link not in urdf.links:
            raise RobotDescriptionError(f"URDF {urdf.name!r}: no link {tcp_link!r} for the TCP")
        index = {name: i for i, name in enumerate(joint_names)}
        joints: dict[str, _Joint] = {}
        for joint in urdf.joints:
            origin = LinkTransform(joint.parent, joint.child, _vec(joint.origin_xyz), rpy_quaternion(*joint.origin_rpy))
            if joint.movable and joint.name not in index:
                raise RobotDescriptionError(f"URDF {urdf.name!r}: moving joint {joint.name!r} is not among the "
                                            f"model's joints {list(joint_names)}")
            norm = math.sqrt(sum(a * a for a in joint.axis)) or 1.0
            axis = (joint.axis[0] / norm, joint.axis[1] / norm, joint.axis[2] / norm)
            joints[joint.name] = _Joint(joint, index[joint.name] if joint.movable else -1, origin, axis)
        missing = sorted(set(joint_names) - {j.joint.name for j in joints.values() if j.index >= 0})
        if missing:
            raise RobotDescriptionError(f"URDF {urdf.name!r}: no moving joint {missing[0]!r}")
        self.fixed: tuple[LinkTransform, ...] = tuple(j.origin for j in joints.values() if j.index < 0)
        self._moving = tuple(j for j in joints.values() if j.index >= 0)
        self.base_transform = LinkTransform("", self.root, _vec(base_xyz),
                                            rpy_quaternion(*(math.radians(a) for a in base_rpy_deg)))
        by_child = {j.joint.child: j for j in joints.values()}
        chain: list[_Joint] = []
        link = tcp_link
        while link in by_child:
            chain.append(by_child[link])
            link = by_child[link].joint.parent
        self._tcp_chain = tuple(reversed(chain))
        self.tcp_link = tcp_link

    @staticmethod
    def _motion(j: _Joint, q: Sequence[float]) -> LinkTransform:
        if j.index < 0:
            return j.origin
        value = float(q[j.index])
        o = j.origin
        if j.joint.kind == "prismatic":
            dx, dy, dz = rotate(o.quat, (j.axis[0] * value, j.axis[1] * value, j.axis[2] * value))
            return LinkTransform(o.parent, o.child, (o.xyz[0] + dx, o.xyz[1] + dy, o.xyz[2] + dz), o.quat)
        return LinkTransform(o.parent, o.child, o.xyz, quat_multiply(o.quat, axis_quaternion(j.axis, value)))

    def moving(self, q: Sequence[float]) -> list[LinkTransform]:
        """Parent -> child transforms of the moving joints at joint positions ``q`` (rad or m, model order)."""
        return [self._motion(j, q) for j in self._moving]

    def tcp_pose(self, q: Sequence[float]) -> LinkTransform:
        """The TCP link's pose in the world frame (parent ``""``) at joint positions ``q``."""
        pose = self.base_transform
        for j in self._tcp_chain:
            pose = compose(pose, self._motion(j, q))
        return LinkTransform("", self.tcp_link, pose.xyz, pose.quat)


def _vec(values: Sequence[float]) -> Vec3:
    x, y, z = (float(v) for v in values)
    return (x, y, z)


def camera_pose(eye: Sequence[float], target: Sequence[float]) -> LinkTransform:
    """World pose of a camera's optical frame (z forward, x right, y down) looking from ``eye`` at ``target``.

    The up vector is the one the cell renders with: +x when looking straight down, else +z.
    """
    f = [t - e for t, e in zip(target, eye, strict=True)]
    f = _unit(f)
    up = [1.0, 0.0, 0.0] if tuple(eye[:2]) == tuple(target[:2]) else [0.0, 0.0, 1.0]
    right = _unit(_cross(f, up))
    down = _cross(f, right)
    return LinkTransform("", "", _vec(eye), matrix_quaternion([[right[0], down[0], f[0]], [right[1], down[1], f[1]],
                                                               [right[2], down[2], f[2]]]))


def matrix_quaternion(m: Sequence[Sequence[float]]) -> Quat:
    """(x, y, z, w) of a 3x3 rotation matrix, w >= 0."""
    trace = m[0][0] + m[1][1] + m[2][2]
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = ((m[2][1] - m[1][2]) / s, (m[0][2] - m[2][0]) / s, (m[1][0] - m[0][1]) / s, 0.25 * s)
    elif m[0][0] > m[1][1] and m[0][0] > m[2][2]:
        s = 2.0 * math.sqrt(1.0 + m[0][0] - m[1][1] - m[2][2])
        q = (0.25 * s, (m[0][1] + m[1][0]) / s, (m[0][2] + m[2][0]) / s, (m[2][1] - m[1][2]) / s)
    elif m[1][1] > m[2][2]:
        s = 2.0 * math.sqrt(1.0 + m[1][1] - m[0][0] - m[2][2])
        q = ((m[0][1] + m[1][0]) / s, 0.25 * s, (m[1][2] + m[2][1]) / s, (m[0][2] - m[2][0]) / s)
    else:
        s = 2.0 * math.sqrt(1.0 + m[2][2] - m[0][0] - m[1][1])
        q = ((m[0][2] + m[2][0]) / s, (m[1][2] + m[2][1]) / s, 0.25 * s, (m[1][0] - m[0][1]) / s)
    norm = math.sqrt(sum(v * v for v in q))
    sign = 1.0 if q[3] >= 0 else -1.0
    return (sign * q[0] / norm, sign * q[1] / norm, sign * q[2] / norm, sign * q[3] / norm)


def _cross(a: Sequence[float], b: Sequence[float]) -> list[float]:
    return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]


def _unit(v: Sequence[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]
