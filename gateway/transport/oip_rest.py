"""The Open Inference Protocol (KServe v2) over HTTP/REST: the `/v2` paths, with Triton's
binary tensor data extension, on aiohttp (what `tritonclient.http` and KServe's clients
speak).

Every call is one handler: JSON (and binary tensor data) in, one data-plane call,
JSON (and binary data) out. An infer request becomes an
`InferenceRequest(protocol="oip_rest")` on the same data plane as TF Serving's Predict and
the v2 gRPC ModelInfer: routing, feature checks, batching, shadows, canary comparison and
the divergence log apply unchanged. The tensors go through the v2 codec
(`oip_tensors`: its datatype table, datatype and shape validation, raw decoding and
encoding), so both v2 transports accept and refuse the same tensors.

Binary tensor data (Triton's extension): with an `Inference-Header-Content-Length: N`
header the body is N bytes of JSON, then the binary data of the inputs that carry
`parameters.binary_data_size` (in the order of `inputs`; BYTES elements each a 4-byte
little-endian length and its bytes). Outputs are binary when asked (the request
parameter `binary_data_output`, an output's `binary_data`; the output's setting wins),
or when a BYTES output is not UTF-8 (JSON has no bytes); the response then has the same
header and layout. Extensions as in v2 gRPC: a version path segment may be a version
label; the request parameter `signature_name` picks a signature.

Errors are `{"error": "<message>"}` with the HTTP status of the error's gRPC code
(`status.http_status`); every size is checked before an array is allocated.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote

import numpy as np
import orjson
import structlog
from aiohttp import web

from gateway import __version__
from gateway.core.errors import (
    ErrorKind,
    GatewayError,
    InvalidInput,
    ResourceExhausted,
    Unimplemented,
)
from gateway.core.inference import InferenceRequest
from gateway.core.limits import DEFAULT_LIMITS, DecodeLimits
from gateway.core.model_view import VersionTable
from gateway.core.servable import Arrays, Signature
from gateway.serving.dataplane import DataPlane
from gateway.serving.runner import VersionRunner
from gateway.sinks.logging import REQUEST_ID as CURRENT_REQUEST_ID
from gateway.sinks.metrics import Metrics
from gateway.transport.calls import REPLICA, REQUEST_ID, request_id_of
from gateway.transport.oip_grpc import (
    BINARY_DATA,
    BINARY_OUTPUT,
    PLATFORM,
    SERVER_NAME,
    SIGNATURE_PARAMETER,
    _ready,
    _version_choice,
)
from gateway.transport.oip_tensors import (
    DATATYPES,
    Datatype,
    bf16_refusal,
    datatype_of,
    decode_input,
    fill_output,
    input_datatype,
    input_shape,
    output_datatype,
    shape_of,
)
from gateway.transport.status import http_status, retry_headers

log = structlog.get_logger("gateway.rest")

PROTOCOL = "oip_rest"
PREFIX = "/v2"
"""The path prefix of the protocol (every path is `/v2` or under `/v2/`)."""
HEADER_LENGTH = "Inference-Header-Content-Length"
"""Triton's binary data extension: the length of the JSON part of the body."""
BINARY_SIZE = "binary_data_size"
EXTENSIONS = ("binary_tensor_data",)
"""The protocol extensions `GET /v2` names (Triton's name for the binary data one)."""
_UNSUPPORTED_OUTPUT_PARAMETERS = ("classification", "shared_memory_region")
_JSON = "application/json"
_OCTETS = "application/octet-stream"
_EMPTY_CONTENTS = {d.field: () for d in DATATYPES.values() if d.field}
"""Every typed contents field of the codec, empty (see `_Tensor`)."""


@dataclass
class _Call:
    """What the wrapper reports for one call: request id, metrics labels."""

    request_id: str
    model: str = ""
    version: str = ""


