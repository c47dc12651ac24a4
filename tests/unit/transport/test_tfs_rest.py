"""The REST handler over the fake runtime (numpy versions, a static table, the real data
plane and HTTP server): what the data plane is given (headers for routing keys, protocol,
version or label), the HTTP status table, the monitoring path and graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.core.errors import ErrorKind
from gateway.core.states import VersionState, VersionStatus
from gateway.serving.dataplane import DataPlane
from gateway.sinks.metrics import Metrics
from gateway.testing import StaticTable, numpy_version
from gateway.transport.status import HTTP_STATUS, STATUS, http_status
from gateway.transport.tfs_rest import RestServer, TfsRestApi, route, server_ssl_context
from tests.support import certificates


class Seen:
    """Router and response hook: remembers what the data plane was given."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.requests: list[Any] = []

    def route(self, model, headers, feature, available):
        self.headers.append(dict(headers))
        return None

    def on_response(self, answer):
        self.requests.append(answer.request)


@contextlib.contextmanager
def serving(ssl_context: ssl.SSLContext | None = None) -> Iterator[tuple[Any, ...]]:
    """A REST server over two numpy versions of `m` (x * 2, x * 3; label canary = 2) on a
    loop thread: (port, seen, metrics)."""
    table = StaticTable.of(
        numpy_version("m", 1, lambda x: {"y": x["x"] * 2.0}),
        numpy_version("m", 2, lambda x: {"y": x["x"] * 3.0}),
        primary=1,
        labels={"canary": 2},
    )
    seen = Seen()
    plane = DataPlane(table, router=seen, hooks=[seen])
    metrics = Metrics()
    for version in (1, 2):  # what the lifecycle monitor tells a gateway's metrics
        metrics.on_state(VersionStatus("m", version, VersionState.AVAILABLE))
    api = TfsRestApi(plane, table, metrics, 4096, replica="r-1", prometheus_path="/prom")
    rest = RestServer(api, "127.0.0.1", 0, ssl_context)
    port = rest.bind()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(rest.start(), loop).result(10)
    try:
        yield port, seen, metrics
    finally:
        asyncio.run_coroutine_threadsafe(rest.stop(1.0), loop).result(10)
        asyncio.run_coroutine_threadsafe(table.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def server():
    with serving() as (port, seen, metrics):
        yield http.client.HTTPConnection("127.0.0.1", port, timeout=10), seen, metrics


def call(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def test_the_data_plane_gets_headers_protocol_and_the_version_choice(server):
    conn, seen, _ = server
    status, headers, data = call(
        conn,
        "POST",
        "/v1/models/m:predict",
        b'{"instances": [[1.0], [2.0]]}',
        {"X-User-Id": "u-7", "x-request-id": "req-9"},
    )
    assert status == 200 and json.loads(data) == {"predictions": [[2.0], [4.0]]}
    assert headers["x-request-id"] == "req-9" and headers["x-gateway-replica"] == "r-1"
    assert seen.headers[-1]["x-user-id"] == "u-7"  # lowercased, as gRPC metadata
    request = seen.requests[-1]
    assert (request.protocol, request.request_id, request.version, request.label) == (
        "tfs_rest",
        "req-9",
        None,
        None,
    )
    assert request.headers["x-user-id"] == "u-7"
    status, _, data = call(
        conn, "POST", "/v1/models/m/labels/canary:predict", b'{"inputs": [[1.0]]}'
    )
    assert json.loads(data) == {"outputs": [[3.0]]}
    assert (seen.requests[-1].version, seen.requests[-1].label) == (None, "canary")
    call(conn, "POST", "/v1/models/m/versions/2:predict", b'{"inputs": [[1.0]]}')
    assert (seen.requests[-1].version, seen.requests[-1].label) == (2, None)
    # a request naming a version or label is not routed (no rollout split)
    assert len(seen.headers) == 1


def test_monitoring_path_and_unknown_paths(server):
    conn, _, metrics = server
    call(conn, "GET", "/v1/models/m")
    status, headers, data = call(conn, "GET", "/prom")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert (
        b'gateway_requests_total{code="OK",method="GetModelStatus",model="m",protocol="tfs_rest"'
        in data
    )
    status, headers, data = call(conn, "GET", "/metrics")
    assert status == 404 and "error" in json.loads(data)
    status, _, data = call(conn, "POST", "/v1/models/m:predict", b"x" * 5000)
    assert status == 413 and "at most 4096 bytes" in json.loads(data)["error"]


def test_http_status_table_is_tf_servings_for_every_code():
    assert set(HTTP_STATUS) == {code.name for code in STATUS.values()} | {
        "OK", "CANCELLED", "UNKNOWN", "DEADLINE_EXCEEDED", "ALREADY_EXISTS",
        "PERMISSION_DENIED", "ABORTED", "OUT_OF_RANGE", "DATA_LOSS",
    }  # fmt: skip
    assert {kind: http_status(kind) for kind in ErrorKind} == {
        ErrorKind.NOT_FOUND: 404,
        ErrorKind.INVALID_INPUT: 400,
        ErrorKind.FAILED_PRECONDITION: 400,
        ErrorKind.UNAVAILABLE: 503,
        ErrorKind.RESOURCE_EXHAUSTED: 429,
        ErrorKind.UNAUTHENTICATED: 401,
        ErrorKind.UNIMPLEMENTED: 501,
        ErrorKind.INTERNAL: 500,
    }


def test_routes_follow_tf_servings_regular_expressions():
    assert route("POST", "/v1/models/m/versions/3:classify").version == 3
    found = route("POST", "/V1/Models/a%2Eb/labels/can%61ry:regress")
    assert (found.model, found.label, found.verb, found.method) == (
        "a.b",
        "canary",
        "regress",
        "Regress",
    )
    assert route("GET", "/v1/models/m/labels/x/metadata").verb == "metadata"
    assert route("GET", "/v1/models/m").method == "GetModelStatus"


def test_with_server_tls_the_rest_port_is_https_and_mtls(tmp_path):
    certs = certificates(tmp_path / "certs")
    context = server_ssl_context(certs["server.pem"], certs["server.key"], certs["ca.pem"])
    with serving(context) as (port, _, _):
        client = ssl.create_default_context(cafile=str(certs["ca.pem"]))
        client.load_cert_chain(str(certs["client.pem"]), str(certs["client.key"]))
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=client)
        status, _, data = call(conn, "POST", "/v1/models/m:predict", b'{"instances": [[1.0]]}')
        assert status == 200 and json.loads(data) == {"predictions": [[2.0]]}
        # no client certificate: refused in the handshake; plaintext: no answer
        anonymous = ssl.create_default_context(cafile=str(certs["ca.pem"]))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=anonymous)
            call(conn, "GET", "/v1/models/m")
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            call(http.client.HTTPConnection("127.0.0.1", port, timeout=10), "GET", "/v1/models/m")
