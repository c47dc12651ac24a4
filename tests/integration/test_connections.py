"""Connection hygiene: 200 connections that open and send nothing, finish the HTTP/2
preface and then stay silent, or cancel calls mid-way, do not slow normal requests past
2x their usual latency, and the silent ones are closed after the configured time (gRPC's
handshake timeout and max connection idle; REST's keep-alive timeout)."""

from __future__ import annotations

import selectors
import shutil
import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from gateway.workers import free_port
from tests.support import GatewayThread, outputs_of, predict_request

X = np.ones((1, 4), np.float32)
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
IDLE_SECONDS = 2.0


@pytest.fixture
def gw(models_dir, tmp_path):
    shutil.copytree(models_dir / "keras_a", tmp_path / "repo" / "m" / "1")
    cfg = {
        "server": {
            "rest_api_port": free_port(),
            "handshake_timeout_seconds": IDLE_SECONDS,
            "max_connection_idle_seconds": IDLE_SECONDS,
            "rest_keepalive_seconds": IDLE_SECONDS,
        },
        "models": [{"name": "m", "base_path": str(tmp_path / "repo" / "m")}],
    }
    with GatewayThread(cfg, tmp_path) as g:
        yield g


def median_latency(stub, n: int = 40) -> float:
    took = []
    for _ in range(n):
        started = time.perf_counter()
        assert outputs_of(stub.Predict(predict_request("m", {"x": X}), timeout=30))
        took.append(time.perf_counter() - started)
    return statistics.median(took)


def wait_closed(socks: list[socket.socket], timeout: float) -> list[socket.socket]:
    """Wait until the server has closed every socket (EOF or reset); the ones still open
    when `timeout` passes."""
    selector = selectors.DefaultSelector()
    for s in socks:
        selector.register(s, selectors.EVENT_READ)
    open_ = set(socks)
    deadline = time.monotonic() + timeout
    while open_ and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=deadline - time.monotonic()):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                data = s.recv(65536)
            except (ConnectionResetError, OSError):
                data = b""
            if not data:  # EOF: closed by the server (frames such as GOAWAY come first)
                selector.unregister(s)
                open_.discard(s)
    selector.close()
    return sorted(open_, key=id)


def test_silent_connections_are_closed_and_do_not_slow_requests(gw):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(gw.channel)
    usual = median_latency(stub)
    grpc_port, rest_port = gw.gateway.port, gw.gateway.rest_port
    socks = []
    for i in range(200):
        s = socket.create_connection(("127.0.0.1", rest_port if i % 4 == 3 else grpc_port))
        if i % 4 == 1:  # a client that finishes the HTTP/2 preface, then goes silent
            s.sendall(H2_PREFACE + EMPTY_SETTINGS)
        socks.append(s)
    # half-done calls: started and cancelled mid-way, on channels of their own
    channels = [grpc.insecure_channel(f"127.0.0.1:{grpc_port}") for _ in range(20)]
    with ThreadPoolExecutor(4) as pool:
        futures = [
            prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict.future(
                predict_request("m", {"x": X}), timeout=30
            )
            for ch in channels
            for _ in range(5)
        ]
        for f in futures[::2]:
            f.cancel()
        during = median_latency(stub)
        pool.map(lambda f: f.cancelled() or f.result(30), futures)
    assert during < 2 * usual + 0.002, (during, usual)  # +2 ms: timer noise at sub-ms
    try:
        still_open = wait_closed(socks, IDLE_SECONDS * 5 + 10)
        assert not still_open, f"{len(still_open)} of 200 silent connections still open"
    finally:
        for s in socks:
            s.close()
        for ch in channels:
            ch.close()
    # and the server still answers
    assert outputs_of(stub.Predict(predict_request("m", {"x": X}), timeout=30))
