"""The TF Serving wire API through the stock tensorflow_serving stubs, against real SavedModels."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from gateway._proto.gateway.v1 import admin_pb2, admin_pb2_grpc
from gateway.samples import make_example
from tests.support import in_process, outputs_of, predict_request

X = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)


@pytest.fixture
def served(make_repo, gateway_factory):
    keras = make_repo("keras", {1: "keras_a", 2: "keras_b"})
    module = make_repo("module", {1: "module"})
    est = make_repo("est", {1: "estimator"})
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
            ]
        }
    )
    gw.repos = {"keras": keras, "module": module, "est": est}
    return gw


def stub(gw):
    return prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)


def test_predict_keras_matches_in_process_for_version_label_and_default(served):
    s = stub(served)
    ref1 = in_process(served.repos["keras"] / "1", "serving_default", {"x": X})
    ref2 = in_process(served.repos["keras"] / "2", "serving_default", {"x": X})
    assert not np.allclose(ref1["output_0"], ref2["output_0"])  # the versions really differ
    cases = [
        ({"version": 1}, 1, ref1),
        ({"label": "stable"}, 1, ref1),
        ({"label": "canary"}, 2, ref2),
        ({}, 2, ref2),
    ]
    for kwargs, version, ref in cases:
        resp = s.Predict(predict_request("keras", {"x": X}, **kwargs), timeout=10)
        assert resp.model_spec.name == "keras"
        assert resp.model_spec.version.value == version
        assert resp.model_spec.signature_name == "serving_default"
        np.testing.assert_allclose(
            outputs_of(resp)["output_0"], ref["output_0"], rtol=1e-5, atol=1e-6
        )


def test_predict_tf_module_all_outputs_and_output_filter(served):
    s = stub(served)
    ref = in_process(served.repos["module"] / "1", "serving_default", {"x": X})
    out = outputs_of(s.Predict(predict_request("module", {"x": X}), timeout=10))
    assert set(out) == {"y", "argmax"}
    np.testing.assert_allclose(out["y"], ref["y"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["argmax"], ref["argmax"])
    assert out["argmax"].dtype == np.int64
    filtered = outputs_of(s.Predict(predict_request("module", {"x": X}, output_filter=["argmax"])))
    assert set(filtered) == {"argmax"}


def test_predict_estimator_predict_signature_with_serialized_examples(served):
    examples = np.array(
        [make_example([1, 2]).SerializeToString(), make_example([3, -1]).SerializeToString()],
        dtype=object,
    )
    ref = in_process(served.repos["est"] / "1", "predict", {"examples": examples})
    out = outputs_of(
        stub(served).Predict(predict_request("est", {"examples": examples}, signature="predict"))
    )
    np.testing.assert_allclose(out["probabilities"], ref["probabilities"], rtol=1e-6)
    np.testing.assert_allclose(out["value"], ref["value"], rtol=1e-6)


def test_classify_and_regress_match_in_process(served):
    s = stub(served)
    rows = [[1.0, 2.0], [0.0, -1.0], [4.0, 0.5]]
    examples = np.array([make_example(r).SerializeToString() for r in rows], dtype=object)
    ref_c = in_process(served.repos["est"] / "1", "serving_default", {"inputs": examples})
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = "est"
    req.input.example_list.examples.extend(make_example(r) for r in rows)
    resp = s.Classify(req, timeout=10)
    assert resp.model_spec.version.value == 1
    assert len(resp.result.classifications) == 3
    for i, cls in enumerate(resp.result.classifications):
        assert [c.label for c in cls.classes] == ["neg", "pos"]
        np.testing.assert_allclose([c.score for c in cls.classes], ref_c["scores"][i], rtol=1e-6)

    ref_r = in_process(served.repos["est"] / "1", "regress", {"inputs": examples})
    rreq = regression_pb2.RegressionRequest()
    rreq.model_spec.name = "est"
    rreq.model_spec.signature_name = "regress"
    rreq.input.example_list.examples.extend(make_example(r) for r in rows)
    rresp = s.Regress(rreq, timeout=10)
    np.testing.assert_allclose(
        [r.value for r in rresp.result.regressions], ref_r["outputs"][:, 0], rtol=1e-6
    )

    # context features are merged into every example
    creq = regression_pb2.RegressionRequest()
    creq.model_spec.name = "est"
    creq.model_spec.signature_name = "regress"
    creq.input.example_list_with_context.context.CopyFrom(make_example([10, 20]))
    creq.input.example_list_with_context.examples.add()
    assert [r.value for r in s.Regress(creq).result.regressions] == [30.0]


def test_classify_on_predict_signature_is_invalid_argument(served):
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = "keras"
    req.input.example_list.examples.add()
    with pytest.raises(grpc.RpcError) as err:
        stub(served).Classify(req)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tensorflow/serving/classify" in err.value.details()


def test_get_model_metadata_returns_the_saved_model_signature_defs(served):
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "est"
    resp = stub(served).GetModelMetadata(req, timeout=10)
    assert resp.model_spec.version.value == 1
    sigmap = get_model_metadata_pb2.SignatureDefMap()
    assert resp.metadata["signature_def"].Unpack(sigmap)
    assert set(sigmap.signature_def) == {"serving_default", "regress", "predict"}
    assert sigmap.signature_def["serving_default"].method_name == "tensorflow/serving/classify"
    assert sigmap.signature_def["predict"].inputs["examples"].dtype == tf.string.as_datatype_enum


def test_get_model_status_and_health_and_reflection(served):
    ms = model_service_pb2_grpc.ModelServiceStub(served.channel)
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "keras"
    states = {s.version: s.state for s in ms.GetModelStatus(req).model_version_status}
    assert states == {
        1: get_model_status_pb2.ModelVersionStatus.AVAILABLE,
        2: get_model_status_pb2.ModelVersionStatus.AVAILABLE,
    }
    req.model_spec.version.value = 2
    assert [s.version for s in ms.GetModelStatus(req).model_version_status] == [2]

    health = health_pb2_grpc.HealthStub(served.channel)
    for service in ("", "keras", "module", "est"):
        assert (
            health.Check(health_pb2.HealthCheckRequest(service=service)).status
            == health_pb2.HealthCheckResponse.SERVING
        )
    with pytest.raises(grpc.RpcError) as err:
        health.Check(health_pb2.HealthCheckRequest(service="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    refl = reflection_pb2_grpc.ServerReflectionStub(served.channel)
    reply = next(
        refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    )
    names = {s.name for s in reply.list_services_response.service}
    assert {
        "tensorflow.serving.PredictionService",
        "tensorflow.serving.ModelService",
        "gateway.v1.AdminService",
        "grpc.health.v1.Health",
    } <= names
    for service in ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"):
        described = next(
            refl.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol=service)])
            )
        )
        assert described.file_descriptor_response.file_descriptor_proto, service


def test_request_id_is_returned_in_trailing_metadata(served):
    s = stub(served)
    _, call = s.Predict.with_call(
        predict_request("module", {"x": X}), metadata=[("x-request-id", "abc-123")]
    )
    assert dict(call.trailing_metadata())["x-request-id"] == "abc-123"
    _, call = s.Predict.with_call(predict_request("module", {"x": X}))
    generated = dict(call.trailing_metadata())["x-request-id"]
    assert len(generated) == 32
    with pytest.raises(grpc.RpcError) as err:
        s.Predict(predict_request("nope", {"x": X}), metadata=[("x-request-id", "err-1")])
    assert dict(err.value.trailing_metadata())["x-request-id"] == "err-1"


def test_admin_status_and_reload_and_tfs_reload(served):
    admin = admin_pb2_grpc.AdminServiceStub(served.channel)
    status = admin.GetStatus(admin_pb2.GetStatusRequest())
    by_name = {m.name: m for m in status.models}
    assert set(by_name) == {"keras", "module", "est"}
    keras = by_name["keras"]
    assert keras.serving and dict(keras.labels) == {"stable": 1, "canary": 2}
    assert [(v.version, v.state, list(v.labels)) for v in keras.versions] == [
        (1, "AVAILABLE", ["stable"]),
        (2, "AVAILABLE", ["canary"]),
    ]

    # edit the config file: drop 'est', pin keras to version 1 only
    import yaml

    cfg = yaml.safe_load(served.config_path.read_text())
    cfg["models"] = [m for m in cfg["models"] if m["name"] != "est"]
    cfg["models"][0]["version_policy"] = {"specific": [1]}
    served.config_path.write_text(yaml.safe_dump(cfg))
    changes = list(admin.ReloadConfig(admin_pb2.ReloadConfigRequest()).changes)
    assert "removed model est" in changes and "updated model keras" in changes
    served.monitor.wait_for(
        "keras", 2, {__import__("gateway.core.states", fromlist=["x"]).VersionState.END}
    )
    with pytest.raises(grpc.RpcError) as err:
        stub(served).Predict(predict_request("est", {"x": X}))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert stub(served).Predict(predict_request("keras", {"x": X})).model_spec.version.value == 1

    # TF Serving's own reload API
    ms = model_service_pb2_grpc.ModelServiceStub(served.channel)
    cfg_proto = model_server_config_pb2.ModelServerConfig()
    mc = cfg_proto.model_config_list.config.add(
        name="est2", base_path=str(served.repos["est"]), model_platform="tensorflow"
    )
    mc.model_version_policy.latest.num_versions = 1
    reply = ms.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=cfg_proto))
    assert reply.status.error_code == 0
    from gateway.core.states import VersionState

    served.monitor.wait_for("est2", 1, {VersionState.AVAILABLE})
    assert stub(served).Regress(_regress("est2")).result.regressions[0].value == 3.0
    # models not in a TF Serving reload are removed, like TF Serving does
    with pytest.raises(grpc.RpcError):
        stub(served).Predict(predict_request("keras", {"x": X}))


def _regress(model):
    req = regression_pb2.RegressionRequest()
    req.model_spec.name = model
    req.model_spec.signature_name = "regress"
    req.input.example_list.examples.extend([make_example([1, 2])])
    return req
