"""The divergence log: one JSON line per compared request (schema ``gateway.divergence/v1``).

Written through a structlog ``BoundLogger`` (``structlog.wrap_logger``) whose
processor chain runs on the caller's thread and is cheap:

1. `add_envelope`: ``schema`` and ``ts`` (ISO-8601 UTC, microseconds, ``Z``) first;
2. a redactor from `make_redactor`: values of sensitive features in ``features``
   and in every ``feature_mismatches[side][i]["value"]`` become ``"<redacted>"``;
3. `to_writer_args`: hands the event dict, unserialised, to the wrapped
   `JsonlSink`, whose methods call `JsonlWriter.write` (a non-blocking queue
   append). JSON encoding and file I/O happen on the writer's thread.

Events written (all carry the envelope ``schema``, ``ts``, ``event`` and
``replica``); the event names, field names and types are defined once, in
`gateway.sinks.divergence_schema` (``Event``, ``Field``, ``EVENT_FIELDS``):

* ``divergence`` (`DivergenceLog.divergence`): one compared request;
* ``shadow_error`` (`DivergenceLog.shadow_error`): ``error`` is a gRPC status
  code name such as ``DEADLINE_EXCEEDED``;
* ``shadow_drops`` (`DivergenceLog.drops`): a periodic summary of mirrored
  requests that were not sent to the shadow (never one line per drop).

``divergence`` and ``shadow_error`` take an optional ``protocol`` (the client
protocol, e.g. ``"tfs_grpc"``), written only when given.

The caller passes the fields; they are not validated on the request path
(`gateway.sinks.divergence_schema.validate_record` checks a written line).
Ownership of the field values passes to the log (they are serialised later):
do not mutate them after the call. Nested ``features`` and
``feature_mismatches`` objects are never mutated by redaction (copies are made).
"""

from __future__ import annotations

import hashlib
import math
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from gateway.sinks.divergence_schema import REDACTED, SCHEMA_VERSION, Event, Field
from gateway.sinks.jsonl import JsonlWriter, MiB

SCHEMA: Final = SCHEMA_VERSION
"""``gateway.divergence/v1`` (`gateway.sinks.divergence_schema.SCHEMA_VERSION`)."""
MAX_LIST: Final = 16
"""Longest list `first_row_features` keeps for a multi-valued feature (the first values)."""

_ts_cache: tuple[int, str] = (-1, "")


