"""Unit tests for loadtest.loadgen: histogram math, open-loop schedule, aggregation, and
end-to-end runs against an in-process fake grpc.aio Predict endpoint."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadtest import loadgen
from loadtest.loadgen import (
    InputSpec,
    LoadResult,
    LoadSpec,
    WorkerResult,
    aggregate_results,
    count_at_or_above,
    decode_histogram,
    encode_histogram,
    intended_send_time,
    merge_histograms,
    new_histogram,
    open_loop_bounds,
    open_loop_latency,
    open_loop_schedule,
    percentiles_ms,
    run_load,
    split_evenly,
    summarize_latency,
)

SCENARIOS = Path(__file__).resolve().parents[2] / "loadtest" / "scenarios"

# 3 significant digits: a reported value is within 0.1% (one bucket) of the true one.
REL = 1e-3


def _hist_of(values_us: Any) -> Any:
    h = new_histogram()
    for v in values_us:
        h.record_value(int(v))
    return h


# --------------------------------------------------------------------------------------
# Histograms
# --------------------------------------------------------------------------------------


def test_percentiles_match_numpy() -> None:
    rng = np.random.default_rng(7)
    # n = 20001 keeps p * n off integer ranks, where numpy's float rounding and HdrHistogram's
    # rank rule (round(p * n)) may legitimately pick neighbouring samples.
    values = rng.lognormal(mean=7.0, sigma=1.0, size=20_001).astype(np.int64) + 1
    h = _hist_of(values)
    got = percentiles_ms(h, (50.0, 90.0, 99.0, 99.9, 100.0))
    for p, ms in got.items():
        expected_ms = np.percentile(values, p, method="inverted_cdf") / 1000.0
        assert ms == pytest.approx(expected_ms, rel=REL, abs=0.002), p
    summary = summarize_latency(h)
    assert summary.count == len(values)
    assert summary.max_ms == pytest.approx(values.max() / 1000.0, rel=REL)
    assert summary.mean_ms == pytest.approx(values.mean() / 1000.0, rel=REL)
    assert summary.p999_ms == got[99.9]


def test_percentiles_on_known_data() -> None:
    h = _hist_of(range(1, 1001))  # 1..1000 us: exact below 2048 at 3 digits
    got = percentiles_ms(h, (50.0, 90.0, 99.0, 99.9))
    assert got == {50.0: 0.5, 90.0: 0.9, 99.0: 0.99, 99.9: 0.999}


def test_empty_histogram_summary_is_zero() -> None:
    s = summarize_latency(new_histogram())
    assert s.count == 0
    assert s.p50_ms == s.p999_ms == s.max_ms == s.mean_ms == 0.0


def test_record_latency_clamps_to_range() -> None:
    h = new_histogram()
    loadgen.record_latency(h, 0.0)
    loadgen.record_latency(h, 1000.0)
    assert h.get_total_count() == 2
    assert h.get_min_value() == 1
    assert h.get_max_value() >= 60_000_000 * (1 - REL)


def test_merge_equals_single_histogram() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(1, 2_000_000, size=5000)
    b = rng.integers(50, 90_000, size=3000)
    whole = _hist_of(np.concatenate([a, b]))
    merged = merge_histograms([_hist_of(a), encode_histogram(_hist_of(b))])
    assert merged.get_total_count() == whole.get_total_count()
    for p in (1.0, 25.0, 50.0, 90.0, 99.0, 99.9, 100.0):
        assert merged.get_value_at_percentile(p) == whole.get_value_at_percentile(p)
    assert merged.get_max_value() == whole.get_max_value()
    assert encode_histogram(merged) == encode_histogram(whole)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.integers(1, 60_000_000), min_size=1, max_size=200),
    st.lists(st.integers(1, 60_000_000), max_size=200),
)
def test_merge_property(a: list[int], b: list[int]) -> None:
    merged = merge_histograms([encode_histogram(_hist_of(a)), encode_histogram(_hist_of(b))])
    assert summarize_latency(merged) == summarize_latency(_hist_of(a + b))


def test_histogram_encoding_round_trips() -> None:
    h = _hist_of([5, 50, 500, 5000])
    back = decode_histogram(encode_histogram(h))
    assert summarize_latency(back) == summarize_latency(h)


def test_count_at_or_above() -> None:
    h = _hist_of([1000] * 7 + [150_000] * 3 + [250_000])
    assert count_at_or_above(h, 100.0) == 4
    assert count_at_or_above(h, 200.0) == 1
    assert count_at_or_above(h, 0.5) == 11


# --------------------------------------------------------------------------------------
# Open-loop schedule
# --------------------------------------------------------------------------------------


def test_intended_send_times() -> None:
    assert intended_send_time(100.0, 50.0, 0) == 100.0
    assert intended_send_time(100.0, 50.0, 25) == pytest.approx(100.5)
    got = list(open_loop_schedule(10.0, 4.0, stop_index=5))
    assert got == [(0, 10.0), (1, 10.25), (2, 10.5), (3, 10.75), (4, 11.0)]


def test_schedule_interleaves_workers() -> None:
    rate, stop = 100.0, 23
    per_worker = [
        list(open_loop_schedule(0.0, rate, worker=k, workers=3, stop_index=stop)) for k in range(3)
    ]
    combined = sorted(item for items in per_worker for item in items)
    assert combined == list(open_loop_schedule(0.0, rate, stop_index=stop))
    assert [i for i, _ in per_worker[1]] == [1, 4, 7, 10, 13, 16, 19, 22]
    unbounded = open_loop_schedule(5.0, 2.0, worker=1, workers=2)
    assert [next(unbounded) for _ in range(3)] == [(1, 5.5), (3, 6.5), (5, 7.5)]


def test_open_loop_bounds() -> None:
    assert open_loop_bounds(100.0, 0.0, 2.0, None) == (0, 200)
    assert open_loop_bounds(100.0, 1.0, 2.0, None) == (100, 300)
    assert open_loop_bounds(100.0, 1.0, 2.0, 50) == (100, 150)
    assert open_loop_bounds(100.0, 0.0, None, 7) == (0, 7)
    assert open_loop_bounds(3.0, 0.5, 1.0, None) == (2, 5)
    with pytest.raises(ValueError):
        open_loop_bounds(1.0, 0.0, None, None)


def test_open_loop_latency_counts_from_intended_time() -> None:
    intended = intended_send_time(0.0, 100.0, 10)  # 0.1 s
    # Sent late at 0.3 s (e.g. after a stall), answered at 0.301 s: latency includes lateness.
    assert open_loop_latency(intended, 0.301) == pytest.approx(0.201)


def test_split_evenly() -> None:
    assert split_evenly(10, 3) == [4, 3, 3]
    assert split_evenly(2, 4) == [1, 1, 0, 0]
    assert sum(split_evenly(12345, 7)) == 12345


# --------------------------------------------------------------------------------------
# Aggregation, settings, JSON
# --------------------------------------------------------------------------------------


def test_aggregate_results() -> None:
    spec = LoadSpec(concurrency=2, procs=2)
    w0 = WorkerResult(0, 10, 9, {"UNAVAILABLE": 1}, encode_histogram(_hist_of([1000] * 9)), 12.0)
    w1 = WorkerResult(
        1,
        6,
        4,
        {"UNAVAILABLE": 1, "INVALID_ARGUMENT": 1},
        encode_histogram(_hist_of([3000] * 4)),
        11.5,
    )
    r = aggregate_results(spec, [w0, w1], measure_start=10.0)
    assert (r.sent, r.ok, r.error_count) == (16, 13, 3)
    assert r.errors == {"INVALID_ARGUMENT": 1, "UNAVAILABLE": 2}
    assert r.duration_s == pytest.approx(2.0)
    assert r.throughput_rps == pytest.approx(6.5)
    assert r.latency.count == 13
    assert r.latency.p50_ms == pytest.approx(1.0, rel=REL)
    assert r.latency.max_ms == pytest.approx(3.0, rel=REL)


def test_aggregate_with_no_successes() -> None:
    w = WorkerResult(0, 3, 0, {"UNAVAILABLE": 3}, encode_histogram(new_histogram()), None)
    r = aggregate_results(LoadSpec(), [w], measure_start=0.0)
    assert r.ok == 0 and r.throughput_rps == 0.0 and r.duration_s == 0.0


def test_spec_validation() -> None:
    LoadSpec().validate()
    for bad in (
        LoadSpec(mode="open"),
        LoadSpec(concurrency=0),
        LoadSpec(duration=None, requests=None),
        LoadSpec(version=1, label="stable"),
        LoadSpec(warmup=-1.0),
    ):
        with pytest.raises(ValueError):
            bad.validate()


def test_spec_dict_round_trip() -> None:
    spec = LoadSpec(
        target="127.0.0.1:1",
        label="canary",
        inputs={"x": InputSpec("float32", (2, 4)), "s": InputSpec("string", (1,))},
        mode="open",
        rate=250.0,
        metadata=(("a", "1"), ("b", "2")),
        key_header="x-user-id",
        keys=5,
    )
    assert LoadSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_make_input_arrays_is_deterministic() -> None:
    inputs = {
        "x": InputSpec("float32", (2, 4)),
        "i": InputSpec("int64", (3,)),
        "b": InputSpec("bool", (2,)),
        "s": InputSpec("string", (2, 1)),
        "v": InputSpec("float64", (2,), values=[1.5, 2.5]),
    }
    a = loadgen.make_input_arrays(inputs, seed=1)
    b = loadgen.make_input_arrays(inputs, seed=1)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert a["x"].dtype == np.float32 and a["x"].shape == (2, 4)
    assert a["i"].dtype == np.int64 and a["s"].shape == (2, 1)
    assert isinstance(a["s"][0, 0], bytes)
    np.testing.assert_array_equal(a["v"], [1.5, 2.5])


def test_metadata_pool() -> None:
    spec = LoadSpec(metadata=(("tenant", "t1"),), key_header="x-user-id", keys=3)
    pool = loadgen.build_metadata_pool(spec)
    assert pool == [
        (("tenant", "t1"), ("x-user-id", "user-0")),
        (("tenant", "t1"), ("x-user-id", "user-1")),
        (("tenant", "t1"), ("x-user-id", "user-2")),
    ]
    assert loadgen.build_metadata_pool(LoadSpec()) == [()]


def test_result_json_round_trip(tmp_path: Path) -> None:
    w = WorkerResult(
        0, 5, 4, {"DEADLINE_EXCEEDED": 1}, encode_histogram(_hist_of([10, 20, 30, 40])), 3.0
    )
    result = aggregate_results(LoadSpec(requests=5, duration=None), [w], measure_start=1.0)
    path = tmp_path / "r.json"
    result.write_json(path)
    assert LoadResult.read_json(path) == result
    data = json.loads(path.read_text())
    assert data["latency_ms"]["p99_ms"] == result.latency.p99_ms
    assert data["errors"] == {"DEADLINE_EXCEEDED": 1}
    assert "p99.9" in loadgen.format_result(result)


# --------------------------------------------------------------------------------------
# Scenarios and CLI parsing
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["primary_only", "shadow_100", "canary_25"])
def test_scenarios_parse(name: str, tmp_path: Path) -> None:
    sc = loadgen.load_scenario(SCENARIOS / f"{name}.yaml")
    spec = sc.load_spec()
    spec.validate()
    cfg = sc.gateway_config
    assert cfg["server"]["port"] == int(spec.target.rsplit(":", 1)[1])
    (model,) = cfg["models"]
    assert model["name"] == spec.model
    assert ("shadows" in model) == (name == "shadow_100")
    assert ("rollout" in model) == (name == "canary_25")
    if name == "canary_25":
        assert model["rollout"]["steps"][0] == 25 and model["rollout"]["auto_start"]
        assert spec.key_header == model["rollout"]["routing_key"]["header"]
    # the gateway's own loader accepts the scenario's config (model paths aside)
    from gateway.config import parse_config

    base = tmp_path / "models" / "demo"
    base.mkdir(parents=True)
    parse_config(cfg, tmp_path)
    if name == "shadow_100":
        assert model["shadows"][0]["sample_rate"] == 1.0


def test_cli_overrides_scenario() -> None:
    parser = loadgen.build_parser()
    args = parser.parse_args(
        [
            "--scenario",
            str(SCENARIOS / "canary_25.yaml"),
            "--rate",
            "123",
            "--requests",
            "10",
            "--metadata",
            "k=v",
            "--inputs",
            '{"z": {"dtype": "int32", "shape": [3]}}',
        ]
    )
    spec = loadgen.spec_from_args(args)
    assert spec.mode == "open" and spec.rate == 123.0 and spec.requests == 10
    assert spec.key_header == "x-user-id"
    assert ("k", "v") in spec.metadata
    assert spec.inputs == {"z": InputSpec("int32", (3,))}
    plain = loadgen.spec_from_args(parser.parse_args(["--requests", "5"]))
    assert plain.duration is None and plain.requests == 5


# --------------------------------------------------------------------------------------
# Fake endpoint
# --------------------------------------------------------------------------------------


@dataclass
class FakeBehaviour:
    stall_at: int | None = None  # 1-based request number that blocks the server
    stall_s: float = 0.2
    fail_every: int | None = None  # every n-th request aborts with INVALID_ARGUMENT
    seen: list[tuple[str, str, tuple[int, ...], dict[str, str]]] = field(default_factory=list)
    count: int = 0


class FakeServer:
    """grpc.aio PredictionService on 127.0.0.1:0, running in its own thread and loop."""

    def __init__(self, behaviour: FakeBehaviour) -> None:
        self.behaviour = behaviour
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        behaviour = self.behaviour
        reply = predict_pb2.PredictResponse()
        reply.outputs["y"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 1), np.float32)))

        class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
            async def Predict(self, request: Any, context: Any) -> Any:
                behaviour.count += 1
                n = behaviour.count
                x = request.inputs["x"]
                behaviour.seen.append(
                    (
                        request.model_spec.name,
                        request.model_spec.version_label,
                        tuple(d.size for d in x.tensor_shape.dim),
                        dict(context.invocation_metadata()),
                    )
                )
                if behaviour.stall_at is not None and n == behaviour.stall_at:
                    # time is the behaviour: a stall of stall_s that blocks the whole
                    # server loop, which the open-loop latencies must show
                    time.sleep(behaviour.stall_s)
                if behaviour.fail_every and n % behaviour.fail_every == 0:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad request")
                return reply

        server = grpc.aio.server()
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await server.stop(0)

    def __enter__(self) -> FakeServer:
        self._thread.start()
        assert self._ready.wait(60), "fake server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def fake_server() -> Iterator[Callable[[FakeBehaviour], FakeServer]]:
    servers: list[FakeServer] = []

    def start(behaviour: FakeBehaviour) -> FakeServer:
        server = FakeServer(behaviour).__enter__()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.__exit__(None, None, None)


def test_open_loop_exposes_stall_closed_loop_hides_it(
    fake_server: Callable[[FakeBehaviour], FakeServer],
) -> None:
    stall_at, rate = 40, 100.0
    open_srv = fake_server(FakeBehaviour(stall_at=stall_at))
    open_result = run_load(
        LoadSpec(target=open_srv.target, mode="open", rate=rate, requests=120, duration=None)
    )
    assert open_result.ok == open_result.sent == 120 and not open_result.errors
    open_hist = decode_histogram(open_result.histogram)
    # ~20 requests were scheduled during the 200 ms stall; their latency is counted from
    # their intended send time, so about half of them waited >= 100 ms.
    assert open_result.latency.max_ms >= 190.0
    assert count_at_or_above(open_hist, 100.0) >= 5
    assert count_at_or_above(open_hist, 50.0) >= 10

    closed_srv = fake_server(FakeBehaviour(stall_at=stall_at))
    closed_result = run_load(
        LoadSpec(target=closed_srv.target, concurrency=1, requests=120, duration=None)
    )
    assert closed_result.ok == closed_result.sent == 120 and not closed_result.errors
    closed_hist = decode_histogram(closed_result.histogram)
    # Closed loop: the single client simply waited, so only one sample shows the stall.
    assert closed_result.latency.max_ms >= 190.0
    assert count_at_or_above(closed_hist, 150.0) <= 2


def test_errors_counted_by_status_code(
    fake_server: Callable[[FakeBehaviour], FakeServer],
) -> None:
    srv = fake_server(FakeBehaviour(fail_every=3))
    result = run_load(LoadSpec(target=srv.target, concurrency=1, requests=30, duration=None))
    assert result.sent == 30
    assert result.ok == 20
    assert result.errors == {"INVALID_ARGUMENT": 10}
    assert result.latency.count == 20


def test_request_content_metadata_and_warmup(
    fake_server: Callable[[FakeBehaviour], FakeServer],
) -> None:
    behaviour = FakeBehaviour()
    srv = fake_server(behaviour)
    spec = LoadSpec(
        target=srv.target,
        model="m1",
        label="canary",
        inputs={"x": InputSpec("float32", (2, 4))},
        concurrency=3,
        requests=40,
        duration=None,
        warmup=0.3,
        metadata=(("tenant", "t1"),),
        key_header="x-user-id",
        keys=7,
    )
    result = run_load(spec)
    assert result.ok == result.sent == 40
    # Warm-up requests reached the server but are excluded from the stats.
    assert len(behaviour.seen) > 40
    keys = {f"user-{i}" for i in range(7)}
    for name, label, shape, md in behaviour.seen:
        assert (name, label, shape) == ("m1", "canary", (2, 4))
        assert md["tenant"] == "t1" and md["x-user-id"] in keys
    assert len({md["x-user-id"] for *_, md in behaviour.seen}) > 1


def test_duration_bound_and_main_json(
    fake_server: Callable[[FakeBehaviour], FakeServer], tmp_path: Path
) -> None:
    srv = fake_server(FakeBehaviour())
    out = tmp_path / "result.json"
    code = loadgen.main(
        [
            "--target",
            srv.target,
            "--rate",
            "200",
            "--duration",
            "0.5",
            "--quiet",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    result = LoadResult.read_json(out)
    assert result.settings.mode == "open"
    assert result.sent == 100 and result.ok == 100
    assert result.throughput_rps > 0


def test_unreachable_target_raises() -> None:
    from gateway.workers import free_port

    port = free_port()
    spec = LoadSpec(target=f"127.0.0.1:{port}", requests=1, duration=None, connect_timeout=0.5)
    with pytest.raises(loadgen.LoadgenError, match="could not connect"):
        run_load(spec)


# --------------------------------------------------------------------------------------
# Protocols: request building, error names, a fake REST endpoint
# --------------------------------------------------------------------------------------


def test_protocol_setting_validates_and_round_trips() -> None:
    assert LoadSpec().protocol == "tfs_grpc"
    for protocol in loadgen.PROTOCOLS:
        spec = LoadSpec(protocol=protocol)
        spec.validate()
        assert LoadSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert LoadSpec.from_dict({"protocol": "OIP_REST"}).protocol == "oip_rest"
    with pytest.raises(ValueError, match="protocol"):
        LoadSpec(protocol="http").validate()  # type: ignore[arg-type]
    parser = loadgen.build_parser()
    args = parser.parse_args(["--protocol", "tfs_rest", "--target", "127.0.0.1:8501"])
    spec = loadgen.spec_from_args(args)
    assert (spec.protocol, spec.target) == ("tfs_rest", "127.0.0.1:8501")
    with pytest.raises(SystemExit):
        parser.parse_args(["--protocol", "soap"])


def test_scenario_file_sets_the_protocol(tmp_path: Path) -> None:
    path = tmp_path / "rest.yaml"
    path.write_text("name: rest\nloadgen:\n  protocol: oip_rest\n  target: 127.0.0.1:8501\n")
    assert loadgen.load_scenario(path).load_spec().protocol == "oip_rest"


def test_tfs_grpc_wire_request_is_the_predict_request() -> None:
    from tensorflow_serving.apis import predict_pb2

    spec = LoadSpec(model="m", label="canary", signature="sig")
    wire = loadgen.build_wire_request(spec)
    assert (wire.protocol, wire.path, wire.rest) == ("tfs_grpc", loadgen.TFS_PREDICT_METHOD, False)
    assert predict_pb2.PredictRequest.FromString(wire.body) == loadgen.build_request(spec)


def test_oip_grpc_request_has_raw_contents() -> None:
    from gateway._proto.inference import grpc_service_pb2

    spec = LoadSpec(
        protocol="oip_grpc",
        model="m",
        version=3,
        signature="sig",
        inputs={
            "x": InputSpec("float32", (2, 4)),
            "i": InputSpec("int64", (3,)),
            "b": InputSpec("bool", (5,)),
            "s": InputSpec("string", (2, 1), values=[[b"ab"], [b"xyz"]]),
        },
    )
    wire = loadgen.build_wire_request(spec)
    assert (wire.path, wire.rest) == ("/inference.GRPCInferenceService/ModelInfer", False)
    request = grpc_service_pb2.ModelInferRequest.FromString(wire.body)
    assert (request.model_name, request.model_version) == ("m", "3")
    assert request.parameters["signature_name"].string_param == "sig"
    arrays = loadgen.make_input_arrays(spec.inputs, spec.seed)
    tensors = {t.name: (t.datatype, list(t.shape)) for t in request.inputs}
    assert tensors == {
        "b": ("BOOL", [5]),
        "i": ("INT64", [3]),
        "s": ("BYTES", [2, 1]),
        "x": ("FP32", [2, 4]),
    }
    assert not any(t.HasField("contents") for t in request.inputs)
    raw = dict(zip((t.name for t in request.inputs), request.raw_input_contents, strict=True))
    assert len(raw["x"]) == 2 * 4 * 4 and len(raw["i"]) == 3 * 8 and len(raw["b"]) == 5
    np.testing.assert_array_equal(np.frombuffer(raw["x"], "<f4").reshape(2, 4), arrays["x"])
    np.testing.assert_array_equal(np.frombuffer(raw["i"], "<i8"), arrays["i"])
    assert raw["s"] == b"\x02\x00\x00\x00ab\x03\x00\x00\x00xyz"
    labelled = grpc_service_pb2.ModelInferRequest.FromString(
        loadgen.build_wire_request(LoadSpec(label="stable", protocol="oip_grpc")).body
    )
    assert labelled.model_version == "stable" and "signature_name" not in labelled.parameters


def test_raw_tensor_bytes_and_datatypes() -> None:
    assert (
        loadgen.raw_tensor_bytes(np.array([1.0, 2.0], ">f8"))
        == np.array([1.0, 2.0], "<f8").tobytes()
    )
    assert loadgen.raw_tensor_bytes(np.array([], dtype=object)) == b""
    assert loadgen.oip_datatype(np.float64) == "FP64"
    assert loadgen.oip_datatype(np.dtype(object)) == "BYTES"
    with pytest.raises(ValueError, match="complex"):
        loadgen.oip_datatype(np.complex64)


def test_tfs_rest_body_is_columnar_json() -> None:
    spec = LoadSpec(
        protocol="tfs_rest",
        model="my model",
        version=2,
        signature="sig",
        inputs={
            "x": InputSpec("float32", (2, 4)),
            "s": InputSpec("string", (2,), values=[b"hi", b"\xff\x00"]),
        },
    )
    wire = loadgen.build_wire_request(spec)
    assert wire.rest and wire.path == "/v1/models/my%20model/versions/2:predict"
    doc = json.loads(wire.body)
    assert list(doc) == ["signature_name", "inputs"] and doc["signature_name"] == "sig"
    arrays = loadgen.make_input_arrays(spec.inputs, spec.seed)
    np.testing.assert_array_equal(np.array(doc["inputs"]["x"], np.float32), arrays["x"])
    assert np.shape(doc["inputs"]["x"]) == (2, 4)
    assert doc["inputs"]["s"] == ["hi", {"b64": "/wA="}]  # not UTF-8: TF Serving's b64 form
    plain = loadgen.build_wire_request(LoadSpec(protocol="tfs_rest", label="canary"))
    assert plain.path == "/v1/models/demo/labels/canary:predict"
    assert list(json.loads(plain.body)) == ["inputs"]
    assert np.shape(json.loads(plain.body)["inputs"]["x"]) == (1, 4)


def test_oip_rest_body_is_v2_json_tensors() -> None:
    spec = LoadSpec(
        protocol="oip_rest",
        signature="sig",
        inputs={"x": InputSpec("float32", (2, 3)), "s": InputSpec("string", (1,), values=["a"])},
    )
    wire = loadgen.build_wire_request(spec)
    assert wire.rest and wire.path == "/v2/models/demo/infer"
    doc = json.loads(wire.body)
    assert doc["parameters"] == {"signature_name": "sig"}
    by_name = {t["name"]: t for t in doc["inputs"]}
    x = loadgen.make_input_arrays(spec.inputs, spec.seed)["x"]
    assert by_name["x"]["shape"] == [2, 3] and by_name["x"]["datatype"] == "FP32"
    assert by_name["x"]["data"] == pytest.approx(x.reshape(-1).tolist())
    assert by_name["s"] == {"name": "s", "shape": [1], "datatype": "BYTES", "data": ["a"]}
    versioned = loadgen.build_wire_request(LoadSpec(protocol="oip_rest", version=7))
    assert versioned.path == "/v2/models/demo/versions/7/infer"
    assert "parameters" not in json.loads(versioned.body)
    with pytest.raises(ValueError, match="UTF-8"):
        loadgen.build_oip_rest_body(
            LoadSpec(inputs={"s": InputSpec("string", (1,), values=[b"\xff"])})
        )


def test_http_error_names_and_rest_urls() -> None:
    assert loadgen.http_error_code(503) == "HTTP_503"
    assert loadgen.http_error_code(404) == "HTTP_404"
    assert loadgen.rest_base_url("127.0.0.1:8501") == "http://127.0.0.1:8501"
    assert loadgen.rest_base_url("http://h:1/") == "http://h:1"
    headers = loadgen.RestCaller.native_metadata((("x-request-id", "r1"), ("x-user-id", "u")))
    assert headers == {"Content-Type": "application/json", "x-request-id": "r1", "x-user-id": "u"}
    assert loadgen.GrpcCaller.native_metadata((("a", "1"),)) == (("a", "1"),)


class FakeRest:
    """aiohttp server on 127.0.0.1:0 in its own thread: records (path, headers, body) and
    answers 503 for every ``fail_every``-th request, 200 otherwise."""

    def __init__(self, fail_every: int | None = None) -> None:
        self.fail_every = fail_every
        self.seen: list[tuple[str, dict[str, str], bytes]] = []
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            self.seen.append(
                (request.path_qs, {k.lower(): v for k, v in request.headers.items()}, body)
            )
            if self.fail_every and len(self.seen) % self.fail_every == 0:
                return web.json_response({"error": "busy"}, status=503)
            return web.json_response({"outputs": [[0.5]]})

        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> FakeRest:
        self._thread.start()
        assert self._ready.wait(30), "fake REST server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.mark.parametrize("protocol", ["tfs_rest", "oip_rest"])
def test_rest_modes_send_headers_and_count_http_errors(protocol: str) -> None:
    with FakeRest(fail_every=4) as srv:
        spec = LoadSpec(
            target=f"127.0.0.1:{srv.port}",
            protocol=protocol,  # type: ignore[arg-type]
            model="m1",
            label="canary",
            concurrency=3,
            requests=40,
            duration=None,
            metadata=(("x-request-id", "fixed"), ("tenant", "t1")),
            key_header="x-user-id",
            keys=5,
        )
        result = run_load(spec)
    assert result.sent == 40 and result.ok == 30
    assert result.errors == {"HTTP_503": 10} and result.latency.count == 30
    assert result.to_dict()["protocol"] == protocol
    wire = loadgen.build_wire_request(spec)
    paths = {path for path, _, _ in srv.seen}
    assert paths == {wire.path}
    for _, headers, body in srv.seen:
        assert body == wire.body
        assert headers["content-type"] == "application/json"
        assert headers["x-request-id"] == "fixed" and headers["tenant"] == "t1"
        assert headers["x-user-id"] in {f"user-{i}" for i in range(5)}
    assert len({h["x-user-id"] for _, h, _ in srv.seen}) > 1


def test_rest_unreachable_target_raises() -> None:
    from gateway.workers import free_port

    spec = LoadSpec(
        target=f"127.0.0.1:{free_port()}",
        protocol="tfs_rest",
        requests=1,
        duration=None,
        connect_timeout=0.5,
    )
    with pytest.raises(loadgen.LoadgenError, match="could not connect"):
        run_load(spec)
