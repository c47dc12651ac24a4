"""The `redis` rollout state store against a real redis-server (tests.support.RedisServer)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.config import RolloutStoreConfig, parse_config
from gateway.routing.redis_store import RedisStateStore
from gateway.routing.rollout import RolloutState
from gateway.routing.state_store import StoreUnavailable
from gateway.routing.store import CorruptStateError
from tests.support import RedisServer, certificates
from tests.unit.routing.plans import plan

TIMEOUT = 0.5


def store_of(url: str, **cfg: Any) -> RedisStateStore:
    return RedisStateStore.from_config(
        RolloutStoreConfig(kind="redis", url=url, timeout_seconds=TIMEOUT, **cfg)
    )


def fresh(model: str = "demo") -> RolloutState:
    return RolloutState.new(model, plan())


def bump(state: RolloutState | None) -> RolloutState:
    """A counter-like change: `attempt` + 1 (a fresh state when none is stored)."""
    return fresh() if state is None else replace(state, attempt=state.attempt + 1)


def test_load_update_round_trip(redis_server: RedisServer) -> None:
    async def main() -> None:
        store = store_of(redis_server.url)
        try:
            await store.ping()
            assert await store.load("demo") is None
            stored = await store.update("demo", lambda s: fresh())
            assert stored == fresh()
            assert await store.load("demo") == stored
            assert await store.load_versioned("demo") == (stored, 1)
            bumped = await store.update("demo", bump)
            assert bumped is not None and bumped.attempt == 2
            assert await store.load_versioned("demo") == (bumped, 2)
            # another instance (another replica) sees the same
            other = store_of(redis_server.url)
            assert await other.load("demo") == bumped
            await other.close()
        finally:
            await store.close()

    asyncio.run(main())


def test_concurrent_updates_from_several_instances_lose_nothing(
    redis_server: RedisServer,
) -> None:
    async def main() -> None:
        stores = [store_of(redis_server.url) for _ in range(4)]
        try:
            await stores[0].update("demo", lambda s: fresh())

            async def increments(store: RedisStateStore) -> None:
                for _ in range(25):
                    await store.update("demo", bump)

            await asyncio.gather(*(increments(s) for s in stores))
            state, version = await stores[1].load_versioned("demo")
            assert state is not None and state.attempt == 1 + 100
            assert version == 1 + 100
        finally:
            for store in stores:
                await store.close()

    asyncio.run(main())


def test_a_change_returning_its_input_stores_nothing(redis_server: RedisServer) -> None:
    async def main() -> None:
        store = store_of(redis_server.url)
        try:
            assert await store.update("demo", lambda s: s) is None
            assert await store.update("demo", lambda s: None) is None
            assert await store.load_versioned("demo") == (None, 0)
            stored = await store.update("demo", lambda s: fresh())
            assert await store.update("demo", lambda s: s) == stored
            assert await store.update("demo", lambda s: None) == stored  # never deletes
            assert await store.update("demo", lambda s: fresh()) == stored  # equal: no write
            assert await store.load_versioned("demo") == (stored, 1)
        finally:
            await store.close()

    asyncio.run(main())


def test_lease_is_taken_renewed_and_taken_over_after_the_ttl(redis_server: RedisServer) -> None:
    ttl = 0.4

    async def main() -> None:
        a, b = store_of(redis_server.url), store_of(redis_server.url)
        loop = asyncio.get_running_loop()
        try:
            assert await a.acquire_lease("demo", "replica-a", ttl)
            assert not await b.acquire_lease("demo", "replica-b", ttl)
            assert await a.acquire_lease("demo", "replica-a", ttl)  # renew
            renewed_at = loop.time()
            assert not await b.acquire_lease("demo", "replica-b", ttl)
            assert await a.acquire_lease("other", "replica-a", ttl)  # per model
            # a stops renewing: b takes over once the TTL has run out, not before
            deadline = renewed_at + 10.0
            while not await b.acquire_lease("demo", "replica-b", ttl):
                assert loop.time() < deadline, "replica-b never took the expired lease"
                await asyncio.sleep(0.02)
            assert loop.time() - renewed_at >= ttl * 0.9
            assert not await a.acquire_lease("demo", "replica-a", ttl)
            assert await b.acquire_lease("demo", "replica-b", ttl)
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())


def test_evidence_put_replace_and_get_across_replicas(redis_server: RedisServer) -> None:
    async def main() -> None:
        r1, r2 = store_of(redis_server.url), store_of(redis_server.url)
        try:
            step = fresh().step_token
            assert await r1.evidence("demo", step) == {}
            await r1.put_evidence("demo", step, "r1", {"requests": 3, "p99": 0.5})
            await r2.put_evidence("demo", step, "r2", {"requests": 7, "p99": None})
            await r1.put_evidence("demo", step, "r1", {"requests": 5, "p99": 0.25})  # replaces
            assert await r2.evidence("demo", step) == {
                "r1": {"requests": 5, "p99": 0.25},
                "r2": {"requests": 7, "p99": None},
            }
            assert await r1.evidence("demo", "another-step") == {}
            ttl = await r1._client.ttl(f"gateway:evidence:demo:{step}")
            assert 3590 <= ttl <= 3600
        finally:
            await r1.close()
            await r2.close()

    asyncio.run(main())


@pytest.mark.parametrize("redis_server", [{"password": "s3cret-pw"}], indirect=True)
def test_password_auth(redis_server: RedisServer, tmp_path: Path, monkeypatch: Any) -> None:
    good, wrong = tmp_path / "good", tmp_path / "wrong"
    good.write_text("s3cret-pw\n")
    wrong.write_text("not-the-pw\n")
    port = redis_server.port

    async def main() -> None:
        store = store_of(redis_server.url, password_file=good)
        await store.ping()
        assert await store.update("demo", lambda s: fresh()) == fresh()
        await store.close()
        # the file wins over the URL's password
        store = store_of(f"redis://:not-the-pw@127.0.0.1:{port}/0", password_file=good)
        await store.ping()
        await store.close()
        monkeypatch.setenv("REDIS_PW", "s3cret-pw")
        store = store_of(redis_server.url, password_env="REDIS_PW")
        await store.ping()
        await store.close()

        for bad, problem in (
            (store_of(redis_server.url, password_file=wrong), "invalid username-password"),
            (store_of(f"redis://:not-the-pw@127.0.0.1:{port}/0"), "invalid username-password"),
            (store_of(redis_server.url), "no password is configured"),
        ):
            with pytest.raises(StoreUnavailable) as err:
                await bad.load("demo")
            message = str(err.value)
            assert problem in message, message
            assert f"127.0.0.1:{port}" in message
            assert "not-the-pw" not in message and "s3cret" not in message
            await bad.close()

    asyncio.run(main())
    monkeypatch.delenv("REDIS_PW")
    with pytest.raises(ValueError, match="REDIS_PW"):
        store_of(redis_server.url, password_env="REDIS_PW")


async def _every_method(store: RedisStateStore) -> list[tuple[str, float, BaseException | None]]:
    """Each StateStore method (and ping) once: (name, seconds, exception)."""
    calls: list[tuple[str, Any]] = [
        ("ping", store.ping),
        ("load", lambda: store.load("demo")),
        ("update", lambda: store.update("demo", bump)),
        ("acquire_lease", lambda: store.acquire_lease("demo", "r1", 1.0)),
        ("put_evidence", lambda: store.put_evidence("demo", "s", "r1", {"n": 1})),
        ("evidence", lambda: store.evidence("demo", "s")),
    ]
    out: list[tuple[str, float, BaseException | None]] = []
    for name, call in calls:
        started = time.monotonic()
        try:
            await call()
            error: BaseException | None = None
        except Exception as exc:
            error = exc
        out.append((name, time.monotonic() - started, error))
    return out


def _assert_all_unavailable(results: list[tuple[str, float, BaseException | None]], port: int):
    for name, seconds, error in results:
        assert isinstance(error, StoreUnavailable), (name, error)
        assert f"127.0.0.1:{port}" in str(error), (name, str(error))
        assert seconds < 2.0, (name, seconds)


def test_killed_redis_is_unavailable_fast_then_works_after_restart(
    redis_server: RedisServer,
) -> None:
    async def main() -> None:
        store = store_of(redis_server.url)
        try:
            await store.update("demo", lambda s: fresh())  # pooled connections now exist
            await store.put_evidence("demo", "s", "r1", {"n": 1})
            redis_server.kill()
            _assert_all_unavailable(await _every_method(store), redis_server.port)
            redis_server.restart()  # empty again: no persistence
            results = await _every_method(store)
            assert [(name, error) for name, _, error in results if error is not None] == []
            assert await store.load("demo") == fresh()
        finally:
            await store.close()

    asyncio.run(main())


def test_hung_redis_times_out_instead_of_hanging(redis_server: RedisServer) -> None:
    async def main() -> None:
        store = store_of(redis_server.url)
        try:
            await store.update("demo", lambda s: fresh())
            redis_server.proc.send_signal(signal.SIGSTOP)  # accepts connections, never answers
            try:
                results = await _every_method(store)
            finally:
                redis_server.proc.send_signal(signal.SIGCONT)
            _assert_all_unavailable(results, redis_server.port)
            assert all("Timeout" in str(error) for _, _, error in results), results
            assert await store.load("demo") == fresh()
        finally:
            await store.close()

    asyncio.run(main())


def test_corrupt_value_is_corrupt_state_error(redis_server: RedisServer) -> None:
    async def main() -> None:
        store = store_of(redis_server.url)
        try:
            key = store.rollout_key("demo")
            for value, reason in (
                (b"{not json", "not JSON"),
                (b"[1, 2]", "not a JSON object"),
                (b'{"schema": 1}', "version"),
                (b'{"schema": 1, "version": 3}', "rollout_id: missing"),
            ):
                await store._client.set(key, value)
                for call in (store.load("demo"), store.update("demo", bump)):
                    with pytest.raises(CorruptStateError) as err:
                        await call
                    assert key in str(err.value) and reason in str(err.value), str(err.value)
            other = {**fresh("other").to_dict(), "version": 1}
            import orjson

            await store._client.set(key, orjson.dumps(other))
            with pytest.raises(CorruptStateError, match="holds model 'other'"):
                await store.load("demo")
        finally:
            await store.close()

    asyncio.run(main())


def test_tls_with_client_certificate(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (make sysdeps installs it)")
    certs = certificates(tmp_path / "certs")
    with RedisServer(tmp_path / "redis", tls=certs) as server:
        tls = {
            "ca_file": certs["ca.pem"],
            "cert_file": certs["client.pem"],
            "key_file": certs["client.key"],
        }

        async def main() -> None:
            store = store_of(server.url, tls=tls)
            try:
                await store.ping()
                assert await store.update("demo", lambda s: fresh()) == fresh()
            finally:
                await store.close()
            no_cert = store_of(server.url, tls={"ca_file": certs["ca.pem"]})
            with pytest.raises(StoreUnavailable, match=f"rediss://127.0.0.1:{server.port}"):
                await no_cert.ping()
            await no_cert.close()

        asyncio.run(main())
    with pytest.raises(ValueError, match="rediss://"):
        store_of(server.url.replace("rediss://", "redis://"), tls=tls)


def test_config_resolves_store_files_against_the_config_directory(tmp_path: Path) -> None:
    store = {
        "kind": "redis",
        "url": "rediss://127.0.0.1:6379/0",
        "password_file": "secrets/redis.pw",
        "tls": {"ca_file": "ca.pem", "cert_file": "/abs/client.pem", "key_file": "c.key"},
    }
    config = parse_config({"rollouts": {"store": store}}, tmp_path)
    resolved = config.rollouts.store
    assert resolved.password_file == tmp_path / "secrets/redis.pw"
    assert resolved.tls is not None
    assert resolved.tls.ca_file == tmp_path / "ca.pem"
    assert resolved.tls.cert_file == Path("/abs/client.pem")
    assert resolved.tls.key_file == tmp_path / "c.key"
    assert config.rollouts.state_dir == tmp_path / "state"
