from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]
    DTYPE_FLOAT64: _ClassVar[DType]
    DTYPE_UINT8: _ClassVar[DType]
    DTYPE_INT32: _ClassVar[DType]
    DTYPE_INT64: _ClassVar[DType]
    DTYPE_BOOL: _ClassVar[DType]

class ActionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_KIND_UNSPECIFIED: _ClassVar[ActionKind]
    ACTION_KIND_JOINT_POSITIONS: _ClassVar[ActionKind]
    ACTION_KIND_JOINT_DELTAS: _ClassVar[ActionKind]
    ACTION_KIND_CARTESIAN_DELTAS: _ClassVar[ActionKind]
DTYPE_UNSPECIFIED: DType
DTYPE_FLOAT32: DType
DTYPE_FLOAT64: DType
DTYPE_UINT8: DType
DTYPE_INT32: DType
DTYPE_INT64: DType
DTYPE_BOOL: DType
ACTION_KIND_UNSPECIFIED: ActionKind
ACTION_KIND_JOINT_POSITIONS: ActionKind
ACTION_KIND_JOINT_DELTAS: ActionKind
ACTION_KIND_CARTESIAN_DELTAS: ActionKind

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("dtype", "shape")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class PolicySpec(_message.Message):
    __slots__ = ("observation", "action_kind", "action_dim", "chunk_size", "control_hz", "model_name", "model_version", "extra")
    class ObservationEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: TensorSpec
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[TensorSpec, _Mapping]] = ...) -> None: ...
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    OBSERVATION_FIELD_NUMBER: _ClassVar[int]
    ACTION_KIND_FIELD_NUMBER: _ClassVar[int]
    ACTION_DIM_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTROL_HZ_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    observation: _containers.MessageMap[str, TensorSpec]
    action_kind: ActionKind
    action_dim: int
    chunk_size: int
    control_hz: float
    model_name: str
    model_version: str
    extra: _containers.ScalarMap[str, str]
    def __init__(self, observation: _Optional[_Mapping[str, TensorSpec]] = ..., action_kind: _Optional[_Union[ActionKind, str]] = ..., action_dim: _Optional[int] = ..., chunk_size: _Optional[int] = ..., control_hz: _Optional[float] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., extra: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Observation(_message.Message):
    __slots__ = ("tensors", "episode", "step", "sim_time_s")
    class TensorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    EPISODE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SIM_TIME_S_FIELD_NUMBER: _ClassVar[int]
    tensors: _containers.MessageMap[str, Tensor]
    episode: int
    step: int
    sim_time_s: float
    def __init__(self, tensors: _Optional[_Mapping[str, Tensor]] = ..., episode: _Optional[int] = ..., step: _Optional[int] = ..., sim_time_s: _Optional[float] = ...) -> None: ...

class ActionChunk(_message.Message):
    __slots__ = ("actions", "step", "episode", "compute_ms")
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    EPISODE_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    actions: Tensor
    step: int
    episode: int
    compute_ms: float
    def __init__(self, actions: _Optional[_Union[Tensor, _Mapping]] = ..., step: _Optional[int] = ..., episode: _Optional[int] = ..., compute_ms: _Optional[float] = ...) -> None: ...
