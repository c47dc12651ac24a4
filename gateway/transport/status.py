"""Error kinds as gRPC status codes (the names come from `gateway.core.errors`' one table)."""

from __future__ import annotations

import grpc

from gateway.core.errors import ErrorKind

STATUS: dict[ErrorKind, grpc.StatusCode] = {
    kind: getattr(grpc.StatusCode, kind.status_name) for kind in ErrorKind
}


def status_code(kind: ErrorKind) -> grpc.StatusCode:
    """gRPC status for an error kind."""
    return STATUS[kind]
