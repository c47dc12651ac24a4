"""The wrapper every unary RPC handler goes through.

Binds a request id (from `x-request-id` metadata, else generated) into the log
context and returns it in trailing metadata; maps `GatewayError` kinds to gRPC
status codes; turns anything unexpected into INTERNAL with a generic message
(logged with its traceback); records the request metrics.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc
import structlog
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError

from gateway.core.errors import GatewayError
from gateway.sinks.logging import REQUEST_ID as CURRENT_REQUEST_ID
from gateway.sinks.metrics import Metrics
from gateway.transport.status import status_code

log = structlog.get_logger("gateway.rpc")

REQUEST_ID = "x-request-id"
REPLICA = "x-gateway-replica"
RETRY_PUSHBACK = "grpc-retry-pushback-ms"
"""gRPC's retry hint (the retry design's server pushback): a shed request says when to
come back; grpc clients with a retry policy honour it."""
_Self = TypeVar("_Self", bound="HasMetrics")


class HasMetrics:
    """Servicers using `unary` expose their Metrics instance and the protocol label of
    their metrics (and may name their replica, returned as `x-gateway-replica` trailing
    metadata)."""

    metrics: Metrics
    protocol: str


Handler = Callable[[Any, Any, Any], Awaitable[Any]]
ModelOf = Callable[[Any], tuple[str, str]]
"""(model, version) a request or response message names, for the metrics labels."""


_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count()


_ID = re.compile(r"[\x21-\x7e]{1,128}")
"""A request id we echo in metadata and headers: visible ASCII, no spaces or controls
(gRPC refuses other metadata values; HTTP forbids control characters in headers)."""


def _sane_id(value: Any) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def request_id(context: Any, own: str = "") -> str:
    """The id the request names itself (`own`, e.g. a v2 request's `id`), else the caller's
    x-request-id (if it is a sane token), else a new id: a random per-process prefix and a
    counter (unique, and cheaper than a uuid4 per request)."""
    return request_id_of(context.invocation_metadata() or (), own)


def request_id_of(metadata: Iterable[tuple[str, Any]], own: str = "") -> str:
    """`request_id` from (lowercase key, value) pairs: gRPC metadata or HTTP headers."""
    if _sane_id(own):
        return own
    for key, value in metadata:
        if key == REQUEST_ID and _sane_id(value):
            return str(value)
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def current_request_id() -> str:
    """The id of the request this task is serving (bound by `unary`)."""
    return CURRENT_REQUEST_ID.get()


def _model_of(message: Any) -> tuple[str, str]:
    spec = getattr(message, "model_spec", None)
    if spec is None:
        return "", ""
    version = str(spec.version.value) if spec.HasField("version") else ""
    return spec.name, version


def unary(
    method: str,
    model_of: ModelOf = _model_of,
    id_of: Callable[[Any], str] | None = None,
) -> Callable[[Handler], Handler]:
    """Decorate an async servicer method `(self, request, context) -> response`.
    `model_of` reads the model and version labels off the request (and the response, when
    it names a model);
    `id_of` the request's own id, when its protocol has one (it wins over x-request-id)."""

    def decorate(fn: Handler) -> Handler:
        @functools.wraps(fn)
        async def wrapper(self: HasMetrics, request: Any, context: Any) -> Any:
            rid = request_id(context, id_of(request) if id_of is not None else "")
            replica = getattr(self, "replica", "")
            trailing = ((REQUEST_ID, rid), (REPLICA, replica)) if replica else ((REQUEST_ID, rid),)
            context.set_trailing_metadata(trailing)
            started = time.perf_counter()
            model, version = model_of(request)
            code = grpc.StatusCode.OK
            bound = CURRENT_REQUEST_ID.set(rid)
            try:
                response = await fn(self, request, context)
                if model:  # the answering version, when the response names one
                    answered = model_of(response)
                    model, version = answered if answered[0] else (model, version)
                return response
            except GatewayError as exc:
                code = status_code(exc.kind)
                if code is grpc.StatusCode.INTERNAL:
                    log.error("rpc_internal_error", method=method, model=model, error=exc.message)
                retry = getattr(exc, "retry_after_ms", None)
                if retry is not None:
                    trailing = (*trailing, (RETRY_PUSHBACK, str(retry)))
                await context.abort(code, exc.message, trailing_metadata=trailing)
            except (grpc.aio.AbortError, grpc.RpcError):
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("rpc_unexpected_error", method=method, model=model)
                self.metrics.on_internal_error(self.protocol, method)
                await context.abort(
                    code, f"internal error (request id {rid})", trailing_metadata=trailing
                )
            finally:
                CURRENT_REQUEST_ID.reset(bound)
                self.metrics.observe_request(
                    method, model, version, code.name, time.perf_counter() - started, self.protocol
                )

        return wrapper

    return decorate


def add_servicer(
    server: Any, service: ServiceDescriptor, servicer: Any, metrics: Metrics, protocol: str
) -> None:
    """Register `servicer`'s unary methods of `service` on a grpc server so that each
    receives the request's raw bytes and parses them here: a request that does not parse
    (random bytes, nesting past protobuf's recursion limit, invalid UTF-8 in a string
    field) gets INVALID_ARGUMENT naming the message type and the parse error, and is
    counted (`gateway_request_decode_errors_total`). Registered through the generated
    `add_*_to_server`, grpc would parse first and answer UNKNOWN ("Unexpected
    <class DecodeError>"), logging a traceback per request. Streaming methods keep grpc's
    own parsing (the gateway's services have none; health Watch and reflection do)."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        bound = getattr(servicer, method.name)
        if method.client_streaming or method.server_streaming:
            make = (
                grpc.stream_stream_rpc_method_handler
                if method.client_streaming
                else grpc.unary_stream_rpc_method_handler
            )
            handlers[method.name] = make(
                bound,
                request_deserializer=request_cls.FromString,
                response_serializer=response_cls.SerializeToString,
            )
            continue
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _parsing(bound, request_cls, method.name, metrics, protocol),
            request_deserializer=None,  # raw bytes: parsed by `_parsing`
            # the message's own serializer: a servicer may answer with a wire-compatible
            # message of another type (Classify's pre-encoded results)
            response_serializer=_serialize,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )


def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


def _parsing(
    bound: Handler2, request_cls: Any, method: str, metrics: Metrics, protocol: str
) -> Handler2:
    type_name = request_cls.DESCRIPTOR.full_name

    async def handle(raw: bytes, context: Any) -> Any:
        try:
            request = request_cls.FromString(raw)
        except (DecodeError, RecursionError, ValueError) as exc:
            rid = request_id(context)
            metrics.on_decode_error(protocol, method)
            metrics.observe_request(method, "", "", "INVALID_ARGUMENT", 0.0, protocol)
            detail = str(exc).removeprefix(f"Error parsing message with type '{type_name}': ")
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"could not parse the request as {type_name} ({len(raw)} bytes): {detail}",
                trailing_metadata=((REQUEST_ID, rid),),
            )
        return await bound(request, context)

    return handle


Handler2 = Callable[[Any, Any], Awaitable[Any]]
"""A bound unary method `(request, context) -> response`."""
