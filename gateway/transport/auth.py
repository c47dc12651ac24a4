"""Bearer-token check for the admin calls that change what the gateway serves.

Mutating calls (config reload, rollout actions, TF Serving's
HandleReloadConfigRequest) must carry ``authorization: Bearer <token>`` metadata
when a token is configured (`server.admin_token_file` or `server.admin_token_env`);
otherwise they are refused with UNAUTHENTICATED. Read-only calls never need it.
Without a configured token, mutations are open (the gateway logs a warning at start).
"""

from __future__ import annotations

import hmac
from typing import Any

from gateway.config import ServerConfig, read_secret
from gateway.core.errors import Unauthenticated

AUTHORIZATION = "authorization"


def load_token(server: ServerConfig) -> str | None:
    """The admin token named in the config (file wins over env); ConfigError when the
    named file is empty or the named environment variable is unset or empty."""
    return read_secret(
        server.admin_token_file,
        server.admin_token_env,
        "server.admin_token_file",
        "server.admin_token_env",
    )


class AdminAuth:
    """Checks a call's bearer token against the configured one (constant-time compare)."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None

    @property
    def enabled(self) -> bool:
        """Whether mutating calls need a token."""
        return self._token is not None

    def check(self, context: Any, what: str) -> None:
        """Raise `Unauthenticated` unless the call carries the token (no-op when disabled)."""
        if self._token is None:
            return
        for key, value in context.invocation_metadata() or ():
            if key == AUTHORIZATION and isinstance(value, str):
                scheme, _, given = value.partition(" ")
                if scheme.lower() == "bearer" and hmac.compare_digest(
                    given.strip().encode(), self._token
                ):
                    return
                raise Unauthenticated(f"{what}: the bearer token is not valid")
        raise Unauthenticated(
            f"{what} changes the gateway and needs 'authorization: Bearer <token>' metadata "
            "(the token of server.admin_token_file / server.admin_token_env)"
        )
