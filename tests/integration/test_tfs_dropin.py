"""TF Serving's own kind of test models, served as TF Serving serves them: TF1 graphs
(shapeless `parse_example` placeholders, session semantics) and their TF2 re-exports,
called with the stock stubs the way TF Serving's integration tests call them."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from gateway.samples import build_half_plus_two, build_half_plus_two_tf2, make_example
from tests.support import predict_request

B = {1: 2.0, 2: 3.0}  # half_plus_two and half_plus_three


@pytest.fixture(scope="session")
def hpt_repos(tmp_path_factory):
    root = tmp_path_factory.mktemp("half_plus")
    for version, b in B.items():
        build_half_plus_two(root / "tf1" / str(version), b=b)
        build_half_plus_two_tf2(root / "tf2" / str(version), b=b)
    return {"tf1": root / "tf1", "tf2": root / "tf2"}


@pytest.fixture
def gw(hpt_repos, gateway_factory):
    return gateway_factory(
        {
            "models": [
                {
                    "name": name,
                    "base_path": str(path),
                    "version_policy": {"all": {}},
                    "version_labels": {"stable": 1, "canary": 2},
                    "primary": "stable",
                }
                for name, path in hpt_repos.items()
            ]
        }
    )


def session_call(version_dir, signature: str, feeds: dict) -> dict:
    """The same SavedModel called directly with a TF1 session: the reference answers."""
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(version_dir))
        sdef = meta.signature_def[signature]
        names = sorted(sdef.outputs)
        values = sess.run(
            [sdef.outputs[k].name for k in names],
            {sdef.inputs[k].name: v for k, v in feeds.items()},
        )
    return dict(zip(names, values, strict=True))


def stubs(gw):
    return prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)


def test_tf1_predict_feeds_what_the_client_sent_and_answers_in_float_val(gw, hpt_repos):
    x = np.array([1.0, 2.0, 5.0], dtype=np.float32)  # shape [3]; the signature says [?, 1]
    response = stubs(gw).Predict(predict_request("tf1", {"x": x}), timeout=30)
    assert response.model_spec.version.value == 1
    assert list(response.outputs["y"].float_val) == [2.5, 3.0, 4.5]
    assert not response.outputs["y"].tensor_content
    reference = session_call(hpt_repos["tf1"] / "1", "serving_default", {"x": x})
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), reference["y"])


@pytest.mark.parametrize("model", ["tf1", "tf2"])
def test_predict_by_version_label_and_output_filter(gw, model):
    x = np.array([[1.0], [2.0]], dtype=np.float32)
    s = stubs(gw)
    for kwargs, version in (({}, 1), ({"version": 2}, 2), ({"label": "canary"}, 2)):
        response = s.Predict(
            predict_request(model, {"x": x}, output_filter=["y"], **kwargs), timeout=30
        )
        assert response.model_spec.version.value == version
        assert list(response.outputs) == ["y"]
        assert list(response.outputs["y"].float_val) == [0.5 + B[version], 1.0 + B[version]]


def test_tf2_reexport_refuses_a_shape_its_placeholder_refuses(gw):
    x = np.array([1.0, 2.0], dtype=np.float32)
    with pytest.raises(grpc.RpcError) as err:
        stubs(gw).Predict(predict_request("tf2", {"x": x}), timeout=30)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'x'" in err.value.details()


def _examples(request, *xs):
    for x in xs:
        request.input.example_list.examples.append(make_example([x]))
    return request


@pytest.mark.parametrize("model", ["tf1", "tf2"])
def test_classify_and_regress_on_tf1_and_tf2(gw, model):
    s = stubs(gw)
    classify = _examples(classification_pb2.ClassificationRequest(), 2.0, 4.0)
    classify.model_spec.name = model
    classify.model_spec.signature_name = "classify_x_to_y"
    result = s.Classify(classify, timeout=30).result
    assert [[c.score for c in r.classes] for r in result.classifications] == [[3.0], [4.0]]
    for signature, expected in (("regress_x_to_y", 3.0), ("regress_x_to_y2", 4.0)):
        regress = _examples(regression_pb2.RegressionRequest(), 2.0)
        regress.model_spec.name = model
        regress.model_spec.signature_name = signature
        response = s.Regress(regress, timeout=30)
        assert [r.value for r in response.result.regressions] == [expected]
        assert response.model_spec.signature_name == signature
    # x2 is absent: parse_example's default (0) is used, as in TF Serving's test
    regress = _examples(regression_pb2.RegressionRequest(), 2.0)
    regress.model_spec.name = model
    regress.model_spec.signature_name = "regress_x2_to_y3"
    assert [r.value for r in s.Regress(regress, timeout=30).result.regressions] == [3.0]


@pytest.mark.parametrize("model", ["tf1", "tf2"])
def test_multi_inference_like_tf_servings_test(gw, model):
    request = inference_pb2.MultiInferenceRequest()
    for signature in ("regress_x_to_y", "regress_x_to_y2"):
        task = request.tasks.add()
        task.model_spec.name = model
        task.model_spec.signature_name = signature
        task.method_name = "tensorflow/serving/regress"
    _examples(request, 2.0)
    response = stubs(gw).MultiInference(request, timeout=30)
    values = [r.regression_result.regressions[0].value for r in response.results]
    assert values == [3.0, 4.0]


def test_metadata_and_status(gw):
    s = stubs(gw)
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "tf1"
    response = s.GetModelMetadata(request, timeout=30)
    sigmap = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(sigmap)
    assert set(sigmap.signature_def) == {
        "serving_default",
        "classify_x_to_y",
        "regress_x_to_y",
        "regress_x_to_y2",
        "regress_x2_to_y3",
    }
    assert sigmap.signature_def["regress_x_to_y"].method_name == "tensorflow/serving/regress"
    models = model_service_pb2_grpc.ModelServiceStub(gw.channel)
    status = models.GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "tf1"}), timeout=30
    )
    assert sorted(v.version for v in status.model_version_status) == [1, 2]
    assert {v.state for v in status.model_version_status} == {
        get_model_status_pb2.ModelVersionStatus.AVAILABLE
    }


def test_status_says_which_runtime_each_version_took(gw):
    from gateway._proto.gateway.v1 import admin_pb2, admin_pb2_grpc

    admin = admin_pb2_grpc.AdminServiceStub(gw.channel)
    reply = admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=30)
    runtimes = {m.name: {v.runtime for v in m.versions} for m in reply.models}
    assert runtimes == {"tf1": {"tf1_session"}, "tf2": {"tf2_function"}}


def test_not_found_speaks_tf_servings_words_then_ours(gw):
    x = np.array([[1.0]], dtype=np.float32)
    for request, words, ours in (
        (predict_request("nope", {"x": x}), "Latest(nope)", "served models: tf1, tf2"),
        (predict_request("tf1", {"x": x}, version=9), "Specific(tf1, 9)", "available versions"),
    ):
        with pytest.raises(grpc.RpcError) as err:
            stubs(gw).Predict(request, timeout=30)
        assert err.value.code() is grpc.StatusCode.NOT_FOUND
        assert err.value.details().startswith(f"Servable not found for request: {words}: ")
        assert ours in err.value.details()
