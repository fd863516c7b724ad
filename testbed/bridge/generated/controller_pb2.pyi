from testbed.bridge.generated import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Transition(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSITION_UNSPECIFIED: _ClassVar[Transition]
    TRANSITION_ACTIVATE: _ClassVar[Transition]
    TRANSITION_DEACTIVATE: _ClassVar[Transition]
    TRANSITION_RESET: _ClassVar[Transition]
    TRANSITION_PROTECTIVE_STOP: _ClassVar[Transition]
    TRANSITION_EMERGENCY_STOP: _ClassVar[Transition]

class TrajectoryResultCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAJECTORY_RESULT_UNSPECIFIED: _ClassVar[TrajectoryResultCode]
    TRAJECTORY_RESULT_SUCCESSFUL: _ClassVar[TrajectoryResultCode]
    TRAJECTORY_RESULT_INVALID_GOAL: _ClassVar[TrajectoryResultCode]
    TRAJECTORY_RESULT_PATH_TOLERANCE_VIOLATED: _ClassVar[TrajectoryResultCode]
    TRAJECTORY_RESULT_GOAL_TOLERANCE_VIOLATED: _ClassVar[TrajectoryResultCode]
    TRAJECTORY_RESULT_PREEMPTED: _ClassVar[TrajectoryResultCode]
    TRAJECTORY_RESULT_ABORTED: _ClassVar[TrajectoryResultCode]
TRANSITION_UNSPECIFIED: Transition
TRANSITION_ACTIVATE: Transition
TRANSITION_DEACTIVATE: Transition
TRANSITION_RESET: Transition
TRANSITION_PROTECTIVE_STOP: Transition
TRANSITION_EMERGENCY_STOP: Transition
TRAJECTORY_RESULT_UNSPECIFIED: TrajectoryResultCode
TRAJECTORY_RESULT_SUCCESSFUL: TrajectoryResultCode
TRAJECTORY_RESULT_INVALID_GOAL: TrajectoryResultCode
TRAJECTORY_RESULT_PATH_TOLERANCE_VIOLATED: TrajectoryResultCode
TRAJECTORY_RESULT_GOAL_TOLERANCE_VIOLATED: TrajectoryResultCode
TRAJECTORY_RESULT_PREEMPTED: TrajectoryResultCode
TRAJECTORY_RESULT_ABORTED: TrajectoryResultCode

class ListRobotsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RobotInfo(_message.Message):
    __slots__ = ("name", "model", "joint_names", "lifecycle_state", "cycle_ms", "joint_types", "lower", "upper", "velocity_max", "acceleration_max", "speed_scale")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    JOINT_NAMES_FIELD_NUMBER: _ClassVar[int]
    LIFECYCLE_STATE_FIELD_NUMBER: _ClassVar[int]
    CYCLE_MS_FIELD_NUMBER: _ClassVar[int]
    JOINT_TYPES_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    VELOCITY_MAX_FIELD_NUMBER: _ClassVar[int]
    ACCELERATION_MAX_FIELD_NUMBER: _ClassVar[int]
    SPEED_SCALE_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    joint_names: _containers.RepeatedScalarFieldContainer[str]
    lifecycle_state: str
    cycle_ms: float
    joint_types: _containers.RepeatedScalarFieldContainer[str]
    lower: _containers.RepeatedScalarFieldContainer[float]
    upper: _containers.RepeatedScalarFieldContainer[float]
    velocity_max: _containers.RepeatedScalarFieldContainer[float]
    acceleration_max: _containers.RepeatedScalarFieldContainer[float]
    speed_scale: float
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., joint_names: _Optional[_Iterable[str]] = ..., lifecycle_state: _Optional[str] = ..., cycle_ms: _Optional[float] = ..., joint_types: _Optional[_Iterable[str]] = ..., lower: _Optional[_Iterable[float]] = ..., upper: _Optional[_Iterable[float]] = ..., velocity_max: _Optional[_Iterable[float]] = ..., acceleration_max: _Optional[_Iterable[float]] = ..., speed_scale: _Optional[float] = ...) -> None: ...

class ListRobotsResponse(_message.Message):
    __slots__ = ("robots",)
    ROBOTS_FIELD_NUMBER: _ClassVar[int]
    robots: _containers.RepeatedCompositeFieldContainer[RobotInfo]
    def __init__(self, robots: _Optional[_Iterable[_Union[RobotInfo, _Mapping]]] = ...) -> None: ...

class GetStateRequest(_message.Message):
    __slots__ = ("robot",)
    ROBOT_FIELD_NUMBER: _ClassVar[int]
    robot: str
    def __init__(self, robot: _Optional[str] = ...) -> None: ...

class RobotState(_message.Message):
    __slots__ = ("robot", "lifecycle_state", "joint_pos_rad", "joint_vel_rad_s", "gripper_on", "t_s", "protective_stop", "job", "setpoint_rad", "speed_scale", "last_error", "cycle")
    ROBOT_FIELD_NUMBER: _ClassVar[int]
    LIFECYCLE_STATE_FIELD_NUMBER: _ClassVar[int]
    JOINT_POS_RAD_FIELD_NUMBER: _ClassVar[int]
    JOINT_VEL_RAD_S_FIELD_NUMBER: _ClassVar[int]
    GRIPPER_ON_FIELD_NUMBER: _ClassVar[int]
    T_S_FIELD_NUMBER: _ClassVar[int]
    PROTECTIVE_STOP_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    SETPOINT_RAD_FIELD_NUMBER: _ClassVar[int]
    SPEED_SCALE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    CYCLE_FIELD_NUMBER: _ClassVar[int]
    robot: str
    lifecycle_state: str
    joint_pos_rad: _common_pb2.Tensor
    joint_vel_rad_s: _common_pb2.Tensor
    gripper_on: bool
    t_s: float
    protective_stop: bool
    job: str
    setpoint_rad: _common_pb2.Tensor
    speed_scale: float
    last_error: str
    cycle: int
    def __init__(self, robot: _Optional[str] = ..., lifecycle_state: _Optional[str] = ..., joint_pos_rad: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., joint_vel_rad_s: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., gripper_on: _Optional[bool] = ..., t_s: _Optional[float] = ..., protective_stop: _Optional[bool] = ..., job: _Optional[str] = ..., setpoint_rad: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., speed_scale: _Optional[float] = ..., last_error: _Optional[str] = ..., cycle: _Optional[int] = ...) -> None: ...

