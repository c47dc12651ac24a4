"""The gateway's error kinds.

Domain code raises these; each kind names the gRPC status it is reported as
(one table, `_STATUS_NAMES`), and `gateway.transport.status` turns the names
into `grpc.StatusCode`s. No grpc import here on purpose.
"""

from __future__ import annotations

import enum

MAX_MESSAGE_CHARS = 1000


class ErrorKind(enum.Enum):
    """What kind of failure an error is; the transport maps each to a status code."""

    NOT_FOUND = "not_found"
    INVALID_INPUT = "invalid_input"
    FAILED_PRECONDITION = "failed_precondition"
    UNAVAILABLE = "unavailable"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    UNAUTHENTICATED = "unauthenticated"
    UNIMPLEMENTED = "unimplemented"
    INTERNAL = "internal"

    @property
    def status_name(self) -> str:
        """The gRPC status code name this kind is reported as (e.g. "INVALID_ARGUMENT")."""
        return _STATUS_NAMES[self]


_STATUS_NAMES: dict[ErrorKind, str] = {
    ErrorKind.NOT_FOUND: "NOT_FOUND",
    ErrorKind.INVALID_INPUT: "INVALID_ARGUMENT",
    ErrorKind.FAILED_PRECONDITION: "FAILED_PRECONDITION",
    ErrorKind.UNAVAILABLE: "UNAVAILABLE",
    ErrorKind.RESOURCE_EXHAUSTED: "RESOURCE_EXHAUSTED",
    ErrorKind.UNAUTHENTICATED: "UNAUTHENTICATED",
    ErrorKind.UNIMPLEMENTED: "UNIMPLEMENTED",
    ErrorKind.INTERNAL: "INTERNAL",
}
"""The one table of error kind -> gRPC status name (`transport.status` turns it into codes)."""


class GatewayError(Exception):
    """Base error: carries an `ErrorKind` and a message safe to show to clients."""

    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(self, message: str) -> None:
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 3] + "..."
        super().__init__(message)
        self.message = message


class NotFound(GatewayError):
    """A model, version, label or signature that does not exist (or is not available)."""

    kind = ErrorKind.NOT_FOUND


class InvalidInput(GatewayError):
    """The client sent something malformed or not matching the signature."""

    kind = ErrorKind.INVALID_INPUT


class FailedPrecondition(GatewayError):
    """The request is well formed but the system is not in a state to serve it."""

    kind = ErrorKind.FAILED_PRECONDITION


class Unavailable(GatewayError):
    """Transient: the server is shutting down or a version is being unloaded."""

    kind = ErrorKind.UNAVAILABLE


class ResourceExhausted(GatewayError):
    """A queue or size limit was hit."""

    kind = ErrorKind.RESOURCE_EXHAUSTED


class Unauthenticated(GatewayError):
    """A call that needs credentials came without valid ones."""

    kind = ErrorKind.UNAUTHENTICATED


class Unimplemented(GatewayError):
    """The servable does not support this kind of call (e.g. Classify on a predict-only model)."""

    kind = ErrorKind.UNIMPLEMENTED


class InternalError(GatewayError):
    """A bug or an unexpected failure on our side (never used for client mistakes)."""

    kind = ErrorKind.INTERNAL


class ConfigError(Exception):
    """The configuration is invalid; the message names the key path and what was expected."""


class VersionLoadError(Exception):
    """A model version could not be verified, loaded or warmed up; the message is the reason."""
