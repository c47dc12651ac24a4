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


class GatewayThread:
    """A Gateway running in its own event loop thread; use as a context manager."""

    def __init__(self, config: dict[str, Any], tmp: Path) -> None:
        config.setdefault("server", {})
        config["server"].setdefault("host", "127.0.0.1")
        config["server"].setdefault("port", 0)
        config["server"].setdefault("metrics_port", 0)
        config.setdefault("lifecycle", {}).setdefault("poll_interval_seconds", 0.1)
        config["lifecycle"].setdefault("retry_initial_seconds", 0.1)
        self.config_path = tmp / "gateway.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.gateway = Gateway(load_config(self.config_path), self.config_path)
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
