"""Load generator for TF Serving's Predict and the Open Inference Protocol (KServe v2) infer
call, over gRPC or REST.

Four protocols (``LoadSpec.protocol``, CLI ``--protocol``), each sending one request built
and serialized once per worker (the generator's own cost per call stays low):

* ``tfs_grpc`` (default) -- ``tensorflow.serving.PredictionService/Predict``;
* ``oip_grpc`` -- ``inference.GRPCInferenceService/ModelInfer`` with ``raw_input_contents``;
* ``tfs_rest`` -- ``POST /v1/models/{model}[/versions/{v}|/labels/{l}]:predict``, columnar
  JSON (``{"inputs": {name: nested lists}}``);
* ``oip_rest`` -- ``POST /v2/models/{model}[/versions/{v}]/infer``, JSON tensors
  (``{"inputs": [{"name", "shape", "datatype", "data"}]}``).

gRPC modes send pre-serialized bytes on ``grpc.aio`` channels (responses are not parsed);
REST modes use one ``aiohttp`` session per worker (keep-alive, a connection pool as large as
the worker's concurrency), with ``--target host:port`` the REST port. Metadata (the fixed
pairs and the routing-key header) travels as gRPC metadata or as HTTP headers. A failed
call counts under its gRPC status name, or ``HTTP_<status>`` for REST.

Two modes:

* **closed loop** -- ``concurrency`` clients, each sends its next request as soon as the
  previous one completes; latency = completion time - actual send time.
* **open loop** -- a constant arrival rate ``rate`` req/s. Request ``i`` has the intended
  send time ``t0 + i / rate``; it is sent at that time or, when the generator is behind
  (e.g. because the server stalled and ``max_inflight`` was reached), as soon as possible
  afterwards. Latency = completion time - *intended* send time, so stalls are not hidden
  (no coordinated omission). Requests are never skipped.

Load is spread over ``procs`` client processes (``multiprocessing`` "spawn"), each running
one asyncio loop with ``grpc.aio`` channels (or an ``aiohttp`` session); their HdrHistograms
(microseconds, 1 us..60 s, 3 significant digits) are merged in the parent. With
``procs == 1`` the single worker runs in a thread of the calling process instead (no
interpreter start-up cost).

Python API::

    from loadtest.loadgen import LoadSpec, InputSpec, run_load
    result = run_load(LoadSpec(target="127.0.0.1:8500", model="demo", concurrency=8))
    print(result.throughput_rps, result.latency.p99_ms)

CLI: ``python -m loadtest.loadgen --target 127.0.0.1:8500 --model demo -c 8 --duration 10``
(REST: ``--protocol tfs_rest --target 127.0.0.1:8501``).
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import base64
import contextlib
import dataclasses
import itertools
import json
import math
import multiprocessing as mp
import os
import queue
import random
import signal
import struct
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, cast
from urllib.parse import quote, urlsplit

import yaml
from hdrh.histogram import HdrHistogram

__all__ = [
    "DEFAULT_PERCENTILES",
    "HIST_HIGHEST_US",
    "HIST_LOWEST_US",
    "HIST_SIGNIFICANT_DIGITS",
    "OIP_INFER_METHOD",
    "PROTOCOLS",
    "REST_PROTOCOLS",
    "TFS_PREDICT_METHOD",
    "CallError",
    "Caller",
    "GrpcCaller",
    "InputSpec",
    "LatencySummary",
    "LoadResult",
    "LoadSpec",
    "LoadgenError",
    "ProtocolName",
    "RestCaller",
    "Scenario",
    "WireRequest",
    "WorkerResult",
    "aggregate_results",
    "build_metadata_pool",
    "build_oip_request",
    "build_oip_rest_body",
    "build_parser",
    "build_request",
    "build_tfs_rest_body",
    "build_wire_request",
    "count_at_or_above",
    "decode_histogram",
    "encode_histogram",
    "format_result",
    "http_error_code",
    "intended_send_time",
    "load_scenario",
    "main",
    "make_input_arrays",
    "merge_histograms",
    "new_histogram",
    "oip_datatype",
    "open_loop_bounds",
    "open_loop_latency",
    "open_loop_schedule",
    "percentiles_ms",
    "raw_tensor_bytes",
    "record_latency",
    "rest_base_url",
    "run_load",
    "run_load_async",
    "spec_from_args",
    "split_evenly",
    "summarize_latency",
]

HIST_LOWEST_US = 1
HIST_HIGHEST_US = 60_000_000
HIST_SIGNIFICANT_DIGITS = 3
DEFAULT_PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)

Mode = Literal["closed", "open"]
_MODES: tuple[str, ...] = ("closed", "open")
ProtocolName = Literal["tfs_grpc", "tfs_rest", "oip_grpc", "oip_rest"]
PROTOCOLS: tuple[str, ...] = ("tfs_grpc", "tfs_rest", "oip_grpc", "oip_rest")
REST_PROTOCOLS: frozenset[str] = frozenset({"tfs_rest", "oip_rest"})
TFS_PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
OIP_INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
_FLUSH_INTERVAL_S = 0.2
_START_DELAY_S = 0.05
_EXIT_GRACE_S = 2.0
_READY_TIMEOUT_S = 180.0
_COUNTER_FIELDS = 3  # sent, ok, errors (warm-up included) per worker, for the progress line
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class LoadgenError(RuntimeError):
    """The load run could not be carried out (bad settings, unreachable target, worker crash)."""


# --------------------------------------------------------------------------------------
# Settings and results
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    """One named input tensor: dtype name (numpy/TF spelling) and shape; random values
    are generated unless ``values`` (nested lists) is given."""

    dtype: str = "float32"
    shape: tuple[int, ...] = (1, 4)
    values: Any = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSpec:
        """Build from the JSON form ``{"dtype": ..., "shape": [...], "values": ...}``."""
        unknown = set(data) - {"dtype", "shape", "values"}
        if unknown:
            raise ValueError(f"unknown input spec keys: {sorted(unknown)}")
        shape = data.get("shape")
        values = data.get("values")
        if shape is None:
            if values is None:
                raise ValueError("input spec needs 'shape' or 'values'")
            import numpy as np

            shape = np.shape(values)
        return cls(
            dtype=str(data.get("dtype", "float32")),
            shape=tuple(int(d) for d in shape),
            values=values,
        )


def _parse_inputs(data: Any) -> dict[str, InputSpec]:
    if isinstance(data, str):
        data = json.loads(data)
    if not isinstance(data, Mapping) or not data:
        raise ValueError("inputs must be a non-empty mapping of name -> {dtype, shape}")
    out: dict[str, InputSpec] = {}
    for name, spec in data.items():
        if isinstance(spec, InputSpec):
            out[str(name)] = spec
        elif isinstance(spec, Mapping):
            out[str(name)] = InputSpec.from_dict(spec)
        else:
            raise ValueError(f"input {name!r}: expected a mapping, got {type(spec).__name__}")
    return out


def _parse_metadata(data: Any) -> tuple[tuple[str, str], ...]:
    if data is None:
        return ()
    if isinstance(data, Mapping):
        items: Iterable[Any] = data.items()
    elif isinstance(data, str):
        items = [data]
    else:
        items = data
    pairs: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, str):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"metadata {item!r}: expected key=value")
        else:
            key, value = item
        pairs.append((str(key).strip().lower(), str(value)))
    return tuple(pairs)


@dataclass(frozen=True)
class LoadSpec:
    """Everything that defines one load run (all fields JSON-serialisable via ``to_dict``).

    ``duration`` is the measured time after ``warmup``; ``requests`` bounds the number of
    measured requests; the run stops at whichever bound is hit first. ``procs`` and
    ``channels`` are per-run and per-process resources of the generator itself
    (``channels``: gRPC modes only; REST modes use one connection pool per process).
    ``protocol`` picks the API and transport (see the module docstring); for the REST
    modes ``target`` is the REST port (``host:port`` or an ``http://`` URL).
    """

    target: str = "127.0.0.1:8500"
    model: str = "demo"
    version: int | None = None
    label: str | None = None
    signature: str = ""
    inputs: Mapping[str, InputSpec] = field(default_factory=lambda: {"x": InputSpec()})
    mode: Mode = "closed"
    concurrency: int = 1
    rate: float | None = None
    duration: float | None = 10.0
    requests: int | None = None
    warmup: float = 0.0
    procs: int = 1
    metadata: tuple[tuple[str, str], ...] = ()
    key_header: str | None = None
    keys: int = 10000
    timeout: float = 10.0
    seed: int = 0
    max_inflight: int = 10000
    channels: int = 1
    connect_timeout: float = 10.0
    protocol: ProtocolName = "tfs_grpc"

    def validate(self) -> None:
        """Raise ``ValueError`` when the settings are inconsistent or out of range."""
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {self.mode!r}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.mode == "closed" and self.concurrency < 1:
            raise ValueError("closed loop needs concurrency >= 1")
        if self.mode == "open" and (self.rate is None or self.rate <= 0):
            raise ValueError("open loop needs rate > 0")
        if self.duration is None and self.requests is None:
            raise ValueError("give a duration and/or a number of requests")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("duration must be > 0")
        if self.requests is not None and self.requests < 1:
            raise ValueError("requests must be >= 1")
        if self.warmup < 0:
            raise ValueError("warmup must be >= 0")
        if self.version is not None and self.label:
            raise ValueError("give either version or label, not both")
        if self.procs < 1 or self.channels < 1 or self.max_inflight < 1:
            raise ValueError("procs, channels and max_inflight must be >= 1")
        if self.key_header is not None and self.keys < 1:
            raise ValueError("keys must be >= 1 when key_header is set")
        if self.timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError("timeouts must be > 0")
        if not self.inputs:
            raise ValueError("at least one input is required")

    @property
    def workers(self) -> int:
        """Number of worker processes actually used (closed loop: at most one per client)."""
        if self.mode == "closed":
            return max(1, min(self.procs, self.concurrency))
        return self.procs

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict; ``LoadSpec.from_dict(spec.to_dict()) == spec``."""
        data = dataclasses.asdict(self)
        data["inputs"] = {
            name: {"dtype": s.dtype, "shape": list(s.shape), "values": s.values}
            for name, s in self.inputs.items()
        }
        data["metadata"] = [list(p) for p in self.metadata]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoadSpec:
        """Build from a dict with field names as keys (scenario ``loadgen`` section, JSON)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown loadgen settings: {sorted(unknown)}")
        kwargs: dict[str, Any] = dict(data)
        if kwargs.get("protocol") is not None:
            kwargs["protocol"] = str(kwargs["protocol"]).strip().lower()
        if "inputs" in kwargs:
            kwargs["inputs"] = _parse_inputs(kwargs["inputs"])
        if "metadata" in kwargs:
            kwargs["metadata"] = _parse_metadata(kwargs["metadata"])
        if kwargs.get("key_header") is not None:
            kwargs["key_header"] = str(kwargs["key_header"]).strip().lower()
        for name in ("concurrency", "procs", "keys", "seed", "max_inflight", "channels"):
            if kwargs.get(name) is not None:
                kwargs[name] = int(kwargs[name])
        for name in ("rate", "duration", "warmup", "timeout", "connect_timeout"):
            if kwargs.get(name) is not None:
                kwargs[name] = float(kwargs[name])
        for name in ("version", "requests"):
            if kwargs.get(name) is not None:
                kwargs[name] = int(kwargs[name])
        return cls(**kwargs)


@dataclass(frozen=True)
class LatencySummary:
    """Latency percentiles in milliseconds over the successful measured requests."""

    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float


@dataclass(frozen=True)
class WorkerResult:
    """What one worker reports: measured counts, its encoded histogram, timing marks."""

    worker: int
    sent: int
    ok: int
    errors: dict[str, int]
    histogram: str
    last_completion: float | None


@dataclass(frozen=True)
class LoadResult:
    """Outcome of a load run: counts, error codes, throughput and latency (ms).

    ``duration_s`` runs from the end of warm-up to the last measured completion (success
    or error);
    ``throughput_rps`` is ``ok / duration_s``. ``histogram`` is the merged HdrHistogram
    (microseconds), base64 encoded, for later merging or re-analysis.
    """

    settings: LoadSpec
    duration_s: float
    sent: int
    ok: int
    errors: dict[str, int]
    throughput_rps: float
    latency: LatencySummary
    histogram: str

    @property
    def error_count(self) -> int:
        """Total number of failed measured requests."""
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict; ``LoadResult.from_dict(r.to_dict()) == r``."""
        return {
            "settings": self.settings.to_dict(),
            "protocol": self.settings.protocol,
            "duration_s": self.duration_s,
            "sent": self.sent,
            "ok": self.ok,
            "errors": dict(self.errors),
            "error_count": self.error_count,
            "throughput_rps": self.throughput_rps,
            "latency_ms": dataclasses.asdict(self.latency),
            "histogram": self.histogram,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoadResult:
        """Inverse of ``to_dict``."""
        return cls(
            settings=LoadSpec.from_dict(data["settings"]),
            duration_s=float(data["duration_s"]),
            sent=int(data["sent"]),
            ok=int(data["ok"]),
            errors={str(k): int(v) for k, v in data["errors"].items()},
            throughput_rps=float(data["throughput_rps"]),
            latency=LatencySummary(**data["latency_ms"]),
            histogram=str(data["histogram"]),
        )

    def to_json(self, indent: int | None = 2) -> str:
        """Serialise to a JSON document."""
        return json.dumps(self.to_dict(), indent=indent)

    def write_json(self, path: str | os.PathLike[str]) -> None:
        """Write ``to_json()`` to ``path``."""
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def read_json(cls, path: str | os.PathLike[str]) -> LoadResult:
        """Read a file written by ``write_json``."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


# --------------------------------------------------------------------------------------
# Histograms and percentiles
# --------------------------------------------------------------------------------------


def new_histogram() -> HdrHistogram:
    """An empty latency histogram: microseconds, 1 us .. 60 s, 3 significant digits."""
    return HdrHistogram(HIST_LOWEST_US, HIST_HIGHEST_US, HIST_SIGNIFICANT_DIGITS)


def record_latency(hist: HdrHistogram, seconds: float) -> None:
    """Record one latency given in seconds, clamped into the histogram's range."""
    us = int(seconds * 1e6 + 0.5)
    if us < HIST_LOWEST_US:
        us = HIST_LOWEST_US
    elif us > HIST_HIGHEST_US:
        us = HIST_HIGHEST_US
    hist.record_value(us)


def encode_histogram(hist: HdrHistogram) -> str:
    """Compressed base64 text form of a histogram (HdrHistogram's standard encoding)."""
    return cast(bytes, hist.encode()).decode("ascii")


def decode_histogram(encoded: str | bytes) -> HdrHistogram:
    """Inverse of ``encode_histogram``."""
    raw = encoded.encode("ascii") if isinstance(encoded, str) else encoded
    return HdrHistogram.decode(raw)


def merge_histograms(histograms: Iterable[HdrHistogram | str | bytes]) -> HdrHistogram:
    """A new histogram holding every value of the given histograms (objects or encoded)."""
    merged = new_histogram()
    for item in histograms:
        merged.add(decode_histogram(item) if isinstance(item, str | bytes) else item)
    return merged


def percentiles_ms(
    hist: HdrHistogram, percentiles: Sequence[float] = DEFAULT_PERCENTILES
) -> dict[float, float]:
    """Map each percentile (0..100) to its latency in ms (0.0 for an empty histogram)."""
    if hist.get_total_count() == 0:
        return dict.fromkeys(percentiles, 0.0)
    return {p: hist.get_value_at_percentile(p) / 1000.0 for p in percentiles}


def summarize_latency(hist: HdrHistogram) -> LatencySummary:
    """p50/p90/p99/p99.9/max/mean in ms of a microsecond histogram."""
    count = int(hist.get_total_count())
    pct = percentiles_ms(hist, (50.0, 90.0, 99.0, 99.9))
    return LatencySummary(
        count=count,
        p50_ms=pct[50.0],
        p90_ms=pct[90.0],
        p99_ms=pct[99.0],
        p999_ms=pct[99.9],
        max_ms=hist.get_max_value() / 1000.0 if count else 0.0,
        mean_ms=float(hist.get_mean_value()) / 1000.0 if count else 0.0,
    )


def count_at_or_above(hist: HdrHistogram, threshold_ms: float) -> int:
    """Number of recorded latencies >= ``threshold_ms`` (at histogram precision)."""
    threshold_us = threshold_ms * 1000.0
    total = 0
    for item in hist.get_recorded_iterator():
        if hist.get_highest_equivalent_value(item.value_iterated_to) >= threshold_us:
            total += int(item.count_at_value_iterated_to)
    return total


# --------------------------------------------------------------------------------------
# Open-loop schedule
# --------------------------------------------------------------------------------------


def intended_send_time(t0: float, rate: float, index: int) -> float:
    """Intended send time of request ``index`` at a constant ``rate``: ``t0 + index / rate``."""
    return t0 + index / rate


def open_loop_schedule(
    t0: float, rate: float, *, worker: int = 0, workers: int = 1, stop_index: int | None = None
) -> Iterator[tuple[int, float]]:
    """Yield ``(index, intended_time)`` for the global indices ``worker, worker + workers,
    ...`` below ``stop_index`` (unbounded when None); workers interleave one schedule."""
    indices: Iterable[int] = (
        itertools.count(worker, workers)
        if stop_index is None
        else range(worker, stop_index, workers)
    )
    for i in indices:
        yield i, t0 + i / rate


def open_loop_bounds(
    rate: float, warmup: float, duration: float | None, requests: int | None
) -> tuple[int, int]:
    """``(first_measured_index, stop_index)`` of an open-loop run: requests scheduled in
    the first ``warmup`` seconds are not measured; the run ends after ``duration``
    measured seconds or ``requests`` measured requests, whichever comes first."""
    if duration is None and requests is None:
        raise ValueError("give a duration and/or a number of requests")
    first = math.ceil(warmup * rate - 1e-9)
    stops: list[int] = []
    if duration is not None:
        stops.append(math.ceil((warmup + duration) * rate - 1e-9))
    if requests is not None:
        stops.append(first + requests)
    return first, min(stops)


def open_loop_latency(intended: float, completed: float) -> float:
    """Open-loop latency: completion time minus the *intended* send time (seconds)."""
    return completed - intended


def split_evenly(total: int, parts: int) -> list[int]:
    """Split ``total`` into ``parts`` non-negative integers differing by at most one."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


# --------------------------------------------------------------------------------------
# Aggregation and formatting
# --------------------------------------------------------------------------------------


def aggregate_results(
    spec: LoadSpec, results: Sequence[WorkerResult], measure_start: float
) -> LoadResult:
    """Merge per-worker results into a ``LoadResult`` (measured window starts at
    ``measure_start`` and ends at the last measured completion of any worker)."""
    hist = merge_histograms(r.histogram for r in results)
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r.errors)
    ok = sum(r.ok for r in results)
    ends = [r.last_completion for r in results if r.last_completion is not None]
    duration = max(0.0, max(ends) - measure_start) if ends else 0.0
    return LoadResult(
        settings=spec,
        duration_s=duration,
        sent=sum(r.sent for r in results),
        ok=ok,
        errors=dict(sorted(errors.items())),
        throughput_rps=ok / duration if duration > 0 else 0.0,
        latency=summarize_latency(hist),
        histogram=encode_histogram(hist),
    )


def format_result(result: LoadResult) -> str:
    """Human-readable table of a result."""
    s = result.settings
    load = f"closed, {s.concurrency} clients" if s.mode == "closed" else f"open, {s.rate:g} req/s"
    target = s.model + (
        f" v{s.version}" if s.version is not None else f" @{s.label}" if s.label else ""
    )
    lat = result.latency
    rows = [
        ("target", f"{s.target}  model={target}  protocol={s.protocol}"),
        ("load", f"{load}, {s.procs} proc(s), warmup {s.warmup:g}s"),
        ("duration", f"{result.duration_s:.2f} s"),
        ("sent", str(result.sent)),
        ("ok", str(result.ok)),
        ("errors", str(result.error_count)),
        ("throughput", f"{result.throughput_rps:.1f} ok/s"),
        ("p50", f"{lat.p50_ms:.3f} ms"),
        ("p90", f"{lat.p90_ms:.3f} ms"),
        ("p99", f"{lat.p99_ms:.3f} ms"),
        ("p99.9", f"{lat.p999_ms:.3f} ms"),
        ("max", f"{lat.max_ms:.3f} ms"),
        ("mean", f"{lat.mean_ms:.3f} ms"),
    ]
    rows.extend((f"  {code}", str(n)) for code, n in result.errors.items())
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


# --------------------------------------------------------------------------------------
# Request construction
# --------------------------------------------------------------------------------------


def make_input_arrays(inputs: Mapping[str, InputSpec], seed: int = 0) -> dict[str, Any]:
    """Numpy arrays for the inputs: given ``values`` or deterministic random data from
    ``seed`` (floats ~ N(0, 1), integers in [0, 100), random booleans, short strings)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    arrays: dict[str, Any] = {}
    for name in sorted(inputs):
        spec = inputs[name]
        shape = tuple(spec.shape)
        kind = spec.dtype.lower()
        if kind in ("string", "str", "bytes", "object"):
            if spec.values is not None:
                arr = np.array(spec.values, dtype=object).reshape(shape)
            else:
                letters = np.array(list(b"abcdefghijklmnopqrstuvwxyz"), dtype=np.uint8)
                n = int(np.prod(shape, dtype=np.int64))
                codes = rng.choice(letters, size=(n, 8))
                arr = np.array([row.tobytes() for row in codes], dtype=object).reshape(shape)
        else:
            dtype = np.dtype(kind)
            if spec.values is not None:
                arr = np.asarray(spec.values, dtype=dtype).reshape(shape)
            elif dtype == np.bool_:
                arr = rng.integers(0, 2, size=shape).astype(np.bool_)
            elif np.issubdtype(dtype, np.integer):
                arr = rng.integers(0, 100, size=shape).astype(dtype)
            elif np.issubdtype(dtype, np.floating):
                arr = rng.standard_normal(size=shape).astype(dtype)
            else:
                raise ValueError(f"input {name!r}: unsupported dtype {spec.dtype!r}")
        arrays[name] = arr
    return arrays


def build_request(spec: LoadSpec) -> Any:
    """The ``predict_pb2.PredictRequest`` sent for every request of the run (built once)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.model
    if spec.version is not None:
        request.model_spec.version.value = spec.version
    elif spec.label:
        request.model_spec.version_label = spec.label
    if spec.signature:
        request.model_spec.signature_name = spec.signature
    for name, arr in make_input_arrays(spec.inputs, spec.seed).items():
        dtype = tf.string if arr.dtype == object else None
        request.inputs[name].CopyFrom(tf.make_tensor_proto(arr, dtype=dtype))
    return request


def build_metadata_pool(spec: LoadSpec) -> list[tuple[tuple[str, str], ...]]:
    """The metadata variants (gRPC metadata, or HTTP headers in REST modes) to pick from
    per request: one entry (``spec.metadata``) or, with a key header, one per key
    ``user-0 .. user-{keys-1}``."""
    base = tuple(spec.metadata)
    if spec.key_header is None:
        return [base]
    return [(*base, (spec.key_header, f"user-{i}")) for i in range(spec.keys)]


_OIP_DATATYPES: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "object": "BYTES",
}


def oip_datatype(dtype: Any) -> str:
    """The v2 datatype name of a numpy dtype (object arrays of bytes: ``BYTES``)."""
    import numpy as np

    name = np.dtype(dtype).name
    if name not in _OIP_DATATYPES:
        raise ValueError(f"no v2 datatype for numpy dtype {name!r}")
    return _OIP_DATATYPES[name]


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def raw_tensor_bytes(arr: Any) -> bytes:
    """The v2 raw form of an array: little-endian elements in row-major order, no padding;
    BYTES elements each a 4-byte little-endian length and its bytes."""
    import numpy as np

    if arr.dtype == object:
        return b"".join(
            struct.pack("<I", len(b)) + b for b in (_as_bytes(v) for v in arr.reshape(-1))
        )
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def _nest(flat: list[Any], shape: Sequence[int]) -> Any:
    """``flat`` (row-major) as nested lists of ``shape`` (a scalar for shape ``()``)."""
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return flat
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def _tfs_json_string(value: Any) -> Any:
    raw = _as_bytes(value)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(raw).decode("ascii")}


def _model_path_tfs(spec: LoadSpec) -> str:
    path = f"/v1/models/{quote(spec.model, safe='')}"
    if spec.version is not None:
        path += f"/versions/{spec.version}"
    elif spec.label:
        path += f"/labels/{quote(spec.label, safe='')}"
    return path + ":predict"


def _model_path_oip(spec: LoadSpec) -> str:
    path = f"/v2/models/{quote(spec.model, safe='')}"
    if spec.version is not None:
        path += f"/versions/{spec.version}"
    elif spec.label:  # the gateway's extension: a version segment may be a label
        path += f"/versions/{quote(spec.label, safe='')}"
    return path + "/infer"


def build_tfs_rest_body(spec: LoadSpec) -> bytes:
    """TF Serving REST predict body, columnar: ``{"signature_name": ..., "inputs": {name:
    nested lists}}`` (strings as JSON strings, or ``{"b64": ...}`` when not UTF-8)."""
    inputs: dict[str, Any] = {}
    for name, arr in make_input_arrays(spec.inputs, spec.seed).items():
        if arr.dtype == object:
            inputs[name] = _nest([_tfs_json_string(v) for v in arr.reshape(-1)], arr.shape)
        else:
            inputs[name] = arr.tolist()
    doc: dict[str, Any] = {}
    if spec.signature:
        doc["signature_name"] = spec.signature
    doc["inputs"] = inputs
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def build_oip_rest_body(spec: LoadSpec) -> bytes:
    """v2 REST infer body: ``{"inputs": [{"name", "shape", "datatype", "data": flat}]}``
    (BYTES elements as UTF-8 strings), the signature as the ``signature_name`` parameter."""
    tensors: list[dict[str, Any]] = []
    for name, arr in make_input_arrays(spec.inputs, spec.seed).items():
        datatype = oip_datatype(arr.dtype)
        if arr.dtype == object:
            try:
                data: list[Any] = [_as_bytes(v).decode("utf-8") for v in arr.reshape(-1)]
            except UnicodeDecodeError:
                raise ValueError(f"input {name!r}: BYTES values must be UTF-8 in JSON") from None
        else:
            data = arr.reshape(-1).tolist()
        tensors.append({"name": name, "shape": list(arr.shape), "datatype": datatype, "data": data})
    doc: dict[str, Any] = {"inputs": tensors}
    if spec.signature:
        doc["parameters"] = {"signature_name": spec.signature}
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def build_oip_request(spec: LoadSpec) -> Any:
    """The v2 ``ModelInferRequest`` of the run: every input in ``raw_input_contents``."""
    from gateway._proto.inference import grpc_service_pb2

    request = grpc_service_pb2.ModelInferRequest(model_name=spec.model)
    if spec.version is not None:
        request.model_version = str(spec.version)
    elif spec.label:
        request.model_version = spec.label
    if spec.signature:
        request.parameters["signature_name"].string_param = spec.signature
    for name, arr in make_input_arrays(spec.inputs, spec.seed).items():
        request.inputs.add(name=name, datatype=oip_datatype(arr.dtype), shape=list(arr.shape))
        request.raw_input_contents.append(raw_tensor_bytes(arr))
    return request


@dataclass(frozen=True)
class WireRequest:
    """What every call of a run sends, serialized once: a gRPC method and the serialized
    message, or an HTTP path (``POST``) and its JSON body."""

    protocol: str
    path: str
    body: bytes

    @property
    def rest(self) -> bool:
        """True for the HTTP protocols."""
        return self.protocol in REST_PROTOCOLS


def build_wire_request(spec: LoadSpec) -> WireRequest:
    """The run's request for ``spec.protocol`` (see the module docstring)."""
    if spec.protocol == "tfs_grpc":
        body = cast(bytes, build_request(spec).SerializeToString())
        return WireRequest(spec.protocol, TFS_PREDICT_METHOD, body)
    if spec.protocol == "oip_grpc":
        body = cast(bytes, build_oip_request(spec).SerializeToString())
        return WireRequest(spec.protocol, OIP_INFER_METHOD, body)
    if spec.protocol == "tfs_rest":
        return WireRequest(spec.protocol, _model_path_tfs(spec), build_tfs_rest_body(spec))
    if spec.protocol == "oip_rest":
        return WireRequest(spec.protocol, _model_path_oip(spec), build_oip_rest_body(spec))
    raise ValueError(f"protocol must be one of {PROTOCOLS}, got {spec.protocol!r}")


def http_error_code(status: int) -> str:
    """The error name a failed HTTP call is counted under: ``HTTP_<status>``."""
    return f"HTTP_{status}"


def rest_base_url(target: str) -> str:
    """``http://host:port`` for a ``host:port`` target (a URL target is kept as given)."""
    return target.rstrip("/") if "://" in target else f"http://{target}"


# --------------------------------------------------------------------------------------
# Callers: one request, one protocol (so the worker's loops are protocol-agnostic)
# --------------------------------------------------------------------------------------


class CallError(Exception):
    """A failed call: ``code`` is the gRPC status name, or ``HTTP_<status>`` for REST."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Caller(abc.ABC):
    """Sends the run's prebuilt request; ``call`` raises ``CallError`` when it fails."""

    @abc.abstractmethod
    async def call(self, metadata: Any) -> None:
        """One call with ``metadata`` in the caller's own form (see ``native_metadata``)."""

    @staticmethod
    @abc.abstractmethod
    def native_metadata(pairs: tuple[tuple[str, str], ...]) -> Any:
        """Metadata pairs in the form ``call`` takes (built once per pool entry)."""


class GrpcCaller(Caller):
    """A unary call on one ``grpc.aio`` channel with pre-serialized request bytes (no
    serializer, and no deserializer: the response is not parsed)."""

    def __init__(self, channel: Any, wire: WireRequest, timeout: float) -> None:
        import grpc

        self._method = channel.unary_unary(wire.path)
        self._body = wire.body
        self._timeout = timeout
        self._rpc_error: type[BaseException] = grpc.aio.AioRpcError

    async def call(self, metadata: Any) -> None:
        try:
            await self._method(self._body, metadata=metadata, timeout=self._timeout)
        except self._rpc_error as exc:
            raise CallError(cast(Any, exc).code().name) from None

    @staticmethod
    def native_metadata(pairs: tuple[tuple[str, str], ...]) -> Any:
        return pairs


class RestCaller(Caller):
    """``POST`` of the prebuilt JSON body on a shared ``aiohttp`` session (keep-alive); the
    body of the answer is read, not parsed; any status but 200 is ``HTTP_<status>``."""

    def __init__(self, session: Any, url: str, body: bytes) -> None:
        self._session = session
        self._url = url
        self._body = body

    async def call(self, metadata: Any) -> None:
        async with self._session.post(self._url, data=self._body, headers=metadata) as reply:
            await reply.read()
            if reply.status != 200:
                raise CallError(http_error_code(reply.status))

    @staticmethod
    def native_metadata(pairs: tuple[tuple[str, str], ...]) -> Any:
        return {"Content-Type": "application/json", **dict(pairs)}


class _Connections(abc.ABC):
    """A worker's connections to the target and the callers on them."""

    callers: list[Caller]

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect (within ``connect_timeout``; else ``LoadgenError``) and make callers."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close every connection."""

    def metadata_pool(self, spec: LoadSpec) -> list[Any]:
        """``build_metadata_pool(spec)`` in the callers' form."""
        convert = type(self.callers[0]).native_metadata
        return [convert(md) for md in build_metadata_pool(spec)]


class _GrpcConnections(_Connections):
    def __init__(self, spec: LoadSpec, wire: WireRequest) -> None:
        self.spec = spec
        self.wire = wire
        self.channels: list[Any] = []
        self.callers = []

    async def open(self) -> None:
        import grpc

        spec = self.spec
        options = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.use_local_subchannel_pool", 1),
        ]
        self.channels = [
            grpc.aio.insecure_channel(spec.target, options=options) for _ in range(spec.channels)
        ]
        try:
            await asyncio.wait_for(
                asyncio.gather(*(ch.channel_ready() for ch in self.channels)),
                spec.connect_timeout,
            )
        except TimeoutError:
            raise LoadgenError(
                f"could not connect to {spec.target} within {spec.connect_timeout:g}s"
            ) from None
        self.callers = [GrpcCaller(ch, self.wire, spec.timeout) for ch in self.channels]

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close()


class _RestConnections(_Connections):
    def __init__(self, spec: LoadSpec, wire: WireRequest, pool_size: int) -> None:
        self.spec = spec
        self.wire = wire
        self.pool_size = max(1, pool_size)
        self.session: Any = None
        self.callers = []

    async def open(self) -> None:
        import aiohttp

        spec = self.spec
        base = rest_base_url(spec.target)
        parts = urlsplit(base)
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if parts.scheme == "https" else 80)
        await _wait_tcp(host, port, spec.connect_timeout, spec.target)
        connector = aiohttp.TCPConnector(limit=self.pool_size, limit_per_host=self.pool_size)
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=spec.timeout),
            auto_decompress=False,
        )
        self.callers = [RestCaller(self.session, base + self.wire.path, self.wire.body)]

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