class ChangeStateRequest(_message.Message):
    __slots__ = ("robot", "transition")
    ROBOT_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_FIELD_NUMBER: _ClassVar[int]
    robot: str
    transition: Transition
    def __init__(self, robot: _Optional[str] = ..., transition: _Optional[_Union[Transition, str]] = ...) -> None: ...

class ChangeStateResponse(_message.Message):
    __slots__ = ("lifecycle_state",)
    LIFECYCLE_STATE_FIELD_NUMBER: _ClassVar[int]
    lifecycle_state: str
    def __init__(self, lifecycle_state: _Optional[str] = ...) -> None: ...

class SendJobRequest(_message.Message):
    __slots__ = ("robot", "job_yaml")
    ROBOT_FIELD_NUMBER: _ClassVar[int]
    JOB_YAML_FIELD_NUMBER: _ClassVar[int]
    robot: str
    job_yaml: str
    def __init__(self, robot: _Optional[str] = ..., job_yaml: _Optional[str] = ...) -> None: ...

class SendJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: str
    def __init__(self, job: _Optional[str] = ...) -> None: ...

class Setpoint(_message.Message):
    __slots__ = ("robot", "joint_pos_rad", "gripper_on", "dt_s")
    ROBOT_FIELD_NUMBER: _ClassVar[int]
    JOINT_POS_RAD_FIELD_NUMBER: _ClassVar[int]
    GRIPPER_ON_FIELD_NUMBER: _ClassVar[int]
    DT_S_FIELD_NUMBER: _ClassVar[int]
    robot: str
    joint_pos_rad: _common_pb2.Tensor
    gripper_on: bool
    dt_s: float
    def __init__(self, robot: _Optional[str] = ..., joint_pos_rad: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., gripper_on: _Optional[bool] = ..., dt_s: _Optional[float] = ...) -> None: ...

class TrajectoryPoint(_message.Message):
    __slots__ = ("positions", "velocities", "accelerations", "time_from_start_s")
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    VELOCITIES_FIELD_NUMBER: _ClassVar[int]
    ACCELERATIONS_FIELD_NUMBER: _ClassVar[int]
    TIME_FROM_START_S_FIELD_NUMBER: _ClassVar[int]
    positions: _containers.RepeatedScalarFieldContainer[float]
    velocities: _containers.RepeatedScalarFieldContainer[float]
    accelerations: _containers.RepeatedScalarFieldContainer[float]
    time_from_start_s: float
    def __init__(self, positions: _Optional[_Iterable[float]] = ..., velocities: _Optional[_Iterable[float]] = ..., accelerations: _Optional[_Iterable[float]] = ..., time_from_start_s: _Optional[float] = ...) -> None: ...

class FollowTrajectoryRequest(_message.Message):
    __slots__ = ("robot", "joint_names", "points", "path_tolerance", "goal_tolerance", "goal_time_tolerance_s")
    ROBOT_FIELD_NUMBER: _ClassVar[int]
    JOINT_NAMES_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    PATH_TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    GOAL_TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    GOAL_TIME_TOLERANCE_S_FIELD_NUMBER: _ClassVar[int]
    robot: str
    joint_names: _containers.RepeatedScalarFieldContainer[str]
    points: _containers.RepeatedCompositeFieldContainer[TrajectoryPoint]
    path_tolerance: _containers.RepeatedScalarFieldContainer[float]
    goal_tolerance: _containers.RepeatedScalarFieldContainer[float]
    goal_time_tolerance_s: float
    def __init__(self, robot: _Optional[str] = ..., joint_names: _Optional[_Iterable[str]] = ..., points: _Optional[_Iterable[_Union[TrajectoryPoint, _Mapping]]] = ..., path_tolerance: _Optional[_Iterable[float]] = ..., goal_tolerance: _Optional[_Iterable[float]] = ..., goal_time_tolerance_s: _Optional[float] = ...) -> None: ...

class TrajectoryResult(_message.Message):
    __slots__ = ("code", "text")
    CODE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    code: TrajectoryResultCode
    text: str
    def __init__(self, code: _Optional[_Union[TrajectoryResultCode, str]] = ..., text: _Optional[str] = ...) -> None: ...

class TrajectoryFeedback(_message.Message):
    __slots__ = ("t_s", "time_from_start_s", "desired", "actual", "error", "result", "dropped")
    T_S_FIELD_NUMBER: _ClassVar[int]
    TIME_FROM_START_S_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    t_s: float
    time_from_start_s: float
    desired: _common_pb2.Tensor
    actual: _common_pb2.Tensor
    error: _common_pb2.Tensor
    result: TrajectoryResult
    dropped: int
    def __init__(self, t_s: _Optional[float] = ..., time_from_start_s: _Optional[float] = ..., desired: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., actual: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., result: _Optional[_Union[TrajectoryResult, _Mapping]] = ..., dropped: _Optional[int] = ...) -> None: ...
