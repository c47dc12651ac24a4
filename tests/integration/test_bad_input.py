"""Every bad-input case gets the right status and a message naming what was wrong,
and never affects other requests."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

from gateway.samples import make_example
from tests.support import predict_request

X = np.ones((2, 4), np.float32)


@pytest.fixture(scope="module")
def gw(models_dir, tmp_path_factory):
    import shutil

    from tests.support import GatewayThread

    root = tmp_path_factory.mktemp("badinput")
    for name, built in (("keras", "keras_a"), ("est", "estimator")):
        shutil.copytree(models_dir / built, root / "repo" / name / "1")
    cfg = {
        "server": {"max_message_bytes": 64 * 1024},
        "models": [
            {
                "name": "keras",
                "base_path": str(root / "repo" / "keras"),
                "version_labels": {"stable": 1},
            },
            {"name": "est", "base_path": str(root / "repo" / "est")},
        ],
    }
    with GatewayThread(cfg, root) as g:
        yield g


def call(gw, request):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(request, timeout=10)
    return err.value.code(), err.value.details()


def raw_request(**tensors: tensor_pb2.TensorProto) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "keras"
    for alias, t in tensors.items():
        req.inputs[alias].CopyFrom(t)
    return req


def shaped(dtype: int, dims: list[int], **fields) -> tensor_pb2.TensorProto:
    t = tensor_pb2.TensorProto(dtype=dtype, **fields)
    for d in dims:
        t.tensor_shape.dim.add(size=d)
    return t


CASES = [
    (
        "unknown model",
        predict_request("nope", {"x": X}),
        grpc.StatusCode.NOT_FOUND,
        ["'nope'", "served models: est, keras"],
    ),
    (
        "unknown version",
        predict_request("keras", {"x": X}, version=9),
        grpc.StatusCode.NOT_FOUND,
        ["version 9", "available versions: [1]"],
    ),
    (
        "unknown label",
        predict_request("keras", {"x": X}, label="canary"),
        grpc.StatusCode.NOT_FOUND,
        ["'canary'", "stable=1"],
    ),
    (
        "empty model name",
        predict_request("", {"x": X}),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["model_spec.name"],
    ),
    (
        "unknown signature",
        predict_request("keras", {"x": X}, signature="nope"),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["'nope'", "serving_default"],
    ),
    (
        "missing input",
        predict_request("keras", {}),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["missing input 'x'", "float32 [?, 4]"],
    ),
    (
        "extra input",
        predict_request("keras", {"x": X, "z": X}),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["unexpected input 'z'", "'x': float32 [?, 4]"],
    ),
    (
        "wrong dtype",
        predict_request("keras", {"x": X.astype(np.float64)}),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["input 'x'", "expected dtype float32", "got float64"],
    ),
    (
        "string for float",
        predict_request("keras", {"x": np.array([[b"a"] * 4])}),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["input 'x'", "expected dtype float32", "got string"],
    ),
    (
        "wrong rank",
        predict_request("keras", {"x": np.ones(4, np.float32)}),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["input 'x'", "expected shape [?, 4]", "got [4]"],
    ),
    (
        "wrong shape",
        predict_request("keras", {"x": np.ones((2, 5), np.float32)}),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["input 'x'", "expected shape [?, 4]", "got [2, 5]"],
    ),
    (
        "unknown output filter",
        predict_request("keras", {"x": X}, output_filter=["nope"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["output_filter", "'nope'", "output_0"],
    ),
    (
        "tensor_content too short",
        raw_request(x=shaped(types_pb2.DT_FLOAT, [2, 4], tensor_content=b"\0" * 12)),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["input 'x'", "12 bytes", "needs 32"],
    ),
    (
        "float_val count mismatch",
        raw_request(x=shaped(types_pb2.DT_FLOAT, [2, 4], float_val=[1.0, 2.0, 3.0])),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["input 'x'", "needs 8 values", "got 3"],
    ),
    (
        "negative dim",
        raw_request(x=shaped(types_pb2.DT_FLOAT, [-1, 4], float_val=[1.0])),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["input 'x'", "negative dimension"],
    ),
    (
        "invalid dtype",
        raw_request(x=shaped(types_pb2.DT_INVALID, [1, 4])),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["input 'x'", "dtype"],
    ),
    (
        "unsupported dtype",
        raw_request(x=shaped(types_pb2.DT_COMPLEX64, [1, 4])),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["input 'x'", "complex64"],
    ),
    (
        "unknown rank",
        raw_request(
            x=tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape={"unknown_rank": True})
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        ["input 'x'", "unknown rank"],
    ),
    (
        "over message size",
        predict_request("keras", {"x": np.ones((5000, 4), np.float32)}),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        [],
    ),
]


@pytest.mark.parametrize(
    ("name", "request_", "code", "fragments"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_input_status_and_message(gw, name, request_, code, fragments):
    got_code, details = call(gw, request_)
    assert got_code == code, details
    for fragment in fragments:
        assert fragment in details, f"{fragment!r} not in {details!r}"


def test_model_rejecting_input_at_run_time_is_invalid_argument_and_isolated(gw):
    """Garbage serialized examples fail inside TensorFlow; batched good requests still succeed."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    good = predict_request(
        "est",
        {"examples": np.array([make_example([1, 2]).SerializeToString()], dtype=object)},
        signature="predict",
    )
    bad = predict_request(
        "est", {"examples": np.array([b"\xff\x00garbage"], dtype=object)}, signature="predict"
    )

    def send(req):
        try:
            return tuple(stub.Predict(req, timeout=20).outputs["value"].float_val), None
        except grpc.RpcError as exc:
            return None, (exc.code(), exc.details())

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(send, [bad if i % 4 == 0 else good for i in range(200)]))
    for i, (ok, err) in enumerate(results):
        if i % 4 == 0:
            assert err is not None and err[0] == grpc.StatusCode.INVALID_ARGUMENT, err
            assert "model rejected input" in err[1]
        else:
            assert err is None, err
    assert len({ok for ok, _ in results if ok is not None}) == 1


def test_bad_requests_do_not_affect_concurrent_good_ones(gw):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    bad_requests = [c[1] for c in CASES]
    good = predict_request("keras", {"x": X})

    def send(i):
        req = bad_requests[i % len(bad_requests)] if i % 2 else good
        try:
            stub.Predict(req, timeout=20)
            return i % 2 == 0
        except grpc.RpcError as exc:
            return i % 2 == 1 and exc.code() != grpc.StatusCode.INTERNAL

    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(send, range(300)))


def test_metadata_bad_fields(gw):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    req = get_model_metadata_pb2.GetModelMetadataRequest()
    req.model_spec.name = "keras"
    with pytest.raises(grpc.RpcError) as err:
        stub.GetModelMetadata(req)
    assert (
        err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        and "metadata_field" in err.value.details()
    )
    req.metadata_field.append("nope")
    with pytest.raises(grpc.RpcError) as err:
        stub.GetModelMetadata(req)
    assert "'nope'" in err.value.details()
