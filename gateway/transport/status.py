"""Error kinds as gRPC status codes (the names come from `gateway.core.errors`' one table),
and gRPC status codes as the HTTP statuses of TF Serving's REST API."""

from __future__ import annotations

import grpc

from gateway.core.errors import ErrorKind

STATUS: dict[ErrorKind, grpc.StatusCode] = {
    kind: getattr(grpc.StatusCode, kind.status_name) for kind in ErrorKind
}


def status_code(kind: ErrorKind) -> grpc.StatusCode:
    """gRPC status for an error kind."""
    return STATUS[kind]


HTTP_STATUS: dict[str, int] = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}
"""gRPC status name -> HTTP status, TF Serving's `ToHTTPStatusCode` (its http_server.cc)
for every code, so a REST client sees what it would see from TF Serving."""


def retry_headers(exc: Exception) -> dict[str, str]:
    """HTTP `Retry-After` (whole seconds, at least 1) for an error that carries a retry
    hint (`retry_after_ms`: a request shed by the in-flight limits), else nothing."""
    retry = getattr(exc, "retry_after_ms", None)
    if retry is None:
        return {}
    return {"Retry-After": str(max(1, -(-int(retry) // 1000)))}


def http_status(kind: ErrorKind) -> int:
    """HTTP status of an error kind on the REST API."""
    return HTTP_STATUS[kind.status_name]
