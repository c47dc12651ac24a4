"""Session fixtures: real SavedModels built once, repositories copied per test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from gateway.samples import (
    build_estimator_example_model,
    build_keras_classifier,
    build_module_regressor,
)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once: keras classifier (two seeds), tf.Module regressor, Estimator-style model."""
    root = tmp_path_factory.mktemp("built_models")
    build_keras_classifier(root / "keras_a", seed=1)
    build_keras_classifier(root / "keras_b", seed=2)
    build_module_regressor(root / "module", seed=3)
    build_estimator_example_model(root / "estimator")
    return root


@pytest.fixture
def make_repo(models_dir: Path, tmp_path: Path) -> Callable[..., Path]:
    """`make_repo(name, {1: "keras_a", 2: "keras_b"})` copies built models into a fresh base_path."""

    def make(name: str, versions: dict[int, str]) -> Path:
        base = tmp_path / "repo" / name
        base.mkdir(parents=True, exist_ok=True)
        for version, built in versions.items():
            shutil.copytree(models_dir / built, base / str(version))
        return base

    return make


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], Any]]:
    """Start real gateways on loopback ephemeral ports; stopped at teardown."""
    from tests.support import GatewayThread

    started: list[GatewayThread] = []

    def start(config: dict[str, Any], hooks: list[Any] | None = None) -> GatewayThread:
        workdir = tmp_path / f"gw{len(started)}"
        workdir.mkdir()
        gw = GatewayThread(config, workdir, hooks).__enter__()
        started.append(gw)
        return gw

    yield start
    for gw in reversed(started):
        gw.__exit__(None, None, None)


@pytest.fixture
def redis_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A real `redis-server` on a free loopback port (`tests.support.RedisServer`), killed
    at teardown. Parametrize indirectly with `{"password": ..., "tls": ...}` for those."""
    from tests.support import RedisServer

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (make sysdeps installs it)")
    options = getattr(request, "param", None) or {}
    with RedisServer(tmp_path / "redis", **options) as server:
        yield server


@pytest.fixture(scope="session")
def seed_bundle(tmp_path_factory):
    """A tiny regression model trained on Normalization-ed x in [1, 3]."""
    import keras

    import gateway

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(1.0, 3.0, size=(512, 1)).astype(np.float32)
    y = (3.0 * x - 1.0 + rng.normal(0, 0.05, size=x.shape)).astype(np.float32)
    norm = keras.layers.Normalization()
    norm.adapt(x)
    inp = keras.Input(shape=(1,), name="x")
    out = keras.layers.Dense(1)(keras.layers.Dense(8, activation="tanh")(inp))
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    model.fit(np.asarray(norm(x)), y, epochs=15, batch_size=64, verbose=0)
    training_outputs = model.predict(np.asarray(norm(x)), verbose=0)
    root = tmp_path_factory.mktemp("seed")
    with_pre = gateway.export_version(
        model,
        root / "with" / "fraud",
        1,
        preprocessing={"x": norm},
        train_features={"x": x},
        training_outputs=training_outputs,
    )
    without = gateway.export_version(
        model,
        root / "without" / "fraud",
        1,
        train_features={"x": x},
        training_outputs=training_outputs,
    )
    return {
        "model": model,
        "norm": norm,
        "x": x,
        "with": with_pre.parent,
        "without": without.parent,
    }


@pytest.fixture(scope="session")
def shadow_models(tmp_path_factory):
    """Two classifiers trained on the same data with different random initialization, and a
    model whose dropout is active at inference (non-deterministic)."""
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)
    root = tmp_path_factory.mktemp("shadow_models")

    def train(seed: int, dropout_at_inference: bool = False):
        keras.utils.set_random_seed(seed)
        inp = keras.Input(shape=(4,), name="x")
        h = keras.layers.Dense(16, activation="relu")(inp)
        if dropout_at_inference:
            h = keras.layers.Dropout(0.5)(h, training=True)
        model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))
        model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
        model.fit(x, y, epochs=8, batch_size=64, verbose=0)
        path = root / f"seed{seed}{'_dropout' if dropout_at_inference else ''}"
        model.export(str(path), verbose=False)
        return path

    return {"a": train(11), "b": train(12), "dropout": train(13, dropout_at_inference=True), "x": x}
