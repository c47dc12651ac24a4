"""Test helpers: run a real Gateway on a loopback ephemeral port in a background thread."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import grpc
import yaml

from gateway.app import Gateway
from gateway.config import load_config

POLL_INTERVAL = 0.01
"""How often `wait_until` re-checks its condition (short: the wait is on state, not time)."""


def wait_until(
    predicate: Any,
    timeout: float,
    what: str,
    seen: Any = None,
    interval: float = POLL_INTERVAL,
) -> Any:
    """Poll `predicate()` until it returns something truthy, and return that; after
    `timeout` seconds raise AssertionError naming `what` was awaited and (if given)
    `seen()`, the state observed last. The one polling loop of the tests."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            last = f"; last seen: {seen()}" if seen is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{last}")
        time.sleep(interval)  # the poll interval of the shared wait: it waits on state


async def wait_until_async(
    predicate: Any,
    timeout: float,
    what: str,
    seen: Any = None,
    interval: float = POLL_INTERVAL,
) -> Any:
    """`wait_until` for a coroutine: polls `predicate()` on the event loop's own thread
    (so it may read loop-owned state) and yields to the loop between checks."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() >= deadline:
            last = f"; last seen: {seen()}" if seen is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{last}")
        await asyncio.sleep(interval)  # the poll interval of the shared wait: it waits on state


class GatewayThread:
    """A Gateway running in its own event loop thread; use as a context manager."""

    def __init__(self, config: dict[str, Any], tmp: Path, hooks: list[Any] | None = None) -> None:
        config.setdefault("server", {})
        config["server"].setdefault("host", "127.0.0.1")
        config["server"].setdefault("port", 0)
        config["server"].setdefault("metrics_port", 0)
        config.setdefault("lifecycle", {}).setdefault("poll_interval_seconds", 0.1)
        config["lifecycle"].setdefault("retry_initial_seconds", 0.1)
        self.config_path = tmp / "gateway.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        config.setdefault("logging", {}).setdefault("divergence_log", str(tmp / "divergence.jsonl"))
        self.config_path.write_text(yaml.safe_dump(config))
        self.divergence_log = tmp / "divergence.jsonl"
        self.gateway = Gateway(load_config(self.config_path), self.config_path, hooks=hooks)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.channel: grpc.Channel | None = None

    def call(self, coro: Any, timeout: float = 120.0) -> Any:
        """Run a coroutine on the gateway's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> GatewayThread:
        self._thread.start()
        self.call(self.gateway.start())
        assert self.gateway.manager is not None
        self.call(self.gateway.manager.wait_loaded())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.gateway.port}")
        return self

    @property
    def monitor(self) -> Any:
        return self.gateway.monitor

    def __exit__(self, *exc: object) -> None:
        if self.channel is not None:
            self.channel.close()
        self.call(self.gateway.stop(grace=2.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def predict_request(
    model: str,
    inputs: dict[str, Any],
    version: int | None = None,
    label: str | None = None,
    signature: str = "",
    output_filter: list[str] | None = None,
) -> Any:
    """A stock PredictRequest with numpy inputs encoded by tf.make_tensor_proto."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    req.model_spec.signature_name = signature
    for alias, value in inputs.items():
        req.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    req.output_filter.extend(output_filter or [])
    return req


def outputs_of(response: Any) -> dict[str, Any]:
    """Decode a PredictResponse's outputs with tf.make_ndarray (what stock clients do)."""
    import tensorflow as tf

    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def in_process(version_dir: Path, signature: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Call the same SavedModel directly with TensorFlow, for reference outputs."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(version_dir)).signatures[signature]
    return {k: v.numpy() for k, v in fn(**{a: tf.constant(x) for a, x in inputs.items()}).items()}


class Traffic:
    """Background threads sending the same Predict request until stopped; records
    every outcome (answering version or error) so tests can assert none failed."""

    def __init__(self, channel: grpc.Channel, request: Any, threads: int = 4) -> None:
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        self._request = request
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self.versions: list[int] = []
        """Answering versions in completion order."""
        self.answers: list[tuple[float, float, int]] = []
        """(sent, answered, version) per successful request (time.monotonic)."""
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def _run(self) -> None:
        import time

        while not self._stop.is_set():
            try:
                sent = time.monotonic()
                resp = self._stub.Predict(self._request, timeout=30)
                answered = time.monotonic()
                with self._lock:
                    self.versions.append(resp.model_spec.version.value)
                    self.answers.append((sent, answered, resp.model_spec.version.value))
            except grpc.RpcError as exc:
                with self._lock:
                    self.errors.append(f"{exc.code().name}: {exc.details()}")

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def wait_for_requests(self, n: int, timeout: float = 60.0) -> None:
        """Block until at least `n` more requests have completed; AssertionError if they
        do not within `timeout`."""
        done = len(self.versions) + len(self.errors)
        target = done + n
        wait_until(
            lambda: len(self.versions) + len(self.errors) >= target,
            timeout,
            f"{n} more completed requests (from {done} to {target})",
            seen=lambda: (
                f"{len(self.versions) + len(self.errors) - done} more completed "
                f"({len(self.versions)} answered, {len(self.errors)} errors, "
                f"last errors {self.errors[-3:]})"
            ),
        )

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)
        stuck = sum(t.is_alive() for t in self._threads)
        if stuck and exc[0] is None:
            raise AssertionError(f"{stuck} traffic thread(s) still running 30 s after stop")


class GatewayProcess:
    """`python -m gateway serve --config FILE` as a child process (SIGKILL on exit)."""

    def __init__(self, config: dict[str, Any], path: Path, log: Path | None = None) -> None:
        self.path = path
        self.log = log or path.with_suffix(".out")
        path.write_text(yaml.safe_dump(config))
        self.port = int(config["server"]["port"])
        self.proc: Any = None

    def start(self) -> GatewayProcess:
        """Start and wait for the `listening on` line (or the process's exit)."""
        import os
        import subprocess
        import sys

        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        self._out = self.log.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(self.path)],
            stdout=subprocess.PIPE,
            stderr=self._out,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "" when it exits first
        assert line.startswith("listening"), (line, self.log.read_text()[-3000:])
        return self

    def kill(self) -> None:
        """SIGKILL: no flush, no cleanup (what a crash looks like)."""
        import signal

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
            self._out.close()

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def wait_serving(target: str, model: str, credentials: Any = None, timeout: float = 120.0) -> None:
    """Block until the gRPC health service says `model` is SERVING at `target`;
    AssertionError with the last answer (status or RPC error) otherwise."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel = (
        grpc.secure_channel(target, credentials)
        if credentials is not None
        else grpc.insecure_channel(target)
    )
    stub = health_pb2_grpc.HealthStub(channel)
    last: list[str] = ["no answer yet"]

    def serving() -> bool:
        try:
            status = stub.Check(health_pb2.HealthCheckRequest(service=model), timeout=5).status
        except grpc.RpcError as exc:
            last[0] = f"{exc.code().name}: {exc.details()}"
            return False
        last[0] = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        return status == health_pb2.HealthCheckResponse.SERVING

    try:
        wait_until(
            serving, timeout, f"{model} SERVING at {target}", seen=lambda: last[0], interval=0.1
        )
    finally:
        channel.close()


def run_cli(*args: str, timeout: float = 120.0) -> Any:
    """`python -m gateway ARGS...` as a child process; the CompletedProcess (text)."""
    import os
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=timeout,
    )


def version_hook(version: int, wrap: Any) -> Any:
    """A load hook replacing every signature's run function of `version` by `wrap(run)`
    (to make one version slow or failing at serving time, as a broken artifact would)."""
    from dataclasses import replace

    def hook(loaded: Any) -> Any:
        if loaded.version != version:
            return loaded
        sigs = {k: replace(s, run=wrap(s.run)) for k, s in loaded.signatures.items()}
        return replace(loaded, signatures=sigs)

    return hook


def slow_hook(version: int, seconds: float) -> Any:
    """`version` sleeps `seconds` before every model call."""
    import time

    def wrap(run: Any) -> Any:
        def run_slowly(inputs: Any) -> Any:
            time.sleep(seconds)  # time is the behaviour: a slow version's model call
            return run(inputs)

        return run_slowly

    return version_hook(version, wrap)


def raising_hook(version: int) -> Any:
    """Every model call of `version` raises (a server-side failure, INTERNAL)."""

    def wrap(run: Any) -> Any:
        def broken(inputs: Any) -> Any:
            raise RuntimeError("the candidate's kernel blew up")

        return broken

    return version_hook(version, wrap)


def wait_compared(
    gw: Any, model: str, n: int, lane: str | None = None, timeout: float = 60.0
) -> list[Any]:
    """Wait until every shadow lane of `model` (or just `lane`) has finished `n` mirrored
    requests (compared, failed, dropped or suppressed); returns the admin's lane summaries."""
    from gateway._proto.gateway.v1 import admin_pb2, admin_pb2_grpc

    admin = admin_pb2_grpc.AdminServiceStub(gw.channel)
    seen: list[Any] = []

    def finished() -> list[Any] | None:
        lanes = admin.GetDivergenceSummary(
            admin_pb2.GetDivergenceSummaryRequest(model=model), timeout=10
        ).lanes
        seen[:] = lanes
        done = [x for x in lanes if (lane is None and x.offered) or x.lane == lane]
        if done and all(
            x.compared + x.errors + x.timeouts + x.dropped + x.suppressed >= n for x in done
        ):
            return list(lanes)
        return None

    return wait_until(
        finished,
        timeout,
        f"{n} finished mirrored requests on {lane or 'every offered lane'} of {model}",
        seen=lambda: seen,
        interval=0.05,  # each check is an admin RPC
    )


def _openssl(*args: str, cwd: Path) -> None:
    import subprocess

    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def certificates(d: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    import shutil

    import pytest

    if shutil.which("openssl") is None:
        pytest.skip("openssl not found (make sysdeps installs it)")
    d.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=test-ca", cwd=d)  # fmt: skip
    for name, ext in (
        ("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                 "-extfile", f"{name}.ext", cwd=d)  # fmt: skip
    return {n: d / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


class RedisServer:
    """A throwaway `redis-server` on a free loopback port (no persistence), in `directory`.

    Optional `password` (`--requirepass`) and `tls` (`certificates()`: the server then
    listens with TLS only, and `url` is `rediss://`). `kill()` is SIGKILL; `restart()`
    starts it again on the same port. Always killed at exit.
    """

    def __init__(
        self, directory: Path, password: str | None = None, tls: dict[str, Path] | None = None
    ) -> None:
        from gateway.workers import free_port

        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.password = password
        self.tls = tls
        self.port = free_port()
        self.log = directory / "redis.log"
        self.proc: Any = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def _args(self) -> list[str]:
        args = ["redis-server", "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]
        args += ["--dir", str(self.directory), "--logfile", str(self.log)]
        if self.tls is None:
            args += ["--port", str(self.port)]
        else:
            args += ["--port", "0", "--tls-port", str(self.port)]
            args += ["--tls-cert-file", str(self.tls["server.pem"])]
            args += ["--tls-key-file", str(self.tls["server.key"])]
            args += ["--tls-ca-cert-file", str(self.tls["ca.pem"])]
        if self.password is not None:
            args += ["--requirepass", self.password]
        return args

    def _answers(self) -> bool:
        import redis

        if self.proc.poll() is not None:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise AssertionError(f"redis-server exited with {self.proc.returncode}: {log}")
        tls: dict[str, Any] = {}
        if self.tls is not None:
            tls = {
                "ssl": True,
                "ssl_ca_certs": str(self.tls["ca.pem"]),
                "ssl_certfile": str(self.tls["client.pem"]),
                "ssl_keyfile": str(self.tls["client.key"]),
            }
        client = redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=0.5,
            socket_connect_timeout=0.5, **tls,
        )  # fmt: skip
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def start(self) -> RedisServer:
        """Start and wait until it answers PING (AssertionError after 10 s, with its log)."""
        import subprocess

        self.proc = subprocess.Popen(
            self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        wait_until(
            self._answers,
            10.0,
            f"redis-server on port {self.port} to answer PING",
            seen=lambda: self.log.read_text()[-2000:] if self.log.exists() else "(no log)",
            interval=0.05,
        )
        return self

    def kill(self) -> None:
        """SIGKILL (what a crash looks like)."""
        import signal

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def restart(self) -> RedisServer:
        """Kill (if running) and start again on the same port (empty: no persistence)."""
        self.kill()
        return self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


NGINX_CONF = """
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream gateways {{
{servers}
        keepalive 8;
    }}
    server {{
        listen 127.0.0.1:{port} http2;
        location / {{
            grpc_pass grpc://gateways;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    """nginx's path; skips the test (naming `make sysdeps`) when it is not installed."""
    import shutil

    import pytest

    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found is None:
        pytest.skip("nginx not found (make sysdeps installs it)")
    return found


def nginx_conf(directory: Path, ports: list[int], listen: int) -> Path:
    """An nginx config balancing gRPC (`grpc_pass`, round robin) over the gateways on
    `ports`, listening on `listen`; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in ports)
    path = directory / "nginx.conf"
    path.write_text(NGINX_CONF.format(d=directory, servers=servers, port=listen))
    return path
