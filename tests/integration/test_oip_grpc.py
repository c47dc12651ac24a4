"""The Open Inference Protocol (KServe v2) over gRPC, through tritonclient as a Triton
user calls it, against real SavedModels: health, metadata, typed and raw tensors, BYTES,
output selection, versions and labels; answers equal TF Serving's Predict of the same
request; errors name the input; a v2 request goes through the data plane (shadows, the
divergence log) like Predict."""

from __future__ import annotations

import json
import shutil

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from gateway.samples import build_half_plus_two, make_example
from tests.support import outputs_of, predict_request, wait_compared, wait_until

X = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
EXAMPLES = np.array(
    [make_example(v).SerializeToString() for v in ([1.0, 2.0], [-0.5, 0.25], [3.0, -1.0])],
    dtype=object,
)


@pytest.fixture(scope="module")
def half_plus_two(tmp_path_factory):
    return build_half_plus_two(tmp_path_factory.mktemp("hpt") / "1")


@pytest.fixture
def served(make_repo, gateway_factory, half_plus_two):
    keras = make_repo("keras", {1: "keras_a", 2: "keras_b"})
    module = make_repo("module", {1: "module"})
    est = make_repo("est", {1: "estimator"})
    half = make_repo("half", {})
    shutil.copytree(half_plus_two, half / "1")
    gw = gateway_factory(
        {
            "models": [
                {
                    "name": "keras",
                    "base_path": str(keras),
                    "version_policy": {"all": {}},
                    "version_labels": {"stable": 1, "canary": 2},
                },
                {"name": "module", "base_path": str(module)},
                {"name": "est", "base_path": str(est)},
                {"name": "half", "base_path": str(half)},
            ]
        }
    )
    gw.client = triton.InferenceServerClient(url=f"127.0.0.1:{gw.gateway.port}")
    gw.stub = service_pb2_grpc.GRPCInferenceServiceStub(gw.channel)  # Triton's own stub
    yield gw
    gw.client.close()


def predict(gw, model, inputs, **kwargs):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    return outputs_of(stub.Predict(predict_request(model, inputs, **kwargs), timeout=10))


def infer_input(name, array, datatype):
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def fails(code, *fragments):
    """Context manager: a tritonclient call fails with `code`, its message holding every
    fragment."""

    class Check:
        def __enter__(self):
            return self

        def __exit__(self, kind, exc, tb):
            assert isinstance(exc, InferenceServerException), exc
            assert exc.status() == f"StatusCode.{code}", (exc.status(), exc.message())
            for fragment in fragments:
                assert fragment in exc.message(), (fragment, exc.message())
            return True

    return Check()


def test_health_and_metadata(served):
    client = served.client
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("keras")
    assert client.is_model_ready("keras", "1") and client.is_model_ready("keras", "canary")
    assert not client.is_model_ready("keras", "7")
    with fails("NOT_FOUND", "'nope'"):
        client.is_model_ready("nope")

    server = client.get_server_metadata()
    assert server.name == "tf-gateway" and server.version == "0.1.0"

    meta = client.get_model_metadata("keras")
    assert (meta.name, list(meta.versions), meta.platform) == (
        "keras",
        ["1", "2"],
        "tensorflow_savedmodel",
    )
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("x", "FP32", [-1, 4])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("output_0", "FP32", [-1, 3])
    ]
    est = client.get_model_metadata("est", "1", as_json=True)
    assert est["inputs"] == [{"name": "inputs", "datatype": "BYTES", "shape": ["-1"]}]
    assert sorted((t["name"], t["datatype"]) for t in est["outputs"]) == [
        ("classes", "BYTES"),
        ("scores", "FP32"),
    ]
    module = client.get_model_metadata("module")
    assert {(t.name, t.datatype) for t in module.outputs} == {("y", "FP32"), ("argmax", "INT64")}
    with fails("NOT_FOUND", "'nope'"):
        client.get_model_metadata("nope")
    with fails("NOT_FOUND", "version 7"):
        client.get_model_metadata("keras", "7")


def test_infer_fp32_equals_predict_for_versions_and_labels(served):
    client = served.client
    for version, kwargs, answered in [
        ("", {}, "2"),
        ("1", {"version": 1}, "1"),
        ("2", {"version": 2}, "2"),
        ("stable", {"label": "stable"}, "1"),
    ]:
        result = client.infer(
            "keras", [infer_input("x", X, "FP32")], model_version=version, request_id="r-1"
        )
        response = result.get_response()
        assert (response.model_name, response.model_version, response.id) == (
            "keras",
            answered,
            "r-1",
        )
        expected = predict(served, "keras", {"x": X}, **kwargs)["output_0"]
        got = result.as_numpy("output_0")
        assert got.dtype == np.float32 and got.shape == (5, 3)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
        assert len(response.raw_output_contents) == 1  # raw in, raw out

    # TF1 graph: half_plus_two's serving_default feeds the non-placeholder tensor `x`
    x = np.array([[1.0], [2.0], [5.0]], dtype=np.float32)
    y = served.client.infer("half", [infer_input("x", x, "FP32")]).as_numpy("y")
    np.testing.assert_array_equal(y, 0.5 * x + 2.0)
    np.testing.assert_array_equal(y, predict(served, "half", {"x": x})["y"])


