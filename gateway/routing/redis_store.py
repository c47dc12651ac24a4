"""The `redis` state store: rollout state, judging leases and step evidence in a Redis
server shared by a fleet of replicas, through redis-py's asyncio client.

Keys (``P`` is ``rollouts.store.key_prefix``)::

    P:rollout:<model>            JSON: RolloutState.to_dict() plus "version" (an integer,
                                 +1 on every write)
    P:lease:<model>              the holder id, with a PX TTL (the lease's expiry)
    P:evidence:<model>:<step>    hash: replica -> JSON evidence; EXPIRE 3600 s, refreshed
                                 by every put

Atomicity: :meth:`RedisStateStore.update` is optimistic: WATCH the state key, GET,
apply ``change``, MULTI/SET/EXEC; EXEC fails (WatchError) when anyone wrote the key in
between, and the change is re-applied to the newer state (bounded tries with a small
jittered back-off, then `StoreUnavailable` "contended"). :meth:`acquire_lease` is one
Lua script (take when free, renew when held by the same holder, else refuse), so it is
atomic on the server.

Failure: every command has ``timeout_seconds`` as its socket (and connect) timeout and
is retried at most once, and only after a connection error (a pooled connection that a
restarted server dropped), never after a timeout: a dead or hung Redis makes each call
fail in about one timeout. Every redis or socket error is `StoreUnavailable` naming the
URL (never the password) and the error.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit, urlunsplit

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError, WatchError
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.config import RolloutStoreConfig, read_secret
from gateway.core.errors import ConfigError
from gateway.routing.rollout import RolloutState
from gateway.routing.state_store import Change, Evidence, StoreUnavailable
from gateway.routing.store import CorruptStateError

__all__ = ["CorruptRedisStateError", "RedisStateStore"]

EVIDENCE_TTL_SECONDS: Final = 3600
"""A step's evidence hash expires this long after its last put."""
UPDATE_TRIES: Final = 20
"""Optimistic `update` attempts (each lost to a concurrent write) before giving up."""
_MODEL_RE: Final = re.compile(r"^[A-Za-z0-9_.-]+$")