Handler = Callable[[Any, web.BaseRequest, _Call], Awaitable[web.Response]]
Wrapped = Callable[[Any, web.BaseRequest, str, str], Awaitable[web.Response]]
_HEALTH = re.compile(r"/v2/health/(live|ready)")
_MODEL = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?(?:/(ready|infer))?")


class BodyTooLarge(ResourceExhausted):
    """A request body over the size limit (HTTP 413)."""


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        content_type=_JSON,
    )


def error_response(status: int, message: str) -> web.Response:
    """The protocol's error body, `{"error": message}`."""
    return _json({"error": message}, status)


def _headers(request: web.BaseRequest) -> dict[str, str]:
    """The request headers with lowercase keys (routing keys of a rollout)."""
    return {k.lower(): v for k, v in request.headers.items()}


def _handler(method: str) -> Callable[[Handler], Wrapped]:
    """Decorate `(self, request, call) -> response`: request id (bound in the log context,
    echoed as `x-request-id`), `GatewayError` kinds as HTTP statuses with the error body,
    anything unexpected a generic 500 (logged with its traceback), the request metrics
    (the v2 gRPC method's name, protocol `oip_rest`, the call's model and version, the
    gRPC code name)."""

    def decorate(fn: Handler) -> Wrapped:
        @functools.wraps(fn)
        async def wrapper(
            self: OipRest, request: web.BaseRequest, model: str, version: str
        ) -> web.Response:
            call = _Call(request_id_of(_headers(request).items()), model, version)
            bound = CURRENT_REQUEST_ID.set(call.request_id)
            started = time.perf_counter()
            code = "OK"
            try:
                response = await fn(self, request, call)
            except GatewayError as exc:
                code = exc.kind.status_name
                if exc.kind is ErrorKind.INTERNAL:
                    log.error("rest_internal_error", method=method, error=exc.message)
                status = 413 if isinstance(exc, BodyTooLarge) else http_status(exc.kind)
                response = error_response(status, exc.message)
                response.headers.update(retry_headers(exc))
            except Exception:
                code = "INTERNAL"
                log.exception("rest_unexpected_error", method=method, model=call.model)
                self.metrics.on_internal_error(PROTOCOL, method)
                response = error_response(500, f"internal error (request id {call.request_id})")
            finally:
                CURRENT_REQUEST_ID.reset(bound)
                self.metrics.observe_request(
                    method,
                    call.model,
                    call.version,
                    code,
                    time.perf_counter() - started,
                    PROTOCOL,
                )
            response.headers[REQUEST_ID] = call.request_id
            if self.replica:
                response.headers[REPLICA] = self.replica
            return response

        return wrapper

    return decorate


@dataclass(frozen=True)
class _Tensor:
    """An input as the codec reads it (the field names of the v2 protobuf messages)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    contents: Any = None

    def HasField(self, name: str) -> bool:  # protobuf's method name
        """Whether typed contents are given."""
        return name == "contents" and self.contents is not None


class _Contents:
    """Typed contents holding one field's values (the codec's other fields empty)."""

    def __init__(self, name: str, values: Sequence[Any]) -> None:
        self.__dict__.update(_EMPTY_CONTENTS)
        self.__dict__[name] = values


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: expected a JSON object, got {_kind(value)}")
    return value


def _show(value: Any, chars: int = 60) -> str:
    """A JSON value, shortened, for a message (a value nested too deeply for `repr`, as
    orjson reads up to 1024 levels, is named, never a RecursionError)."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:  # orjson writes at most 254 levels
        text = "<a value nested too deeply to show>"
    return text if len(text) <= chars else text[: chars - 3] + "..."


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _parameters(value: Any, where: str) -> dict[str, Any]:
    return {} if value is None else _object(value, f"{where}.parameters")


def _flag(parameters: Mapping[str, Any], key: str, where: str) -> bool | None:
    value = parameters.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise InvalidInput(f"{where}: parameter '{key}' must be a boolean, got {_kind(value)}")