def test_typed_contents_in_and_out(served):
    stub = served.stub
    request = service_pb2.ModelInferRequest(model_name="keras", model_version="1", id="t-1")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[5, 4])
    tensor.contents.fp32_contents.extend(X.reshape(-1).tolist())
    response, call = stub.ModelInfer.with_call(request, timeout=10)
    assert not response.raw_output_contents  # typed in, typed out
    (out,) = response.outputs
    assert (out.name, out.datatype, list(out.shape)) == ("output_0", "FP32", [5, 3])
    got = np.asarray(out.contents.fp32_contents, dtype=np.float32).reshape(5, 3)
    expected = predict(served, "keras", {"x": X}, version=1)["output_0"]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert dict(call.trailing_metadata())["x-request-id"] == "t-1"  # the request's own id

    # typed in, raw out on request
    request.parameters["binary_data_output"].bool_param = True
    response = stub.ModelInfer(request, timeout=10)
    assert response.outputs[0].contents.fp32_contents == []
    np.testing.assert_allclose(
        triton.InferResult(response).as_numpy("output_0"), expected, rtol=1e-6, atol=1e-7
    )

    # INT64 output, typed
    request = service_pb2.ModelInferRequest(model_name="module")
    request.inputs.add(name="x", datatype="FP32", shape=[5, 4]).contents.fp32_contents.extend(
        X.reshape(-1).tolist()
    )
    request.outputs.add(name="argmax")
    response = stub.ModelInfer(request, timeout=10)
    assert [(o.name, o.datatype) for o in response.outputs] == [("argmax", "INT64")]
    assert list(response.outputs[0].contents.int64_contents) == X.argmax(axis=1).tolist()


def test_bytes_inputs_and_signature_parameter(served):
    client = served.client
    result = client.infer("est", [infer_input("inputs", EXAMPLES, "BYTES")])
    expected = predict(served, "est", {"inputs": EXAMPLES})
    classes = result.as_numpy("classes")
    assert classes.dtype == object and classes.tolist() == expected["classes"].tolist()
    np.testing.assert_allclose(result.as_numpy("scores"), expected["scores"], rtol=1e-6)

    # the `predict` signature, picked with the signature_name request parameter
    result = client.infer(
        "est",
        [infer_input("examples", EXAMPLES, "BYTES")],
        outputs=[triton.InferRequestedOutput("value")],
        parameters={"signature_name": "predict"},
    )
    expected = predict(served, "est", {"examples": EXAMPLES}, signature="predict")
    assert [o.name for o in result.get_response().outputs] == ["value"]
    np.testing.assert_allclose(result.as_numpy("value"), expected["value"], rtol=1e-6)
    np.testing.assert_allclose(result.as_numpy("value")[:, 0], [3.0, -0.25, 2.0], rtol=1e-6)

    # typed BYTES contents
    request = service_pb2.ModelInferRequest(model_name="est")
    tensor = request.inputs.add(name="inputs", datatype="BYTES", shape=[3])
    tensor.contents.bytes_contents.extend(EXAMPLES.tolist())
    response = served.stub.ModelInfer(request, timeout=10)
    by_name = {o.name: o for o in response.outputs}
    assert by_name["classes"].datatype == "BYTES" and list(by_name["classes"].shape) == [3, 2]
    assert list(by_name["classes"].contents.bytes_contents) == [b"neg", b"pos"] * 3


def test_output_selection(served):
    client = served.client
    result = client.infer(
        "module",
        [infer_input("x", X, "FP32")],
        outputs=[triton.InferRequestedOutput("argmax")],
    )
    expected = predict(served, "module", {"x": X}, output_filter=["argmax"])
    assert [o.name for o in result.get_response().outputs] == ["argmax"]
    assert result.as_numpy("argmax").dtype == np.int64
    np.testing.assert_array_equal(result.as_numpy("argmax"), expected["argmax"])
    both = client.infer(
        "module",
        [infer_input("x", X, "FP32")],
        outputs=[triton.InferRequestedOutput("y"), triton.InferRequestedOutput("argmax")],
    )
    assert [o.name for o in both.get_response().outputs] == ["y", "argmax"]
    np.testing.assert_allclose(both.as_numpy("y"), predict(served, "module", {"x": X})["y"])
    with fails("INVALID_ARGUMENT", "'nope'"):
        client.infer(
            "module", [infer_input("x", X, "FP32")], outputs=[triton.InferRequestedOutput("nope")]
        )
    with fails("UNIMPLEMENTED", "classification"):
        client.infer(
            "module", [infer_input("x", X, "FP32")], outputs=[triton.InferRequestedOutput("y", 2)]
        )


