"""Dynamic batching end to end: concurrent requests are merged, results equal unbatched calls."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tensorflow_serving.apis import prediction_service_pb2_grpc

from tests.support import in_process, outputs_of, predict_request


def test_concurrent_requests_are_merged_and_match_unbatched(make_repo, gateway_factory):
    base = make_repo("m", {1: "keras_a"})
    gw = gateway_factory(
        {
            "models": [
                {
                    "name": "m",
                    "base_path": str(base),
                    "batching": {
                        "max_batch_size": 32,
                        "batch_timeout_micros": 2000,
                        "num_batch_threads": 1,
                    },
                }
            ]
        }
    )
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    rng = np.random.default_rng(7)
    xs = [rng.normal(size=(int(rng.integers(1, 4)), 4)).astype(np.float32) for _ in range(240)]
    with ThreadPoolExecutor(24) as pool:
        outs = list(
            pool.map(
                lambda x: outputs_of(stub.Predict(predict_request("m", {"x": x}), timeout=30))[
                    "output_0"
                ],
                xs,
            )
        )
    reference = in_process(base / "1", "serving_default", {"x": np.concatenate(xs)})["output_0"]
    # Equal within float tolerance: oneDNN may pick different kernels (and summation
    # orders) for different batch sizes, so bit-for-bit equality is not guaranteed.
    np.testing.assert_allclose(np.concatenate(outs), reference, rtol=1e-5, atol=1e-6)
    reg = gw.gateway.metrics.registry
    labels = {"model": "m", "version": "1"}
    calls = reg.get_sample_value("gateway_batch_requests_count", labels)
    merged = reg.get_sample_value("gateway_batch_requests_sum", labels)
    rows = reg.get_sample_value("gateway_batch_size_sum", labels)
    assert merged == 240 and rows == sum(len(x) for x in xs)
    assert calls < merged / 2, f"{merged} requests in {calls} model calls: not merged"
    assert reg.get_sample_value("gateway_batch_size_bucket", {**labels, "le": "32.0"}) == calls


def test_request_larger_than_max_batch_size_is_served(make_repo, gateway_factory):
    base = make_repo("m", {1: "module"})
    gw = gateway_factory(
        {"models": [{"name": "m", "base_path": str(base), "batching": {"max_batch_size": 16}}]}
    )
    x = np.random.default_rng(1).normal(size=(150, 4)).astype(np.float32)
    out = outputs_of(
        prediction_service_pb2_grpc.PredictionServiceStub(gw.channel).Predict(
            predict_request("m", {"x": x})
        )
    )
    ref = in_process(base / "1", "serving_default", {"x": x})
    np.testing.assert_allclose(out["y"], ref["y"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["argmax"], ref["argmax"])
    calls = gw.gateway.metrics.registry.get_sample_value(
        "gateway_batch_size_count", {"model": "m", "version": "1"}
    )
    assert calls == 10  # 150 rows in chunks of 16


def test_batching_disabled_calls_once_per_request(make_repo, gateway_factory):
    base = make_repo("m", {1: "module"})
    gw = gateway_factory(
        {"models": [{"name": "m", "base_path": str(base), "batching": {"enabled": False}}]}
    )
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda _: stub.Predict(predict_request("m", {"x": np.ones((1, 4), np.float32)})),
                range(40),
            )
        )
    reg = gw.gateway.metrics.registry
    assert reg.get_sample_value("gateway_batch_requests_sum", {"model": "m", "version": "1"}) == 40
    assert (
        reg.get_sample_value("gateway_batch_requests_count", {"model": "m", "version": "1"}) == 40
    )