def _flatten(data: Any) -> list[Any]:
    """The elements of a flat or nested (row-major) JSON array."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            out.append(value)
        else:
            stack.pop()
    return out


_JSON_KINDS: dict[str, tuple[tuple[type, ...], str]] = {
    "BOOL": ((bool,), "booleans"),
    "BYTES": ((str,), "strings"),
    "FP16": ((int, float), "numbers"),
    "FP32": ((int, float), "numbers"),
    "FP64": ((int, float), "numbers"),
}
"""The JSON element types of each datatype (integer datatypes: integers)."""


def _json_values(alias: str, datatype: Datatype, values: list[Any]) -> list[Any]:
    """Check the JSON element types of an input's data (no silent float -> int, bool ->
    number or number -> string), BYTES strings encoded UTF-8."""
    kinds, what = _JSON_KINDS.get(datatype.name, ((int,), "integers"))
    for i, value in enumerate(values):
        if type(value) not in kinds:
            raise InvalidInput(
                f"input '{alias}': {datatype.name} data must be {what}; element {i} is "
                f"{_kind(value)} ({_show(value, 40)})"
            )
    if datatype.name == "BYTES":
        return [v.encode() for v in values]
    return values


class OipRest:
    """The `/v2` handlers over the `DataPlane` and the serving table (the collaborators of
    `oip_grpc.OipServicer`)."""

    def __init__(
        self,
        plane: DataPlane,
        table: VersionTable[VersionRunner],
        metrics: Metrics,
        replica: str = "",
        max_body_bytes: int = 4 << 20,
        limits: DecodeLimits = DEFAULT_LIMITS,
    ) -> None:
        self.limits = limits
        """What a request may ask the decoders to allocate."""
        self.plane = plane
        self.table = table
        self.metrics = metrics
        self.replica = replica
        self.max_body_bytes = max_body_bytes

    def routes(self) -> list[web.RouteDef]:
        """The `/v2` paths as aiohttp routes of an `Application` (one catch-all: `handle`
        routes the protocol's paths itself)."""
        return [web.route("*", "/v2", self.handle), web.route("*", "/v2/{tail:.*}", self.handle)]

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """One request under `/v2` (aiohttp's low-level handler, or a route's): the
        protocol's paths, 404 for other paths, 405 for other HTTP methods."""
        path = request.raw_path.split("?", 1)[0]
        get = request.method in ("GET", "HEAD")
        model = version = ""
        health = _HEALTH.fullmatch(path)
        found = _MODEL.fullmatch(path) if health is None else None
        if path == "/v2":
            handler, allowed = self.server_metadata, get
        elif health is not None:
            live = health.group(1) == "live"
            handler, allowed = (self.server_live if live else self.server_ready), get
        elif found is not None:
            model, version = unquote(found.group(1)), unquote(found.group(2) or "")
            verb = found.group(3)
            if verb == "infer":
                handler, allowed = self.infer, request.method == "POST"
            else:
                handler = self.model_ready if verb == "ready" else self.model_metadata
                allowed = get
        else:
            return error_response(
                404,
                f"Not Found: {request.method} {path} (the Open Inference Protocol's paths: "
                "/v2, /v2/health/{live,ready}, /v2/models/{model}[/versions/{version}]"
                "[/ready|/infer])",
            )
        if not allowed:
            return error_response(405, f"Method Not Allowed: {request.method} {path}")
        return await handler(request, model, version)

    @_handler("ServerLive")
    async def server_live(self, request: web.BaseRequest, call: _Call) -> web.Response:
        """200 whenever the server answers."""
        return web.Response(status=200)

    @_handler("ServerReady")
    async def server_ready(self, request: web.BaseRequest, call: _Call) -> web.Response:
        """200 when every configured model's primary resolves to an available version,
        else 400 naming the models that do not."""
        waiting = [n for n, v in sorted(self.table.table.items()) if not _ready(v, None, None)]
        if waiting:
            return error_response(400, f"not ready: no available version of {', '.join(waiting)}")
        return web.Response(status=200)

    @_handler("ModelReady")
    async def model_ready(self, request: web.BaseRequest, call: _Call) -> web.Response:
        """200 when the version (or label, or the primary) would answer, else 400; 404 for
        a model that is not configured."""
        view = self.table.view(call.model)
        version, label = _version_choice(call.version)
        if not _ready(view, version, label):
            what = f"version {call.version}" if call.version else "its primary version"
            return error_response(400, f"model '{view.name}' is not ready: {what} is not available")
        return web.Response(status=200)

    @_handler("ServerMetadata")
    async def server_metadata(self, request: web.BaseRequest, call: _Call) -> web.Response:
        """Name, version and the extensions served."""
        return _json({"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS})

    @_handler("ModelMetadata")
    async def model_metadata(self, request: web.BaseRequest, call: _Call) -> web.Response:
        """As ModelMetadata over gRPC: available versions, platform, and the resolved
        version's serving_default inputs and outputs."""
        view = self.table.view(call.model)
        sig = view.resolve(*_version_choice(call.version)).loaded.signature("")
        return _json(
            {
                "name": view.name,
                "versions": [str(v) for v in sorted(view.versions)],
                "platform": PLATFORM,
                "inputs": _tensors(sig, inputs=True),
                "outputs": _tensors(sig, inputs=False),
            }
        )

    @_handler("ModelInfer")
    async def infer(self, request: web.BaseRequest, call: _Call) -> web.Response:
        """Parse (JSON header and binary data), decode, run on the data plane, encode."""
        body = await self._body(request)
        header, binary = _split(body, request.headers.get(HEADER_LENGTH))
        own = header.get("id")
        if own is not None and not isinstance(own, str):
            raise InvalidInput(f"id: expected a string, got {_kind(own)}")
        if own:  # the request's own id wins over x-request-id (when it is a sane token)
            call.request_id = request_id_of(((REQUEST_ID, call.request_id),), own)
            CURRENT_REQUEST_ID.set(call.request_id)
        parameters = _parameters(header.get("parameters"), "request")
        signature = parameters.get(SIGNATURE_PARAMETER, "")
        if not isinstance(signature, str):
            raise InvalidInput(
                f"parameters.{SIGNATURE_PARAMETER}: expected a string, got {_kind(signature)}"
            )
        binary_all = bool(_flag(parameters, BINARY_OUTPUT, "request"))
        requested = _requested_outputs(header.get("outputs"))
        version, label = _version_choice(call.version)
        inference = InferenceRequest(
            model=call.model,
            version=version,
            label=label,
            signature=signature,
            output_filter=tuple(requested),
            headers=_headers(request),
            request_id=call.request_id,
            protocol=PROTOCOL,
        )
        tensors = _inputs(header.get("inputs"))
        self._refuse_bf16(inference, tensors)
        inputs = _decode_inputs(tensors, binary, self.limits)
        result = await self.plane.infer(replace(inference, inputs=inputs))
        call.version = str(result.version)
        outputs: list[dict[str, Any]] = []
        chunks: list[bytes] = []
        for alias, array in result.outputs.items():
            wanted = requested.get(alias)
            as_binary = binary_all if wanted is None else wanted
            outputs.append(_encode_output(alias, array, as_binary, chunks))
        answer: dict[str, Any] = {"model_name": result.model, "model_version": call.version}
        if own:
            answer["id"] = own
        answer["outputs"] = outputs
        text = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
        if not chunks:
            return web.Response(body=text, content_type=_JSON)
        response = web.Response(body=b"".join([text, *chunks]), content_type=_OCTETS)
        response.headers[HEADER_LENGTH] = str(len(text))
        return response

    async def _body(self, request: web.BaseRequest) -> bytes:
        """The request body, at most `max_body_bytes` (BodyTooLarge beyond)."""
        limit = self.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise BodyTooLarge(
                f"request body too large: {request.content_length} bytes, at most {limit} "
                "bytes (server.max_message_bytes)"
            )
        body = bytearray()
        while chunk := await request.content.read(1 << 16):
            body += chunk
            if len(body) > limit:
                raise BodyTooLarge(
                    f"request body too large: more than {limit} bytes (server.max_message_bytes)"
                )
        return bytes(body)

    def _refuse_bf16(self, inference: InferenceRequest, tensors: list[dict[str, Any]]) -> None:
        """BF16 inputs are refused, naming what the answering signature takes instead."""
        names = [t["name"] for t in tensors if t.get("datatype") == "BF16"]
        if names:
            sig = self.plane.resolve(inference).loaded.signature(inference.signature)
            raise bf16_refusal(names[0], sig.inputs.get(names[0]))


def _tensors(sig: Signature, inputs: bool) -> list[dict[str, Any]]:
    specs = sig.inputs if inputs else sig.outputs
    return [
        {"name": name, "datatype": datatype_of(spec.dtype), "shape": shape_of(spec)}
        for name, spec in specs.items()
    ]


def _split(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON header (an object) and the binary data after it."""
    if header_length is None:
        text, binary = body, b""
    else:
        try:
            n = int(header_length)
        except ValueError:
            n = -1
        if not 0 <= n <= len(body):
            raise InvalidInput(
                f"{HEADER_LENGTH}: expected the JSON header's length in bytes, at most the "
                f"body's {len(body)}, got {header_length!r}"
            )
        text, binary = body[:n], body[n:]
    try:
        header = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body: invalid JSON: {exc}") from None
    return _object(header, "request body"), binary


def _requested_outputs(value: Any) -> dict[str, bool | None]:
    """Requested output names (in order) and each one's `binary_data` (None: not said)."""
    if value is None:
        return {}
    if not isinstance(value, list):
        raise InvalidInput(f"outputs: expected an array, got {_kind(value)}")
    out: dict[str, bool | None] = {}
    for i, item in enumerate(value):
        tensor = _object(item, f"outputs[{i}]")
        name = tensor.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"outputs[{i}]: expected a tensor name")
        where = f"output '{name}'"
        parameters = _parameters(tensor.get("parameters"), where)
        for key in _UNSUPPORTED_OUTPUT_PARAMETERS:
            if key in parameters:
                raise Unimplemented(f"{where}: parameter '{key}' is not supported")
        out[name] = _flag(parameters, BINARY_DATA, where)
    return out


def _inputs(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise InvalidInput(f"inputs: expected an array of tensors, got {_kind(value)}")
    tensors = []
    for i, item in enumerate(value):
        tensor = _object(item, f"inputs[{i}]")
        name = tensor.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"inputs[{i}]: expected a tensor name")
        tensors.append(tensor)
    return tensors


def _decode_inputs(
    tensors: list[dict[str, Any]], binary: bytes, limits: DecodeLimits = DEFAULT_LIMITS
) -> Arrays:
    """Every input, validated before allocating: datatype, shape and element count against
    `limits` (and the request's running total), the element count against `data` or
    `binary_data_size`, the binary sizes against the binary data."""
    out: Arrays = {}
    offset = 0
    total = 0
    for tensor in tensors:
        alias = tensor["name"]
        if alias in out:
            raise InvalidInput(f"input '{alias}' is given more than once")
        where = f"input '{alias}'"
        parameters = _parameters(tensor.get("parameters"), where)
        if any(k.startswith("shared_memory") for k in parameters):
            raise Unimplemented(
                f"{where}: shared memory is not supported; send the tensor's data in the request"
            )
        datatype = input_datatype(alias, _string(tensor.get("datatype"), f"{where}: datatype"))
        dims = tensor.get("shape")
        if not isinstance(dims, list) or any(type(d) is not int for d in dims):
            raise InvalidInput(f"{where}: shape must be an array of integers, got {_show(dims)}")
        shape, count = input_shape(alias, dims, limits)
        limits.request_elements(total + count, alias)
        total += count
        size = parameters.get(BINARY_SIZE)
        if size is not None:
            if type(size) is not int or size < 0:
                raise InvalidInput(
                    f"{where}: {BINARY_SIZE} must be an integer >= 0, got {_show(size)}"
                )
            if "data" in tensor:
                raise InvalidInput(f"{where}: both data and {BINARY_SIZE} are given; send one")
            if offset + size > len(binary):
                raise InvalidInput(
                    f"{where}: {BINARY_SIZE} {size} runs past the binary data ({len(binary)} "
                    f"bytes after the JSON header, {len(binary) - offset} left at this input)"
                )
            raw = binary[offset : offset + size]
            offset += size
            ref = _Tensor(alias, datatype.name, shape)
            out[alias] = decode_input(
                ref, raw, where=f"its binary data ({BINARY_SIZE})", limits=limits
            )
            continue
        if "data" not in tensor:
            raise InvalidInput(f"{where}: expected data, or parameters.{BINARY_SIZE}")
        values = _flatten(tensor["data"])
        if len(values) != count:
            raise InvalidInput(
                f"{where}: shape {list(shape)} needs {count} values in data, got {len(values)}"
            )
        values = _json_values(alias, datatype, values)
        if datatype.field is None:  # FP16: JSON numbers, no typed contents in the codec
            out[alias] = np.asarray(values, dtype=datatype.dtype).reshape(shape)
            continue
        contents = _Contents(datatype.field, values)
        try:
            out[alias] = decode_input(
                _Tensor(alias, datatype.name, shape, contents), None, limits=limits
            )
        except OverflowError:
            raise InvalidInput(f"{where}: a value is out of range for {datatype.name}") from None
    if offset != len(binary):
        raise InvalidInput(
            f"the body has {len(binary) - offset} bytes of binary data after the inputs' "
            f"{BINARY_SIZE} total of {offset}"
        )
    return out


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{where}: expected a string, got {_kind(value)}")
    return value


def _encode_output(alias: str, array: np.ndarray, binary: bool, chunks: list[bytes]) -> Any:
    """One output as JSON data, or (binary, or BYTES that are not UTF-8) its binary data
    appended to `chunks` and its size in `parameters.binary_data_size`."""
    datatype = output_datatype(alias, array)
    entry: dict[str, Any] = {
        "name": alias,
        "datatype": datatype.name,
        "shape": [int(d) for d in array.shape],
    }
    if not binary:
        if datatype.name == "BYTES":
            try:
                entry["data"] = [
                    v if isinstance(v, str) else bytes(v).decode()
                    for v in array.reshape(-1).tolist()
                ]
                return entry
            except UnicodeDecodeError:
                pass  # not text: binary
        else:
            entry["data"] = np.ascontiguousarray(array).reshape(-1)
            return entry
    content = fill_output(_Output(), alias, array, raw=True)
    assert content is not None
    chunks.append(content)
    entry["parameters"] = {BINARY_SIZE: len(content)}
    return entry


class _Output:
    """The fields `fill_output` writes of an output tensor (only its raw bytes are used)."""

    def __init__(self) -> None:
        self.name = ""
        self.datatype = ""
        self.shape: list[int] = []


def add_routes(
    app: web.Application,
    plane: DataPlane,
    table: VersionTable[VersionRunner],
    metrics: Metrics,
    replica: str = "",
    max_body_bytes: int = 4 << 20,
) -> OipRest:
    """Serve the `/v2` paths on `app`; returns the handlers."""
    handlers = OipRest(plane, table, metrics, replica, max_body_bytes)
    app.add_routes(handlers.routes())
    return handlers


__all__ = ["PREFIX", "PROTOCOL", "OipRest", "add_routes", "error_response"]