def test_errors_name_the_input(served):
    client = served.client
    x = infer_input("x", X, "FP32")
    with fails("NOT_FOUND", "'nope'"):
        client.infer("nope", [x])
    with fails("NOT_FOUND", "version 7"):
        client.infer("keras", [x], model_version="7")
    with fails("INVALID_ARGUMENT", "input 'x'", "dtype"):
        client.infer("keras", [infer_input("x", X.astype(np.int32), "INT32")])
    with fails("INVALID_ARGUMENT", "input 'x'", "shape"):
        client.infer("keras", [infer_input("x", np.zeros((2, 5), np.float32), "FP32")])
    short = infer_input("x", X, "FP32").set_shape([6, 4])  # 80 bytes for 6x4 floats
    with fails("INVALID_ARGUMENT", "input 'x'", "80 bytes", "needs 96"):
        client.infer("keras", [short])
    with fails("INVALID_ARGUMENT", "missing input 'x'"):
        client.infer("keras", [infer_input("y", X, "FP32")])
    with fails("INVALID_ARGUMENT", "input 'x'", "BF16", "FP32 [-1, 4]"):
        client.infer("keras", [_bf16("x")])
    bad_bytes = triton.InferInput("inputs", [2], "BYTES")
    bad_bytes.set_data_from_numpy(EXAMPLES[:2])
    bad_bytes.set_shape([3])
    with fails("INVALID_ARGUMENT", "input 'inputs'", "2 BYTES elements", "needs 3"):
        client.infer("est", [bad_bytes])

    stub = served.stub
    cases = [
        ("shape [5, 4] needs 20 values in contents.fp32_contents, got 3", [5, 4], "FP32", 3),
        ("negative dimension", [-1, 4], "FP32", 4),
        ("unknown datatype 'FLOAT'", [1, 4], "FLOAT", 4),
        ("(contents has 20 in int_contents)", [5, 4], "FP32", None),
    ]
    for message, shape, datatype, n in cases:
        request = service_pb2.ModelInferRequest(model_name="keras")
        tensor = request.inputs.add(name="x", datatype=datatype, shape=shape)
        if n is None:
            tensor.contents.int_contents.extend(range(20))
        else:
            tensor.contents.fp32_contents.extend([0.0] * n)
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "input 'x'" in err.value.details() and message in err.value.details()
    request = service_pb2.ModelInferRequest(model_name="keras", raw_input_contents=[X.tobytes()])
    request.inputs.add(name="x", datatype="FP32", shape=[5, 4]).contents.fp32_contents.append(1)
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'x': both contents and raw_input_contents" in err.value.details()


def _bf16(name):
    """A BF16 input (raw, 2 bytes per element), which tritonclient builds from ml_dtypes."""
    tensor = triton.InferInput(name, [5, 4], "BF16")
    tensor._raw_content = b"\0" * 40
    return tensor


def test_reflection_and_metrics(served):
    refl = reflection_pb2_grpc.ServerReflectionStub(served.channel)

    def ask(**kwargs):
        return next(
            refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**kwargs)]))
        )

    names = {s.name for s in ask(list_services="").list_services_response.service}
    assert {"inference.GRPCInferenceService", "tensorflow.serving.PredictionService"} <= names
    from google.protobuf import descriptor_pb2

    for symbol, service, method in [
        ("inference.GRPCInferenceService", "GRPCInferenceService", "ModelInfer"),
        ("gateway.v1.AdminService", "AdminService", "GetStatus"),  # protobuf's default pool
    ]:
        reply = ask(file_containing_symbol=symbol)
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(b)
            for b in reply.file_descriptor_response.file_descriptor_proto
        ]
        services = {s.name: s for f in files for s in f.service}
        assert method in {m.name for m in services[service].method}

    served.client.infer("keras", [infer_input("x", X, "FP32")], model_version="1")
    served.client.is_model_ready("keras", "2")
    with fails("NOT_FOUND"):
        served.client.infer("nope", [infer_input("x", X, "FP32")])
    reg = served.gateway.metrics.registry
    labels = {
        "protocol": "oip_grpc",
        "method": "ModelInfer",
        "model": "keras",
        "version": "1",
        "code": "OK",
    }
    assert reg.get_sample_value("gateway_requests_total", labels) == 1.0
    labels = {
        "protocol": "oip_grpc",
        "method": "ModelReady",
        "model": "keras",
        "version": "2",
        "code": "OK",
    }
    assert reg.get_sample_value("gateway_requests_total", labels) == 1.0
    labels = {
        "protocol": "oip_grpc",
        "method": "ModelInfer",
        "model": "(unknown)",
        "version": "",
        "code": "NOT_FOUND",
    }
    wait_until(  # an aborted call is counted just after its status is sent
        lambda: reg.get_sample_value("gateway_requests_total", labels) == 1.0,
        10,
        "the NOT_FOUND call counted",
    )