# KEYS[1] lease key; ARGV[1] holder; ARGV[2] ttl in ms. 1: held by ARGV[1] now.
_LEASE_LUA: Final = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"""


class CorruptRedisStateError(CorruptStateError):
    """A stored rollout state that cannot be read; names the key and the server."""

    def __init__(self, key: str, url: str, reason: str) -> None:
        ValueError.__init__(
            self,
            f"redis key {key} at {url}: corrupt rollout state ({reason}); "
            "fix or delete the key to continue",
        )
        self.path = Path(f"redis:{key}")
        self.reason = reason
        self.key = key


def _split_url(url: str) -> tuple[str, str, str | None, str | None]:
    """``(url without credentials, url to show in messages, username, password)``."""
    parts = urlsplit(url)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    netloc = parts.netloc.rpartition("@")[2]
    bare = urlunsplit(parts._replace(netloc=netloc))
    shown = urlunsplit(parts._replace(netloc=netloc, query="", fragment=""))
    return bare, shown, username, password


class RedisStateStore:
    """`StateStore` over a Redis server (see the module docstring)."""

    kind = "redis"

    def __init__(
        self,
        client: aioredis.Redis,
        url: str,
        key_prefix: str = "gateway",
        has_password: bool = False,
    ) -> None:
        self._client = client
        self._has_password = has_password
        self.url = url
        """The server, as shown in messages (no credentials)."""
        self.key_prefix = key_prefix
        self._lease_script = client.register_script(_LEASE_LUA)

    @classmethod
    def from_config(cls, cfg: RolloutStoreConfig) -> RedisStateStore:
        """A store for `cfg` (kind redis). Connects lazily: the first call (or
        :meth:`ping`) reaches the server. ValueError for a config that cannot work
        (no url, an unreadable password file, an unset `password_env`, TLS files
        without a ``rediss://`` url)."""
        if not cfg.url:
            raise ValueError("rollouts.store.url: required for kind redis")
        bare, shown, url_user, url_password = _split_url(cfg.url)
        try:
            named = read_secret(
                cfg.password_file,
                cfg.password_env,
                "rollouts.store.password_file",
                "rollouts.store.password_env",
            )
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        password = named if named is not None else url_password
        kwargs: dict[str, Any] = {
            "username": cfg.username or url_user,
            "password": password or None,
            "socket_timeout": cfg.timeout_seconds,
            "socket_connect_timeout": cfg.timeout_seconds,
            # one immediate retry after a connection error (a pooled connection that a
            # restarted server dropped); none after a timeout, so a call stays bounded
            "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            "retry_on_timeout": False,
            "health_check_interval": 0,
        }
        if cfg.tls is not None:
            if urlsplit(cfg.url).scheme != "rediss":
                raise ValueError("rollouts.store.tls: needs a rediss:// url")
            kwargs["ssl_ca_certs"] = str(cfg.tls.ca_file) if cfg.tls.ca_file else None
            kwargs["ssl_certfile"] = str(cfg.tls.cert_file) if cfg.tls.cert_file else None
            kwargs["ssl_keyfile"] = str(cfg.tls.key_file) if cfg.tls.key_file else None
        client = aioredis.Redis.from_url(bare, **kwargs)
        return cls(client, shown, cfg.key_prefix, has_password=bool(password))

    # ------------------------------------------------------------ keys and errors

    def _key(self, kind: str, model: str, *rest: str) -> str:
        if not _MODEL_RE.match(model) or model in (".", ".."):
            raise ValueError(f"model name {model!r} cannot be used in a redis key")
        return ":".join((self.key_prefix, kind, model, *rest))

    def rollout_key(self, model: str) -> str:
        """The key holding `model`'s state."""
        return self._key("rollout", model)

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, AuthenticationError):
            detail += (
                " (check the password of rollouts.store: password_file, password_env or the url)"
                if self._has_password
                else " (no password is configured: rollouts.store.password_file, "
                "password_env or the url)"
            )
        return StoreUnavailable(f"redis {self.url}: {type(exc).__name__}: {detail}")

    @asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        try:
            yield
        except WatchError:
            raise
        except (RedisError, OSError) as exc:  # OSError covers TimeoutError
            raise self._unavailable(exc) from exc

    def _parse(self, key: str, raw: bytes | str | None) -> tuple[RolloutState | None, int]:
        if raw is None:
            return None, 0
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise CorruptRedisStateError(key, self.url, f"not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise CorruptRedisStateError(key, self.url, "not a JSON object")
        version = data.pop("version", None)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise CorruptRedisStateError(
                key, self.url, f"version: expected an integer >= 1, got {version!r}"
            )
        try:
            state = RolloutState.from_dict(data)
        except ValueError as exc:
            raise CorruptRedisStateError(key, self.url, str(exc)) from exc
        expected = key.rsplit(":", 1)[1]
        if state.model != expected:
            raise CorruptRedisStateError(
                key, self.url, f"holds model {state.model!r}, expected {expected!r}"
            )
        return state, version

    # ------------------------------------------------------------ StateStore

    async def load(self, model: str) -> RolloutState | None:
        """The stored state, or None (CorruptStateError when unreadable)."""
        state, _ = await self.load_versioned(model)
        return state

    async def load_versioned(self, model: str) -> tuple[RolloutState | None, int]:
        """``(state, version)``; version 0 when nothing is stored."""
        key = self.rollout_key(model)
        async with self._errors():
            raw = await self._client.get(key)
        return self._parse(key, raw)

    async def update(self, model: str, change: Change) -> RolloutState | None:
        """WATCH / GET / `change` / MULTI SET EXEC, again on a conflicting write.

        ``change`` returning None, its argument, or an equal state stores nothing.
        """
        key = self.rollout_key(model)
        for attempt in range(UPDATE_TRIES):
            try:
                async with self._errors(), self._client.pipeline(transaction=True) as pipe:
                    await pipe.watch(key)
                    current, version = self._parse(key, await pipe.get(key))
                    new = change(current)
                    if new is None or new is current or new == current:
                        return current
                    if new.model != model:
                        raise ValueError(f"update of {model!r} returned a state of {new.model!r}")
                    body = orjson.dumps({**new.to_dict(), "version": version + 1})
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(key, body)
                    await pipe.execute()
                    return new
            except WatchError as exc:
                cause = exc.__cause__ or exc.__context__
                if isinstance(cause, RedisError | OSError) or "while watching" in str(exc):
                    # the connection died mid-transaction: the server, not a writer
                    raise self._unavailable(cause or exc) from exc
            # another replica wrote in between: back off a little, then re-apply
            await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
        raise StoreUnavailable(
            f"redis {self.url}: update of {key} contended: {UPDATE_TRIES} tries each "
            "lost to a concurrent write"
        )

    async def acquire_lease(self, model: str, holder: str, ttl_seconds: float) -> bool:
        """Take the lease when free, renew it when `holder` has it (one Lua script)."""
        key = self._key("lease", model)
        ttl_ms = max(1, round(ttl_seconds * 1000))
        async with self._errors():
            held = await self._lease_script(keys=[key], args=[holder, ttl_ms])
        return bool(held)

    async def put_evidence(self, model: str, step: str, replica: str, evidence: Evidence) -> None:
        """HSET the replica's field and refresh the hash's EXPIRE (one MULTI)."""
        key = self._key("evidence", model, step)
        body = orjson.dumps(dict(evidence))
        async with self._errors(), self._client.pipeline(transaction=True) as pipe:
            pipe.hset(key, replica, body)
            pipe.expire(key, EVIDENCE_TTL_SECONDS)
            await pipe.execute()

    async def evidence(self, model: str, step: str) -> dict[str, Evidence]:
        """HGETALL of the step (unparseable entries are skipped: the replica's next
        flush replaces them)."""
        key = self._key("evidence", model, step)
        async with self._errors():
            raw: dict[bytes | str, bytes | str] = await self._client.hgetall(key)
        found: dict[str, Evidence] = {}
        for field, value in raw.items():
            try:
                data = orjson.loads(value)
                name = field.decode("utf-8") if isinstance(field, bytes) else field
            except (orjson.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(data, dict):
                found[name] = data
        return found

    async def ping(self) -> None:
        """StoreUnavailable unless the server answers (and accepts the credentials)."""
        async with self._errors():
            await self._client.ping()

    async def close(self) -> None:
        """Close the client and its connection pool."""
        async with self._errors():
            await self._client.aclose()