async def _wait_tcp(host: str, port: int, timeout: float, target: str) -> None:
    """Retry a TCP connection to ``host:port`` until it succeeds or ``timeout`` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise LoadgenError(f"could not connect to {target} within {timeout:g}s")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), remaining)
        except (OSError, TimeoutError):
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


def _connections(spec: LoadSpec, pool_size: int) -> _Connections:
    wire = build_wire_request(spec)
    if wire.rest:
        return _RestConnections(spec, wire, pool_size)
    return _GrpcConnections(spec, wire)


# --------------------------------------------------------------------------------------
# Worker (runs in a spawned process, or a thread when there is a single worker)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _WorkerConfig:
    spec: LoadSpec
    index: int
    workers: int
    concurrency: int
    request_budget: int | None
    subprocess: bool


@dataclass(frozen=True)
class _Sync:
    """Objects shared between the parent and its workers (picklable at spawn time)."""

    outbox: Any  # queue of ("ready" | "result" | "error", worker index, payload)
    go: Any  # event: start_at is set, begin
    stop: Any  # event: wind down early (Ctrl-C or a failed worker)
    start_at: Any  # shared double: the common t0 (time.monotonic, system-wide on Linux)
    counters: Any  # shared int64 array: live sent/ok/errors per worker


class _State:
    __slots__ = (
        "budget",
        "errors",
        "last_completion",
        "live_err",
        "live_ok",
        "live_sent",
        "ok",
        "sent",
        "stopping",
    )

    def __init__(self, budget: int | None) -> None:
        self.budget = budget
        self.sent = 0
        self.ok = 0
        self.errors: Counter[str] = Counter()
        self.last_completion: float | None = None
        self.live_sent = 0
        self.live_ok = 0
        self.live_err = 0
        self.stopping = False


def _worker_entry(cfg: _WorkerConfig, sync: _Sync) -> None:
    """Process/thread target: run the worker, report ("ready"|"result"|"error", index, x)."""
    if cfg.subprocess:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent coordinates shutdown
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        result = asyncio.run(_worker_main(cfg, sync))
        sync.outbox.put(("result", cfg.index, result))
    except BaseException as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        if not isinstance(exc, LoadgenError):
            detail = traceback.format_exc()
        sync.outbox.put(("error", cfg.index, detail))


async def _worker_main(cfg: _WorkerConfig, sync: _Sync) -> WorkerResult:
    spec = cfg.spec
    pool_size = cfg.concurrency if spec.mode == "closed" else spec.max_inflight
    conns = _connections(spec, pool_size)
    try:
        await conns.open()
        pool = conns.metadata_pool(spec)
        sync.outbox.put(("ready", cfg.index, None))
        while not await asyncio.to_thread(sync.go.wait, 0.5):
            if sync.stop.is_set():
                break
        if sync.stop.is_set():
            return WorkerResult(cfg.index, 0, 0, {}, encode_histogram(new_histogram()), None)
        t0 = float(sync.start_at.value)
        delay = t0 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        return await _drive(cfg, sync, callers=conns.callers, pool=pool, t0=t0)
    finally:
        await conns.close()


async def _drive(
    cfg: _WorkerConfig,
    sync: _Sync,
    *,
    callers: Sequence[Caller],
    pool: Sequence[Any],
    t0: float,
) -> WorkerResult:
    """Run the closed or open loop on ``callers`` (one request, one protocol each) with
    metadata drawn from ``pool`` (already in the callers' form)."""
    spec = cfg.spec
    state = _State(cfg.request_budget)
    hist = new_histogram()
    measure_start = t0 + spec.warmup
    rng = random.Random(spec.seed * 1_000_003 + cfg.index)
    randrange = rng.randrange
    npool = len(pool)
    fixed_md = pool[0]
    clock = time.monotonic
    base = cfg.index * _COUNTER_FIELDS
    counters = sync.counters
    stop = sync.stop

    def flush() -> None:
        counters[base] = state.live_sent
        counters[base + 1] = state.live_ok
        counters[base + 2] = state.live_err

    async def flusher() -> None:
        while True:
            await asyncio.sleep(_FLUSH_INTERVAL_S)
            flush()
            if stop.is_set():
                state.stopping = True

    def on_error(code: str, measured: bool) -> None:
        state.live_err += 1
        if measured:
            state.errors[code] += 1
            state.last_completion = clock()

    async def closed_client(client: int) -> None:
        call = callers[client % len(callers)].call
        send_deadline = measure_start + spec.duration if spec.duration is not None else math.inf
        while not state.stopping:
            sent_at = clock()
            if sent_at >= send_deadline:
                return
            measured = sent_at >= measure_start
            if measured:
                if state.budget is not None:
                    if state.budget <= 0:
                        return
                    state.budget -= 1
                state.sent += 1
            state.live_sent += 1
            md = pool[randrange(npool)] if npool > 1 else fixed_md
            try:
                await call(md)
            except CallError as exc:
                on_error(exc.code, measured)
                continue
            except Exception as exc:
                on_error(f"CLIENT_{type(exc).__name__}", measured)
                continue
            done = clock()
            state.live_ok += 1
            if measured:
                state.ok += 1
                state.last_completion = done
                record_latency(hist, done - sent_at)

    async def open_loop() -> None:
        assert spec.rate is not None
        first, stop_index = open_loop_bounds(spec.rate, spec.warmup, spec.duration, spec.requests)
        slots = asyncio.Semaphore(spec.max_inflight)
        inflight: set[asyncio.Task[None]] = set()
        calls = [c.call for c in callers]

        async def fire(call: Any, intended: float, measured: bool) -> None:
            md = pool[randrange(npool)] if npool > 1 else fixed_md
            try:
                await call(md)
            except CallError as exc:
                on_error(exc.code, measured)
                return
            except Exception as exc:
                on_error(f"CLIENT_{type(exc).__name__}", measured)
                return
            finally:
                slots.release()
            done = clock()
            state.live_ok += 1
            if measured:
                state.ok += 1
                state.last_completion = done
                record_latency(hist, open_loop_latency(intended, done))

        schedule = open_loop_schedule(
            t0, spec.rate, worker=cfg.index, workers=cfg.workers, stop_index=stop_index
        )
        for n, (index, intended) in enumerate(schedule):
            delay = intended - clock()
            # sleep(0) when behind still yields, so responses keep being processed.
            await asyncio.sleep(delay if delay > 0 else 0)
            if state.stopping:
                break
            await slots.acquire()
            measured = index >= first
            if measured:
                state.sent += 1
            state.live_sent += 1
            task = asyncio.create_task(fire(calls[n % len(calls)], intended, measured))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        if inflight:
            await asyncio.gather(*inflight)

    flush_task = asyncio.create_task(flusher())
    try:
        if spec.mode == "closed":
            await asyncio.gather(*(closed_client(c) for c in range(cfg.concurrency)))
        else:
            await open_loop()
    finally:
        flush_task.cancel()
        flush()
    return WorkerResult(
        worker=cfg.index,
        sent=state.sent,
        ok=state.ok,
        errors=dict(state.errors),
        histogram=encode_histogram(hist),
        last_completion=state.last_completion,
    )


# --------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------


class _Progress:
    def __init__(self, stream: IO[str] | None, counters: Any, workers: int) -> None:
        self.stream = stream
        self.counters = counters
        self.workers = workers
        self.start = 0.0
        self.last_t = 0.0
        self.last_ok = 0
        self.next_at = math.inf
        self.printed = False

    def begin(self, start: float) -> None:
        self.start = self.last_t = start
        self.next_at = start + 1.0

    def totals(self) -> tuple[int, int, int]:
        c = self.counters
        f = _COUNTER_FIELDS
        return (
            sum(c[i * f] for i in range(self.workers)),
            sum(c[i * f + 1] for i in range(self.workers)),
            sum(c[i * f + 2] for i in range(self.workers)),
        )

    def tick(self, now: float) -> None:
        if self.stream is None or now < self.next_at:
            return
        sent, ok, err = self.totals()
        rps = (ok - self.last_ok) / (now - self.last_t) if now > self.last_t else 0.0
        self.last_ok, self.last_t = ok, now
        self.next_at += 1.0
        if self.next_at <= now:
            self.next_at = now + 1.0
        line = f"\r[{now - self.start:6.1f}s] sent={sent} ok={ok} errors={err} rps={rps:,.0f}    "
        self.stream.write(line)
        self.stream.flush()
        self.printed = True

    def end(self) -> None:
        if self.stream is not None and self.printed:
            self.stream.write("\n")
            self.stream.flush()


def run_load(spec: LoadSpec, *, progress: bool | IO[str] = False) -> LoadResult:
    """Run one load test as described by ``spec`` and return the merged result.

    Blocks until the run ends; ``progress=True`` prints a once-per-second status line to
    stderr (or pass a text stream). Raises ``LoadgenError`` if the target cannot be reached
    or a worker fails, ``ValueError`` for invalid settings.
    """
    spec.validate()
    stream: IO[str] | None = sys.stderr if progress is True else progress or None
    workers = spec.workers
    ctx = mp.get_context("spawn")
    use_procs = workers > 1
    counters = ctx.RawArray("q", workers * _COUNTER_FIELDS)
    sync = _Sync(ctx.Queue(), ctx.Event(), ctx.Event(), ctx.RawValue("d", 0.0), counters)
    concurrency = split_evenly(spec.concurrency, workers)
    budgets: list[int | None] = (
        list(split_evenly(spec.requests, workers))
        if spec.requests is not None and spec.mode == "closed"
        else [None] * workers
    )
    runners: list[Any] = []
    for k in range(workers):
        cfg = _WorkerConfig(spec, k, workers, concurrency[k], budgets[k], use_procs)
        args = (cfg, sync)
        if use_procs:
            runners.append(ctx.Process(target=_worker_entry, args=args, daemon=True))
        else:
            runners.append(threading.Thread(target=_worker_entry, args=args, daemon=True))
    for r in runners:
        r.start()
    bar = _Progress(stream, counters, workers)
    results: dict[int, WorkerResult] = {}
    t0 = 0.0
    try:
        _await_messages(sync, runners, "ready", time.monotonic() + _READY_TIMEOUT_S)
        t0 = time.monotonic() + _START_DELAY_S
        sync.start_at.value = t0
        sync.go.set()
        bar.begin(t0)
        results = _await_messages(sync, runners, "result", math.inf, bar)
    except BaseException:
        sync.stop.set()
        sync.go.set()
        raise
    finally:
        bar.end()
        for r in runners:
            r.join(timeout=10.0)
            if use_procs and r.is_alive():
                r.terminate()
    return aggregate_results(spec, [results[k] for k in sorted(results)], t0 + spec.warmup)


def _await_messages(
    sync: _Sync,
    runners: Sequence[Any],
    kind: str,
    deadline: float,
    bar: _Progress | None = None,
) -> dict[int, Any]:
    """Collect one ``kind`` message per runner; Ctrl-C asks workers to wind down."""
    got: dict[int, Any] = {}
    dead_since: dict[int, float] = {}
    interrupted = False
    while len(got) < len(runners):
        now = time.monotonic()
        if bar is not None:
            bar.tick(now)
        if now > deadline:
            raise LoadgenError(f"workers not {kind} after {_READY_TIMEOUT_S:g}s")
        try:
            wait = 0.1 if bar is None else min(0.1, max(0.005, bar.next_at - now))
            msg_kind, index, payload = sync.outbox.get(timeout=wait)
        except queue.Empty:
            for i, r in enumerate(runners):
                if i not in got and not r.is_alive():
                    # A worker puts its last message and exits at once; the queue's feeder
                    # may deliver it a moment after the worker is gone, so allow a grace.
                    dead_since.setdefault(i, now)
                    if now - dead_since[i] > _EXIT_GRACE_S:
                        code = getattr(r, "exitcode", None)
                        raise LoadgenError(
                            f"worker {i} exited (code {code}) before '{kind}'"
                        ) from None
            continue
        except KeyboardInterrupt:
            if interrupted or kind != "result":
                raise
            interrupted = True
            sync.stop.set()
            continue
        if msg_kind == "error":
            raise LoadgenError(f"worker {index} failed: {payload}")
        if msg_kind == kind:
            got[index] = payload
    return got


async def run_load_async(spec: LoadSpec, *, progress: bool | IO[str] = False) -> LoadResult:
    """``run_load`` for callers inside an event loop (runs it in a worker thread)."""
    return await asyncio.to_thread(run_load, spec, progress=progress)


# --------------------------------------------------------------------------------------
# Scenarios and CLI
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A scenario file: loadgen settings plus the gateway config to run them against."""

    name: str
    description: str
    loadgen: dict[str, Any]
    gateway_config: dict[str, Any]

    def load_spec(self, **overrides: Any) -> LoadSpec:
        """The scenario's ``LoadSpec``, with ``overrides`` (field name -> value) applied."""
        return LoadSpec.from_dict({**self.loadgen, **overrides})


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read a scenario YAML file (keys: name, description, loadgen, gateway_config)."""
    p = Path(path)
    data = yaml.safe_load(p.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a mapping at top level")
    loadgen = data.get("loadgen") or {}
    gateway_config = data.get("gateway_config") or {}
    if not isinstance(loadgen, dict) or not isinstance(gateway_config, dict):
        raise ValueError(f"{p}: 'loadgen' and 'gateway_config' must be mappings")
    LoadSpec.from_dict(loadgen).validate()
    return Scenario(
        name=str(data.get("name", p.stem)),
        description=str(data.get("description", "")),
        loadgen=loadgen,
        gateway_config=gateway_config,
    )


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser (every setting defaults to None = "not given")."""
    p = argparse.ArgumentParser(
        prog="python -m loadtest.loadgen",
        description="Load generator for TF Serving Predict and v2 infer, over gRPC or REST.",
    )
    p.add_argument("--scenario", help="YAML scenario file; its 'loadgen' section sets defaults")
    p.add_argument("--target", help="host:port (default 127.0.0.1:8500; REST modes: the REST port)")
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        help="tfs_grpc (default: TF Serving Predict), tfs_rest (TF Serving REST :predict), "
        "oip_grpc (v2 ModelInfer), oip_rest (v2 REST /infer)",
    )
    p.add_argument("--mode", choices=_MODES, help="closed (default) or open (with --rate)")
    p.add_argument("-c", "--concurrency", type=int, help="closed-loop clients (default 1)")
    p.add_argument("--rate", type=float, help="open-loop arrival rate, req/s (implies open)")
    p.add_argument("--duration", type=float, help="measured seconds (default 10)")
    p.add_argument("--requests", type=int, help="measured requests")
    p.add_argument("--warmup", type=float, help="seconds excluded from stats (default 0)")
    p.add_argument("--procs", type=int, help="client processes (default 1)")
    p.add_argument("--channels", type=int, help="gRPC channels per process (default 1; gRPC modes)")
    p.add_argument("--model", help="model name (default demo)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--version", type=int, help="model version")
    g.add_argument("--label", help="model version label")
    p.add_argument("--signature", help="signature name (default: server's default)")
    gi = p.add_mutually_exclusive_group()
    gi.add_argument("--inputs", help='JSON: {"x": {"dtype": "float32", "shape": [1, 4]}}')
    gi.add_argument("--inputs-file", help="file holding the --inputs JSON")
    p.add_argument("--metadata", action="append", metavar="KEY=VALUE", help="repeatable")
    p.add_argument("--key-header", help="metadata header set to a random key per request")
    p.add_argument("--keys", type=int, help="size of the key pool (default 10000)")
    p.add_argument("--timeout", type=float, help="per-request deadline, seconds (default 10)")
    p.add_argument("--max-inflight", type=int, help="open loop: max outstanding per process")
    p.add_argument("--seed", type=int, help="seed for input values and key choice")
    p.add_argument("--json", dest="json_path", metavar="FILE", help="write the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def spec_from_args(args: argparse.Namespace) -> LoadSpec:
    """Combine a scenario's loadgen settings (if any) with CLI flags (which win)."""
    settings: dict[str, Any] = {}
    if args.scenario:
        settings.update(load_scenario(args.scenario).loadgen)
    if args.inputs_file:
        settings["inputs"] = json.loads(Path(args.inputs_file).read_text(encoding="utf-8"))
    elif args.inputs:
        settings["inputs"] = json.loads(args.inputs)
    if args.metadata:
        merged = dict(_parse_metadata(settings.get("metadata")))
        merged.update(_parse_metadata(args.metadata))
        settings["metadata"] = merged
    simple = [
        *("target", "mode", "concurrency", "rate", "duration", "requests", "warmup"),
        *("procs", "channels", "model", "signature", "key_header", "keys", "timeout"),
        *("max_inflight", "seed", "protocol"),
    ]
    for name in simple:
        value = getattr(args, name)
        if value is not None:
            settings[name] = value
    if args.version is not None:
        settings["version"], settings["label"] = args.version, None
    elif args.label is not None:
        settings["version"], settings["label"] = None, args.label
    if args.rate is not None and args.mode is None:
        settings["mode"] = "open"
    if (args.requests is not None) and args.duration is None and "duration" not in settings:
        settings["duration"] = None
    return LoadSpec.from_dict(settings)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns 0 when the run produced successful responses, else 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        spec = spec_from_args(args)
        spec.validate()
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    try:
        result = run_load(spec, progress=not args.quiet)
    except LoadgenError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 1
    print(format_result(result))
    if args.json_path:
        result.write_json(args.json_path)
    return 0 if result.ok > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