def test_v2_requests_are_mirrored_and_logged_with_their_protocol(
    shadow_models, tmp_path, gateway_factory
):
    base = tmp_path / "repo" / "m"
    for version, src in {1: shadow_models["a"], 2: shadow_models["b"]}.items():
        shutil.copytree(src, base / str(version))
    gw = gateway_factory(
        {
            "models": [
                {
                    "name": "m",
                    "base_path": str(base),
                    "version_policy": {"all": {}},
                    "primary": 1,
                    "shadows": [{"version": 2}],
                }
            ]
        }
    )
    client = triton.InferenceServerClient(url=f"127.0.0.1:{gw.gateway.port}")
    x = shadow_models["x"][:20]
    try:
        for i in range(20):
            result = client.infer(
                "m", [infer_input("x", x[i : i + 1], "FP32")], request_id=f"v2-{i}"
            )
            assert result.get_response().model_version == "1"
    finally:
        client.close()
    wait_compared(gw, "m", 20)
    log = gw.gateway.mirror._log
    assert log is not None and log.flush(10)
    records = [
        json.loads(line)
        for line in gw.divergence_log.read_text().splitlines()
        if json.loads(line)["event"] == "divergence"
    ]
    assert len(records) == 20
    assert {r["protocol"] for r in records} == {"oip_grpc"}
    assert sorted(r["request_id"] for r in records) == sorted(f"v2-{i}" for i in range(20))
    assert {(r["primary_version"], r["shadow_version"]) for r in records} == {(1, 2)}
    first = next(r for r in records if r["request_id"] == "v2-0")
    np.testing.assert_allclose(first["features"]["x"], x[0].tolist(), rtol=1e-6)


def test_readiness_follows_loading(make_repo, models_dir, gateway_factory):
    keras = make_repo("keras", {1: "keras_a"})
    later = make_repo("later", {})
    gw = gateway_factory(
        {
            "models": [
                {"name": "keras", "base_path": str(keras)},
                {"name": "later", "base_path": str(later)},
            ]
        }
    )
    client = triton.InferenceServerClient(url=f"127.0.0.1:{gw.gateway.port}")
    try:
        assert client.is_server_live()
        assert client.is_model_ready("keras") and not client.is_model_ready("later")
        assert not client.is_server_ready()  # a configured model has no version yet
        with fails("NOT_FOUND", "later"):
            client.infer("later", [infer_input("x", X, "FP32")])
        shutil.copytree(models_dir / "keras_b", later / "4")
        wait_until(lambda: client.is_model_ready("later"), 60, "version 4 of 'later' loaded")
        assert client.is_server_ready() and client.is_model_ready("later", "4")
        assert list(client.get_model_metadata("later").versions) == ["4"]
    finally:
        client.close()


def test_bundle_versions_take_raw_features(seed_bundle, gateway_factory):
    """A version that ships preprocessing: metadata describes the raw-feature signature,
    and raw features in give Predict's answer (the version's own preprocessing applied)."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    gw = gateway_factory({"models": [{"name": "fraud", "base_path": str(seed_bundle["with"])}]})
    client = triton.InferenceServerClient(url=f"127.0.0.1:{gw.gateway.port}")
    try:
        meta = client.get_model_metadata("fraud")
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = "fraud"
        stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
        sigmap = get_model_metadata_pb2.SignatureDefMap()
        stub.GetModelMetadata(request, timeout=10).metadata["signature_def"].Unpack(sigmap)
        advertised = sigmap.signature_def["serving_default"]
        assert [t.name for t in meta.inputs] == sorted(advertised.inputs) == ["x"]
        assert {t.name for t in meta.outputs} == set(advertised.outputs)
        assert (meta.inputs[0].datatype, list(meta.inputs[0].shape)) == ("FP32", [-1, 1])
        x = seed_bundle["x"][:8]
        result = client.infer("fraud", [infer_input("x", x, "FP32")])
        (name,) = advertised.outputs
        expected = predict(gw, "fraud", {"x": x})[name]
        np.testing.assert_allclose(result.as_numpy(name), expected, rtol=1e-6, atol=1e-7)
        model = seed_bundle["model"]
        np.testing.assert_allclose(
            result.as_numpy(name),
            model.predict(np.asarray(seed_bundle["norm"](x)), verbose=0),
            rtol=1e-4,
            atol=1e-5,
        )
    finally:
        client.close()
