"""Industrial-style robot control: lifecycle, vectorized servo loop, safety limits, job and trajectory modes.

Entry point: ``ControlLoop(models, dt_s)``; ``tick`` it once per control cycle. Job mode
(``load_job``/``JobRunner``; ``JobPlanningProcess`` plans away from the loop's interpreter) and
trajectory mode (``TrajectoryController``) feed it.
"""

from testbed.control.cartesian_stream import offsets_to_joint_rows
from testbed.control.events import ControlEvent
from testbed.control.job import Job, JobOutputs, JobProgram, JobRunner, MotionBlock, load_job, parse_job, plan_job
from testbed.control.job_process import JobPlanningProcess
from testbed.control.kinematics import IKResult, KinematicChain
from testbed.control.lifecycle import Component, LifecycleState
from testbed.control.loop import ControllerComponent, ControlLoop
from testbed.control.model import RobotLimits
from testbed.control.pacing import Pacer, PacingStats
from testbed.control.tcp_guard import TcpSpeedGuard
from testbed.control.trajectory import JointTrajectory, PtpMotion, TrajectoryPoint
from testbed.control.trajectory_mode import TrajectoryController, TrajectoryStatus

__all__ = [
    "Component",
    "ControlEvent",
    "ControlLoop",
    "ControllerComponent",
    "IKResult",
    "Job",
    "JobOutputs",
    "JobPlanningProcess",
    "JobProgram",
    "JobRunner",
    "JointTrajectory",
    "KinematicChain",
    "LifecycleState",
    "MotionBlock",
    "Pacer",
    "PacingStats",
    "PtpMotion",
    "RobotLimits",
    "TcpSpeedGuard",
    "TrajectoryController",
    "TrajectoryPoint",
    "TrajectoryStatus",
    "load_job",
    "offsets_to_joint_rows",
    "parse_job",
    "plan_job",
]
