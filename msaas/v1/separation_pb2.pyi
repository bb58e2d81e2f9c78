import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Options(_message.Message):
    __slots__ = ("model", "two_stems", "format", "mp3_bitrate", "overlap", "shifts", "residual", "sample_format", "start", "end", "preview")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TWO_STEMS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    MP3_BITRATE_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    SHIFTS_FIELD_NUMBER: _ClassVar[int]
    RESIDUAL_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    model: str
    two_stems: str
    format: str
    mp3_bitrate: int
    overlap: float
    shifts: int
    residual: int
    sample_format: str
    start: float
    end: float
    preview: bool
    def __init__(self, model: _Optional[str] = ..., two_stems: _Optional[str] = ..., format: _Optional[str] = ..., mp3_bitrate: _Optional[int] = ..., overlap: _Optional[float] = ..., shifts: _Optional[int] = ..., residual: _Optional[int] = ..., sample_format: _Optional[str] = ..., start: _Optional[float] = ..., end: _Optional[float] = ..., preview: _Optional[bool] = ...) -> None: ...

class Callback(_message.Message):
    __slots__ = ("url", "data")
    URL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    url: str
    data: _struct_pb2.Struct
    def __init__(self, url: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class SubmitHeader(_message.Message):
    __slots__ = ("options", "callback")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_FIELD_NUMBER: _ClassVar[int]
    options: Options
    callback: Callback
    def __init__(self, options: _Optional[_Union[Options, _Mapping]] = ..., callback: _Optional[_Union[Callback, _Mapping]] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: SubmitHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[SubmitHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ("songhash", "reason", "queued", "options")
    SONGHASH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    songhash: str
    reason: str
    queued: bool
    options: Options
    def __init__(self, songhash: _Optional[str] = ..., reason: _Optional[str] = ..., queued: _Optional[bool] = ..., options: _Optional[_Union[Options, _Mapping]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("songhash", "options")
    SONGHASH_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    songhash: str
    options: Options
    def __init__(self, songhash: _Optional[str] = ..., options: _Optional[_Union[Options, _Mapping]] = ...) -> None: ...

class SongStatus(_message.Message):
    __slots__ = ("songhash", "state", "options", "attempts", "timestamps", "reason", "position", "progress", "worker", "tracks", "callback", "eta_seconds", "reconstruction_db", "ready_seconds")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[SongStatus.State]
        STATE_QUEUED: _ClassVar[SongStatus.State]
        STATE_PROCESSING: _ClassVar[SongStatus.State]
        STATE_DONE: _ClassVar[SongStatus.State]
        STATE_FAILED: _ClassVar[SongStatus.State]
        STATE_CANCELLED: _ClassVar[SongStatus.State]
    STATE_UNSPECIFIED: SongStatus.State
    STATE_QUEUED: SongStatus.State
    STATE_PROCESSING: SongStatus.State
    STATE_DONE: SongStatus.State
    STATE_FAILED: SongStatus.State
    STATE_CANCELLED: SongStatus.State
    class TimestampsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _timestamp_pb2.Timestamp
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
    SONGHASH_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    TRACKS_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RECONSTRUCTION_DB_FIELD_NUMBER: _ClassVar[int]
    READY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    songhash: str
    state: SongStatus.State
    options: Options
    attempts: int
    timestamps: _containers.MessageMap[str, _timestamp_pb2.Timestamp]
    reason: str
    position: int
    progress: float
    worker: str
    tracks: _containers.RepeatedScalarFieldContainer[str]
    callback: CallbackOutcome
    eta_seconds: float
    reconstruction_db: float
    ready_seconds: float
    def __init__(self, songhash: _Optional[str] = ..., state: _Optional[_Union[SongStatus.State, str]] = ..., options: _Optional[_Union[Options, _Mapping]] = ..., attempts: _Optional[int] = ..., timestamps: _Optional[_Mapping[str, _timestamp_pb2.Timestamp]] = ..., reason: _Optional[str] = ..., position: _Optional[int] = ..., progress: _Optional[float] = ..., worker: _Optional[str] = ..., tracks: _Optional[_Iterable[str]] = ..., callback: _Optional[_Union[CallbackOutcome, _Mapping]] = ..., eta_seconds: _Optional[float] = ..., reconstruction_db: _Optional[float] = ..., ready_seconds: _Optional[float] = ...) -> None: ...

class CallbackOutcome(_message.Message):
    __slots__ = ("state", "delivered", "attempts", "outcome")
    STATE_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    state: str
    delivered: bool
    attempts: int
    outcome: str
    def __init__(self, state: _Optional[str] = ..., delivered: _Optional[bool] = ..., attempts: _Optional[int] = ..., outcome: _Optional[str] = ...) -> None: ...

class ListQueueRequest(_message.Message):
    __slots__ = ("cursor", "limit")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    limit: int
    def __init__(self, cursor: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class QueuedSong(_message.Message):
    __slots__ = ("songhash", "state", "position", "options")
    SONGHASH_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    songhash: str
    state: str
    position: int
    options: Options
    def __init__(self, songhash: _Optional[str] = ..., state: _Optional[str] = ..., position: _Optional[int] = ..., options: _Optional[_Union[Options, _Mapping]] = ...) -> None: ...

class ListQueueResponse(_message.Message):
    __slots__ = ("songhashes", "songs", "next_cursor")
    SONGHASHES_FIELD_NUMBER: _ClassVar[int]
    SONGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    songhashes: _containers.RepeatedScalarFieldContainer[str]
    songs: _containers.RepeatedCompositeFieldContainer[QueuedSong]
    next_cursor: str
    def __init__(self, songhashes: _Optional[_Iterable[str]] = ..., songs: _Optional[_Iterable[_Union[QueuedSong, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PublishedQuality(_message.Message):
    __slots__ = ("sdr", "dataset", "source")
    class SdrEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SDR_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    sdr: _containers.ScalarMap[str, float]
    dataset: str
    source: str
    def __init__(self, sdr: _Optional[_Mapping[str, float]] = ..., dataset: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "engine", "stems", "default", "cpu_seconds_per_second", "published")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    STEMS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    name: str
    engine: str
    stems: _containers.RepeatedScalarFieldContainer[str]
    default: bool
    cpu_seconds_per_second: float
    published: _containers.RepeatedCompositeFieldContainer[PublishedQuality]
    def __init__(self, name: _Optional[str] = ..., engine: _Optional[str] = ..., stems: _Optional[_Iterable[str]] = ..., default: _Optional[bool] = ..., cpu_seconds_per_second: _Optional[float] = ..., published: _Optional[_Iterable[_Union[PublishedQuality, _Mapping]]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class UsageRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Usage(_message.Message):
    __slots__ = ("tenant", "songs", "audio_seconds", "cpu_seconds")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SONGS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    songs: float
    audio_seconds: float
    cpu_seconds: float
    def __init__(self, tenant: _Optional[str] = ..., songs: _Optional[float] = ..., audio_seconds: _Optional[float] = ..., cpu_seconds: _Optional[float] = ...) -> None: ...

class ListDeadLettersRequest(_message.Message):
    __slots__ = ("cursor", "limit")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    limit: int
    def __init__(self, cursor: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("id", "songhash", "reason", "attempts", "last_worker", "tenant", "buried_at", "job")
    ID_FIELD_NUMBER: _ClassVar[int]
    SONGHASH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LAST_WORKER_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    BURIED_AT_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    id: str
    songhash: str
    reason: str
    attempts: int
    last_worker: str
    tenant: str
    buried_at: _timestamp_pb2.Timestamp
    job: str
    def __init__(self, id: _Optional[str] = ..., songhash: _Optional[str] = ..., reason: _Optional[str] = ..., attempts: _Optional[int] = ..., last_worker: _Optional[str] = ..., tenant: _Optional[str] = ..., buried_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., job: _Optional[str] = ...) -> None: ...

class ListDeadLettersResponse(_message.Message):
    __slots__ = ("dead", "next_cursor")
    DEAD_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    dead: _containers.RepeatedCompositeFieldContainer[DeadLetter]
    next_cursor: str
    def __init__(self, dead: _Optional[_Iterable[_Union[DeadLetter, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class DeadLetterRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RetryDeadLetterResponse(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PurgeDeadLettersResponse(_message.Message):
    __slots__ = ("purged",)
    PURGED_FIELD_NUMBER: _ClassVar[int]
    purged: int
    def __init__(self, purged: _Optional[int] = ...) -> None: ...

class ListUsageResponse(_message.Message):
    __slots__ = ("tenants",)
    class TenantsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Usage
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.MessageMap[str, Usage]
    def __init__(self, tenants: _Optional[_Mapping[str, Usage]] = ...) -> None: ...

class TrackRequest(_message.Message):
    __slots__ = ("songhash", "track", "options")
    SONGHASH_FIELD_NUMBER: _ClassVar[int]
    TRACK_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    songhash: str
    track: str
    options: Options
    def __init__(self, songhash: _Optional[str] = ..., track: _Optional[str] = ..., options: _Optional[_Union[Options, _Mapping]] = ...) -> None: ...

class TrackInfo(_message.Message):
    __slots__ = ("size", "content_type", "filename", "ready_seconds")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    READY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    size: int
    content_type: str
    filename: str
    ready_seconds: float
    def __init__(self, size: _Optional[int] = ..., content_type: _Optional[str] = ..., filename: _Optional[str] = ..., ready_seconds: _Optional[float] = ...) -> None: ...

class DownloadTrackResponse(_message.Message):
    __slots__ = ("info", "chunk")
    INFO_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    info: TrackInfo
    chunk: bytes
    def __init__(self, info: _Optional[_Union[TrackInfo, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class TrackLink(_message.Message):
    __slots__ = ("url",)
    URL_FIELD_NUMBER: _ClassVar[int]
    url: str
    def __init__(self, url: _Optional[str] = ...) -> None: ...

class RemoveTrackResponse(_message.Message):
    __slots__ = ("songhash", "track", "reason")
    SONGHASH_FIELD_NUMBER: _ClassVar[int]
    TRACK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    songhash: str
    track: str
    reason: str
    def __init__(self, songhash: _Optional[str] = ..., track: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SongRequest(_message.Message):
    __slots__ = ("songhash",)
    SONGHASH_FIELD_NUMBER: _ClassVar[int]
    songhash: str
    def __init__(self, songhash: _Optional[str] = ...) -> None: ...

class RemoveSongResponse(_message.Message):
    __slots__ = ("songhash", "removed", "cancelled", "reason")
    SONGHASH_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    songhash: str
    removed: int
    cancelled: int
    reason: str
    def __init__(self, songhash: _Optional[str] = ..., removed: _Optional[int] = ..., cancelled: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelSongResponse(_message.Message):
    __slots__ = ("songhash", "cancelled", "reason")
    SONGHASH_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    songhash: str
    cancelled: int
    reason: str
    def __init__(self, songhash: _Optional[str] = ..., cancelled: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class MixRecipe(_message.Message):
    __slots__ = ("gains", "mute", "preset", "format", "mp3_bitrate", "sample_format")
    class GainsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    GAINS_FIELD_NUMBER: _ClassVar[int]
    MUTE_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    MP3_BITRATE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    gains: _containers.ScalarMap[str, float]
    mute: _containers.RepeatedScalarFieldContainer[str]
    preset: str
    format: str
    mp3_bitrate: int
    sample_format: str
    def __init__(self, gains: _Optional[_Mapping[str, float]] = ..., mute: _Optional[_Iterable[str]] = ..., preset: _Optional[str] = ..., format: _Optional[str] = ..., mp3_bitrate: _Optional[int] = ..., sample_format: _Optional[str] = ...) -> None: ...

class MixRequest(_message.Message):
    __slots__ = ("songhash", "options", "recipe", "link")
    SONGHASH_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    RECIPE_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    songhash: str
    options: Options
    recipe: MixRecipe
    link: bool
    def __init__(self, songhash: _Optional[str] = ..., options: _Optional[_Union[Options, _Mapping]] = ..., recipe: _Optional[_Union[MixRecipe, _Mapping]] = ..., link: _Optional[bool] = ...) -> None: ...

class MixInfo(_message.Message):
    __slots__ = ("size", "content_type", "filename", "digest", "cache", "url")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    size: int
    content_type: str
    filename: str
    digest: str
    cache: str
    url: str
    def __init__(self, size: _Optional[int] = ..., content_type: _Optional[str] = ..., filename: _Optional[str] = ..., digest: _Optional[str] = ..., cache: _Optional[str] = ..., url: _Optional[str] = ...) -> None: ...

class RenderMixResponse(_message.Message):
    __slots__ = ("info", "chunk")
    INFO_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    info: MixInfo
    chunk: bytes
    def __init__(self, info: _Optional[_Union[MixInfo, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class Waveform(_message.Message):
    __slots__ = ("track", "seconds", "buckets", "min", "max")
    TRACK_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    track: str
    seconds: float
    buckets: int
    min: _containers.RepeatedScalarFieldContainer[int]
    max: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, track: _Optional[str] = ..., seconds: _Optional[float] = ..., buckets: _Optional[int] = ..., min: _Optional[_Iterable[int]] = ..., max: _Optional[_Iterable[int]] = ...) -> None: ...
