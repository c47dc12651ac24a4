"""TF Serving's REST API (`--rest_api_port`): JSON over HTTP/1.1 in, one data-plane call,
JSON out, on the gateway's own event loop.

The endpoints, paths (TF Serving's own regular expressions, case-insensitive), JSON
formats and HTTP statuses are TF Serving's (`http_rest_api_handler.cc`, `json_tensor.cc`,
`http_server.cc`):

    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]            GetModelStatus
    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   GetModelMetadata
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict    Predict (row / columnar)
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:classify   Classify (tf.Example)
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:regress    Regress (tf.Example)

Every request becomes an `InferenceRequest(protocol="tfs_rest")` on the same data plane
as gRPC (routing, feature checks, batching with gRPC requests, shadows, canary
comparison, the divergence log); status and metadata are the same protobuf responses the
gRPC ModelService / PredictionService build (`tfs_common`), printed as TF Serving prints
them. Errors are `{"error": "<message>"}` with the HTTP status of the gRPC code
(`status.HTTP_STATUS`). The `x-request-id` header is echoed (or generated) and the
replica named in `x-gateway-replica`, as gRPC's trailing metadata; request headers
(lowercase) are the request's metadata for rollout routing keys. The Prometheus metrics
are served at TF Serving's monitoring path when its monitoring config enables them.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote

import orjson
import structlog
from aiohttp import web
from google.protobuf import json_format
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from tensorflow_serving.apis import classification_pb2, get_model_metadata_pb2, regression_pb2

from gateway.core.errors import ErrorKind, GatewayError, InvalidInput, ResourceExhausted
from gateway.core.inference import Method
from gateway.core.limits import DEFAULT_LIMITS, DecodeLimits
from gateway.core.model_view import Servable
from gateway.core.protocols import ModelRegistry
from gateway.serving.dataplane import DataPlane
from gateway.sinks.logging import REQUEST_ID as CURRENT_REQUEST_ID
from gateway.sinks.metrics import Metrics
from gateway.transport import json_tensors
from gateway.transport.calls import REPLICA, REQUEST_ID, request_id_of
from gateway.transport.examples import example_batch
from gateway.transport.status import http_status, retry_headers
from gateway.transport.tfs_common import (
    SIGNATURE_DEF,
    fill_classifications,
    fill_regressions,
    model_metadata,
    model_status,
    tfs_request,
)

log = structlog.get_logger("gateway.rest")

PROTOCOL = "tfs_rest"
JSON = "application/json"

_API = re.compile(r"(?i)/v1/.*")
_PREDICTION = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
    r":(classify|regress|predict)"
)
_STATUS = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?"
)
_INT64_MAX = 2**63 - 1
_METHODS = {
    "predict": ("Predict", Method.PREDICT),
    "classify": ("Classify", Method.CLASSIFY),
    "regress": ("Regress", Method.REGRESS),
}


@dataclass(frozen=True)
class Route:
    """What a request path asks for."""

    verb: str
    """predict, classify, regress, status or metadata."""
    method: str
    """Its metrics label, e.g. "Predict" (with protocol `tfs_rest`)."""
    model: str
    version: int | None
    label: str | None


def route(http_method: str, path: str) -> Route:
    """Parse a path under /v1/ as TF Serving does: `Malformed request` (INVALID_ARGUMENT)
    when no endpoint matches the method and path."""
    malformed = InvalidInput(f"Malformed request: {http_method} {path}")
    if http_method == "POST":
        found = _PREDICTION.fullmatch(path)
        if found is None or found.group(4) not in _METHODS:  # the verb is case-sensitive
            raise malformed
        name, version, label, verb = found.groups()
        method = _METHODS[verb][0]
    elif http_method == "GET":
        found = _STATUS.fullmatch(path)
        if found is None:
            raise malformed
        name, version, label, sub = found.groups()
        if not name:
            raise InvalidInput("Missing model name in request.")
        verb = "metadata" if sub == "metadata" else "status"
        method = "GetModelMetadata" if verb == "metadata" else "GetModelStatus"
    else:
        raise malformed
    number = None
    if version is not None:
        number = int(version)
        if number > _INT64_MAX:
            raise InvalidInput(f"Failed to convert version: {version} to numeric.")
    return Route(verb, method, unquote(name), number, unquote(label) if label else None)


class BodyTooLarge(ResourceExhausted):
    """A request body over `server.max_message_bytes` (HTTP 413)."""


class TfsRestApi:
    """The request handler: routes, converts, calls the data plane or the status table."""

    def __init__(
        self,
        plane: DataPlane,
        registry: ModelRegistry[Servable],
        metrics: Metrics,
        max_body_bytes: int,
        replica: str = "",
        prometheus_path: str | None = None,
        limits: DecodeLimits = DEFAULT_LIMITS,
    ) -> None:
        self.limits = limits
        """What a request may ask the decoders to allocate."""
        self.plane = plane
        self.registry = registry
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.replica = replica
        self.prometheus_path = prometheus_path
        self.mounts: dict[str, Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]] = {}
        """Other APIs on this port, by path prefix (`/v2`: `oip_rest.OipRest.handle`)."""

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """One HTTP request (aiohttp's low-level handler)."""
        path = request.raw_path.split("?", 1)[0]
        if self.prometheus_path is not None and path == self.prometheus_path:
            body = await asyncio.to_thread(generate_latest, self.metrics.registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
        for prefix, mounted in self.mounts.items():
            if path == prefix or path.startswith(f"{prefix}/"):
                return await mounted(request)
        if _API.fullmatch(path) is None:
            return web.Response(
                status=404,
                body=json_tensors.error_body(
                    f"Not Found: {request.method} {path} (TF Serving's REST API is under /v1/)"
                ),
                content_type=JSON,
            )
        return await self._api(request, path)

    async def _api(self, request: web.BaseRequest, path: str) -> web.StreamResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        rid = request_id_of(headers.items())
        bound = CURRENT_REQUEST_ID.set(rid)
        started = time.perf_counter()
        found: Route | None = None
        model = version = ""
        code, status = "OK", 200
        retry: dict[str, str] = {}
        try:
            found = route(request.method, path)
            model = found.model
            version = str(found.version) if found.version is not None else ""
            body, answered = await self._dispatch(found, request, headers)
            version = answered or version
        except GatewayError as exc:
            code, body = exc.kind.status_name, json_tensors.error_body(exc.message)
            status = 413 if isinstance(exc, BodyTooLarge) else http_status(exc.kind)
            retry = retry_headers(exc)
            if exc.kind is ErrorKind.INTERNAL:
                log.error(
                    "rpc_internal_error", method=_label(found), model=model, error=exc.message
                )
        except Exception:
            code, status = "INTERNAL", 500
            body = json_tensors.error_body(f"internal error (request id {rid})")
            log.exception("rpc_unexpected_error", method=_label(found), model=model)
            self.metrics.on_internal_error(PROTOCOL, _label(found))
        finally:
            CURRENT_REQUEST_ID.reset(bound)
            if found is not None:
                seconds = time.perf_counter() - started
                self.metrics.observe_request(found.method, model, version, code, seconds, PROTOCOL)
        response = web.Response(status=status, body=body, content_type=JSON, headers=retry)
        response.headers[REQUEST_ID] = rid
        if self.replica:
            response.headers[REPLICA] = self.replica
        if status == 413:
            response.force_close()  # the rest of the body is not read
        return response

    async def _dispatch(
        self, found: Route, request: web.BaseRequest, headers: dict[str, str]
    ) -> tuple[bytes, str]:
        """The response body and the version that answered ("" when none did)."""
        if found.verb == "status":
            response = model_status(self.registry, found.model, found.version, found.label)
            return _dumps(_printed(response)), ""
        if found.verb == "metadata":
            inference = self._request(found, Method.PREDICT, headers, "")
            loaded = self.plane.resolve(inference).loaded
            return _metadata_json(model_metadata(loaded)), str(loaded.version)
        doc = json_tensors.loads(await self._body(request))
        signature = json_tensors.signature_name(doc)
        method = _METHODS[found.verb][1]
        if method is Method.PREDICT:
            inference = self._request(found, method, headers, signature)
            sig = self.plane.resolve(inference).loaded.signature(signature)
            inputs, fmt = json_tensors.predict_inputs(doc, sig.inputs, self.limits)
            result = await self.plane.infer(replace(inference, inputs=inputs))
            return json_tensors.predict_body(result.outputs, fmt), str(result.version)
        examples = example_batch(json_tensors.examples_input(doc, found.verb), self.limits)
        inference = self._request(found, method, headers, signature, examples=examples)
        result = await self.plane.infer(inference)
        if method is Method.CLASSIFY:
            classified = classification_pb2.ClassificationResult()
            fill_classifications(classified, result)
            return json_tensors.classify_body(classified), str(result.version)
        regressed = regression_pb2.RegressionResult()
        fill_regressions(regressed, result)
        return json_tensors.regress_body(regressed), str(result.version)

    def _request(
        self, found: Route, method: Method, headers: dict[str, str], signature: str, **fields: Any
    ) -> Any:
        return tfs_request(
            found.model,
            method,
            version=found.version,
            label=found.label,
            signature=signature,
            headers=headers,
            protocol=PROTOCOL,
            **fields,
        )

    async def _body(self, request: web.BaseRequest) -> bytes:
        """The request body, at most `max_body_bytes` (BodyTooLarge beyond)."""
        limit = self.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _too_large(request.content_length, limit)
        body = bytearray()
        while chunk := await request.content.read(1 << 16):
            body += chunk
            if len(body) > limit:
                raise _too_large(None, limit)
        return bytes(body)


def _too_large(length: int | None, limit: int) -> BodyTooLarge:
    size = f"{length} bytes" if length is not None else "more"
    return BodyTooLarge(
        f"request body too large: {size}, at most {limit} bytes (server.max_message_bytes)"
    )


def _label(found: Route | None) -> str:
    return found.method if found is not None else "rest"


def _dumps(doc: Any) -> bytes:
    return orjson.dumps(doc)


def _printed(message: Any, field_names: bool = False) -> dict[str, Any]:
    """A message as TF Serving prints it (`MessageToJsonString` with
    `always_print_primitive_fields`): every field, int64 as strings, enums by name; JSON
    names, or with `field_names` the proto field names."""
    return json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=field_names
    )


def _metadata_json(response: Any) -> bytes:
    """GetModelMetadataResponse as TF Serving's REST API prints it: the model_spec and the
    SignatureDefMap each with proto field names and every field (its `ToJsonString`), as
    `{"model_spec": ..., "metadata": {"signature_def": {"signature_def": {...}}}}`."""
    sigmap = get_model_metadata_pb2.SignatureDefMap()
    response.metadata[SIGNATURE_DEF].Unpack(sigmap)
    return _dumps(
        {
            "model_spec": _printed(response.model_spec, field_names=True),
            "metadata": {SIGNATURE_DEF: _printed(sigmap, field_names=True)},
        }
    )


class RestServer:
    """TF Serving's REST port: aiohttp's low-level HTTP/1.1 server (keep-alive) on the
    gateway's event loop. `bind()` claims the port (SO_REUSEPORT, so `--workers` share
    it), `start()` begins serving, `stop()` lets in-flight requests finish."""

    def __init__(
        self,
        api: TfsRestApi,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_seconds: float = 75.0,
    ) -> None:
        self.api = api
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.keepalive_seconds = keepalive_seconds
        """A connection silent this long (new, or between requests) is closed."""
        self._sock: socket.socket | None = None
        self._server: web.Server | None = None
        self._runner: web.ServerRunner | None = None
        self._site: web.SockSite | None = None

    def bind(self) -> int:
        """Bind the port (not yet listening); the bound port."""
        family, kind, proto, _, address = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        return self.port

    async def start(self) -> None:
        """Listen and serve."""
        if self._sock is None:
            self.bind()
        assert self._sock is not None
        self._server = web.Server(
            self.api.handle, access_log=None, keepalive_timeout=self.keepalive_seconds
        )
        self._runner = web.ServerRunner(self._server)
        await self._runner.setup()
        self._site = web.SockSite(self._runner, self._sock, ssl_context=self.ssl_context)
        await self._site.start()

    async def stop(self, grace: float) -> None:
        """Stop accepting, let in-flight requests finish (up to `grace` s), close."""
        if self._runner is not None:
            assert self._server is not None and self._site is not None
            await self._site.stop()
            await asyncio.sleep(0)  # requests accepted before the close start being handled
            await self._server.shutdown(grace)
            await self._runner.cleanup()
            self._runner = self._server = self._site = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def server_ssl_context(cert_file: Any, key_file: Any, client_ca_file: Any = None) -> ssl.SSLContext:
    """The REST port's TLS (`server.tls`, as the gRPC port's): the certificate and key,
    and with a client CA, client certificates required (mTLS)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert_file), str(key_file))
    if client_ca_file is not None:
        context.load_verify_locations(str(client_ca_file))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


__all__ = ["PROTOCOL", "RestServer", "TfsRestApi", "route", "server_ssl_context"]
