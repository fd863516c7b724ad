from testbed.bridge.generated import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetSpecRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResetRequest(_message.Message):
    __slots__ = ("episode",)
    EPISODE_FIELD_NUMBER: _ClassVar[int]
    episode: int
    def __init__(self, episode: _Optional[int] = ...) -> None: ...

class ResetResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ActError(_message.Message):
    __slots__ = ("code", "message", "step")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    step: int
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., step: _Optional[int] = ...) -> None: ...

class ActResult(_message.Message):
    __slots__ = ("chunk", "error")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    chunk: _common_pb2.ActionChunk
    error: ActError
    def __init__(self, chunk: _Optional[_Union[_common_pb2.ActionChunk, _Mapping]] = ..., error: _Optional[_Union[ActError, _Mapping]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerStats(_message.Message):
    __slots__ = ("in_flight", "requests_total", "errors_total", "sessions", "streams_open")
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ERRORS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    STREAMS_OPEN_FIELD_NUMBER: _ClassVar[int]
    in_flight: int
    requests_total: int
    errors_total: int
    sessions: int
    streams_open: int
    def __init__(self, in_flight: _Optional[int] = ..., requests_total: _Optional[int] = ..., errors_total: _Optional[int] = ..., sessions: _Optional[int] = ..., streams_open: _Optional[int] = ...) -> None: ...