def utc_timestamp(ns: int | None = None) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` for `ns` nanoseconds since the epoch (default: now)."""
    global _ts_cache
    if ns is None:
        ns = time.time_ns()
    sec, rem = divmod(ns, 1_000_000_000)
    cached_sec, prefix = _ts_cache
    if sec != cached_sec:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _ts_cache = (sec, prefix)
    return f"{prefix}.{rem // 1000:06d}Z"


# ---------------------------------------------------------------------- processors


def add_envelope(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Put ``schema`` (always `SCHEMA`), ``ts`` (kept if given, else now) and ``event`` first.

    ``event`` defaults to the method name. Returns a new dict; the input is not modified.
    """
    ts = event_dict.get(Field.TS) or utc_timestamp()
    out: EventDict = {
        Field.SCHEMA.value: SCHEMA,
        Field.TS.value: ts,
        Field.EVENT.value: event_dict.get(Field.EVENT, method_name),
    }
    out.update(event_dict)
    out[Field.SCHEMA.value] = SCHEMA
    out[Field.TS.value] = ts
    if out[Field.EVENT] is None:
        out[Field.EVENT.value] = method_name
    return out


def _is_redacted(value: Any) -> bool:
    return isinstance(value, str) and value == REDACTED


def _mismatch_value_sensitive(item: Any, names: frozenset[str]) -> bool:
    if isinstance(item, dict | Mapping):
        if item.get(Field.FEATURE) not in names or Field.VALUE not in item:
            return False
        return not _is_redacted(item[Field.VALUE])
    return getattr(item, "feature", None) in names


def _redacted_mismatch(item: Any, names: frozenset[str]) -> Any:
    if isinstance(item, Mapping):
        if item.get(Field.FEATURE) in names and Field.VALUE in item:
            out = dict(item)
            out[Field.VALUE.value] = REDACTED
            return out
        return item
    if getattr(item, "feature", None) in names:
        converted = mismatch_json(item)
        converted[Field.VALUE.value] = REDACTED
        return converted
    return item


def make_redactor(sensitive: Iterable[str]) -> Processor:
    """A processor replacing values of the `sensitive` features with ``"<redacted>"``.

    Applies to ``event_dict["features"][name]`` and to the ``value`` of every
    item of every side of ``event_dict["feature_mismatches"]`` whose ``feature``
    is sensitive (items may be mappings or `Mismatch`-like objects, which are
    converted with `mismatch_json`). Returns the input dict itself when nothing
    needs redaction, else a shallow copy with new ``features`` /
    ``feature_mismatches`` objects: the caller's objects are never mutated.
    """
    names = frozenset(sensitive)

    def redact_sensitive(
        logger: WrappedLogger, method_name: str, event_dict: EventDict
    ) -> EventDict:
        if not names:
            return event_dict
        out = event_dict
        features = event_dict.get(Field.FEATURES)
        if isinstance(features, dict | Mapping):
            hit = [k for k in features if k in names]
            if hit and not all(_is_redacted(features[k]) for k in hit):
                out = dict(event_dict)
                out[Field.FEATURES.value] = {
                    k: (REDACTED if k in names else v) for k, v in features.items()
                }
        mismatches = event_dict.get(Field.FEATURE_MISMATCHES)
        if isinstance(mismatches, dict | Mapping):
            sides: dict[str, Any] | None = None
            for side, items in mismatches.items():
                if isinstance(items, list | tuple) and any(
                    _mismatch_value_sensitive(it, names) for it in items
                ):
                    if sides is None:
                        sides = dict(mismatches)
                    sides[side] = [_redacted_mismatch(it, names) for it in items]
            if sides is not None:
                if out is event_dict:
                    out = dict(event_dict)
                out[Field.FEATURE_MISMATCHES.value] = sides
        return out

    return redact_sensitive


def to_writer_args(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> tuple[tuple[EventDict], dict[str, Any]]:
    """Final processor: pass the event dict as the one positional argument of the logger method.

    (structlog calls ``logger.<method_name>(*args, **kwargs)`` with what the last
    processor returns; a tuple ``(args, kwargs)`` avoids copying the dict into
    keyword arguments.)
    """
    return (event_dict,), {}


# ---------------------------------------------------------------------- structlog plumbing


class JsonlSink:
    """The wrapped "logger": each method hands the finished event dict to a `JsonlWriter`."""

    def __init__(self, writer: JsonlWriter) -> None:
        self.writer = writer

    def divergence(self, event_dict: EventDict) -> bool:
        """Queue one ``divergence`` record."""
        return self.writer.write(event_dict)

    def shadow_error(self, event_dict: EventDict) -> bool:
        """Queue one ``shadow_error`` record."""
        return self.writer.write(event_dict)

    def shadow_drops(self, event_dict: EventDict) -> bool:
        """Queue one ``shadow_drops`` record."""
        return self.writer.write(event_dict)


class DivergenceLogger(structlog.BoundLoggerBase):
    """structlog bound logger with one method per divergence-log event."""

    def divergence(self, **fields: Any) -> Any:
        """Run the processor chain for a ``divergence`` event."""
        return self._proxy_to_logger(Event.DIVERGENCE.value, Event.DIVERGENCE.value, **fields)

    def shadow_error(self, **fields: Any) -> Any:
        """Run the processor chain for a ``shadow_error`` event."""
        return self._proxy_to_logger(Event.SHADOW_ERROR.value, Event.SHADOW_ERROR.value, **fields)

    def shadow_drops(self, **fields: Any) -> Any:
        """Run the processor chain for a ``shadow_drops`` event."""
        return self._proxy_to_logger(Event.SHADOW_DROPS.value, Event.SHADOW_DROPS.value, **fields)


class DivergenceLog:
    """The divergence log file (JSON lines, rotated) and its structlog logger.

    Every method is non-blocking and never raises: it returns True when the
    record was queued, False when it was dropped (writer queue full, closed,
    or fields that cannot be logged, e.g. a field named ``event``). Drops and
    I/O failures are counted in `stats` and reported to ``on_drop(reason)``
    (``queue_full``, ``closed``, ``io_error``, ``invalid``; see
    `gateway.sinks.jsonl`). ``rotate_mb``/``keep``: the active file is rotated
    before it would exceed ``rotate_mb`` MiB, ``keep`` rotated files
    (``path.1`` newest .. ``path.<keep>``) are kept. ``writer`` replaces the
    JsonlWriter built from the other arguments (tests, sharing).
    """

    def __init__(
        self,
        path: Path | str,
        rotate_mb: float = 100,
        keep: int = 10,
        sensitive_features: Iterable[str] = frozenset(),
        replica: str | None = None,
        queue_size: int = 100_000,
        *,
        flush_interval: float = 0.2,
        on_drop: Callable[[str], None] | None = None,
        writer: JsonlWriter | None = None,
    ) -> None:
        self.path = Path(path)
        self.sensitive_features = frozenset(sensitive_features)
        self.replica = replica
        self.writer = writer or JsonlWriter(
            self.path,
            rotate_bytes=max(1, int(rotate_mb * MiB)),
            keep=keep,
            queue_size=queue_size,
            flush_interval=flush_interval,
            on_drop=on_drop,
        )
        self.rejected = 0
        self.logger: DivergenceLogger = structlog.wrap_logger(
            JsonlSink(self.writer),
            processors=[add_envelope, make_redactor(self.sensitive_features), to_writer_args],
            wrapper_class=DivergenceLogger,
            context_class=dict,
            cache_logger_on_first_use=True,
            **{Field.REPLICA.value: replica},
        ).bind()

    def divergence(self, *, protocol: str | None = None, **fields: Any) -> bool:
        """Log one ``divergence`` record (fields: ``EVENT_FIELDS[Event.DIVERGENCE]`` of
        `gateway.sinks.divergence_schema`); ``protocol`` is written only when not None."""
        if protocol is not None:
            fields[Field.PROTOCOL.value] = protocol
        try:
            return bool(
                self.logger._proxy_to_logger(
                    Event.DIVERGENCE.value, Event.DIVERGENCE.value, **fields
                )
            )
        except Exception:
            self.rejected += 1
            return False

    def shadow_error(self, *, protocol: str | None = None, **fields: Any) -> bool:
        """Log one ``shadow_error`` record (``error`` = gRPC code name, ``message``; fields:
        ``EVENT_FIELDS[Event.SHADOW_ERROR]``); ``protocol`` is written only when not None."""
        if protocol is not None:
            fields[Field.PROTOCOL.value] = protocol
        try:
            return bool(
                self.logger._proxy_to_logger(
                    Event.SHADOW_ERROR.value, Event.SHADOW_ERROR.value, **fields
                )
            )
        except Exception:
            self.rejected += 1
            return False

    def drops(self, model: str, shadow_version: int | None, count: int, **fields: Any) -> bool:
        """Log one ``shadow_drops`` summary: `count` requests not mirrored since the last one."""
        try:
            return bool(
                self.logger.shadow_drops(
                    **{
                        Field.MODEL.value: model,
                        Field.SHADOW_VERSION.value: shadow_version,
                        Field.COUNT.value: count,
                    },
                    **fields,
                )
            )
        except Exception:
            self.rejected += 1
            return False

    def stats(self) -> dict[str, int]:
        """The writer's counters plus ``rejected`` (calls whose fields could not be logged)."""
        out = self.writer.stats()
        out["rejected"] = self.rejected
        return out

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every record logged so far is in the file (see `JsonlWriter.flush`)."""
        return self.writer.flush(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Write what is queued, fsync and close the file; idempotent."""
        return self.writer.close(timeout)


# ---------------------------------------------------------------------- field helpers


def _is_string_dtype(dtype: np.dtype[Any]) -> bool:
    return dtype.kind in "USO"


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, np.generic):
        return _as_bytes(value.item())
    return str(value).encode("utf-8", "surrogatepass")


def input_digest(features: Mapping[str, Any]) -> str:
    """``"sha256:" + hex`` of a canonical serialisation of a request's input tensors.

    Canonical: features sorted by name; for each, the UTF-8 name, the dtype
    (numeric dtypes in little-endian form, e.g. ``<f4``; every string dtype,
    ``U``/``S``/object, as ``string``), the shape, then the values: raw
    little-endian C-order bytes for numbers, each element's UTF-8 bytes
    (length-prefixed) for strings. Everything variable-length is
    length-prefixed, so different inputs never serialise alike. Equal arrays
    give equal digests whatever their memory layout or byte order, and ``str``
    and ``bytes`` string values with the same UTF-8 bytes digest alike.
    """
    h = hashlib.sha256()
    pack = struct.pack
    for name in sorted(features):
        arr = np.asarray(features[name])
        raw_name = name.encode("utf-8", "surrogatepass")
        h.update(pack("<Q", len(raw_name)))
        h.update(raw_name)
        if _is_string_dtype(arr.dtype):
            dtype_tag = b"string"
        else:
            arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
            dtype_tag = arr.dtype.str.encode("ascii")
        h.update(pack("<Q", len(dtype_tag)))
        h.update(dtype_tag)
        h.update(pack("<Q", arr.ndim))
        h.update(pack(f"<{arr.ndim}q", *arr.shape))
        if dtype_tag == b"string":
            for value in arr.reshape(-1).tolist():
                raw = _as_bytes(value)
                h.update(pack("<Q", len(raw)))
                h.update(raw)
        else:
            h.update(arr.tobytes())
    return "sha256:" + h.hexdigest()


def _json_scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def first_row_features(
    features: Mapping[str, Any], sensitive: Iterable[str] = frozenset()
) -> dict[str, Any]:
    """The first row of each feature as JSON values; sensitive ones ``"<redacted>"``.

    A feature of shape ``[batch]`` gives a scalar, ``[batch, ...]`` a flat list
    of its first row's values (at most `MAX_LIST`, the first ones), a 0-d
    array its scalar; a feature with no rows gives None. Bytes become UTF-8
    text (invalid sequences replaced) and NaN/infinity None.
    """
    hidden = frozenset(sensitive)
    out: dict[str, Any] = {}
    for name, value in features.items():
        if name in hidden:
            out[name] = REDACTED
            continue
        arr = np.asarray(value)
        if arr.ndim == 0:
            out[name] = _json_scalar(arr[()])
        elif arr.shape[0] == 0:
            out[name] = None
        elif arr.ndim == 1:
            out[name] = _json_scalar(arr[0])
        else:
            row = arr[0].reshape(-1)[:MAX_LIST]
            out[name] = [_json_scalar(v) for v in row.tolist()]
    return out


def mismatch_json(mismatch: Any) -> dict[str, Any]:
    """Schema form (``MISMATCH_FIELDS``) of a `gateway.analysis.feature_checks.Mismatch`
    (or any object with ``feature, kind, action, value, count, reference`` attributes):
    ``{"feature", "kind", "action", "value", "count", "reference"}`` with enums as strings."""
    kind = getattr(mismatch, "kind", None)
    action = getattr(mismatch, "action", None)
    return {
        Field.FEATURE.value: mismatch.feature,
        Field.KIND.value: str(getattr(kind, "value", kind)),
        Field.ACTION.value: None if action is None else str(getattr(action, "value", action)),
        Field.VALUE.value: _json_scalar(getattr(mismatch, "value", None)),
        Field.COUNT.value: getattr(mismatch, "count", None),
        Field.REFERENCE.value: getattr(mismatch, "reference", None),
    }


__all__ = [
    "MAX_LIST",
    "REDACTED",
    "SCHEMA",
    "DivergenceLog",
    "DivergenceLogger",
    "JsonlSink",
    "add_envelope",
    "first_row_features",
    "input_digest",
    "make_redactor",
    "mismatch_json",
    "to_writer_args",
    "utc_timestamp",
]
