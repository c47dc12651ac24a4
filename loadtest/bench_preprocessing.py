"""Micro-benchmark: per-request cost of preprocessing + feature checks vs the model call.

`python -m loadtest.bench_preprocessing [--seconds S]` exports a 5-feature model
with the gateway exporter (standardize, log1p+min_max, a string vocabulary, an
int vocabulary, bucketize), loads it the way the gateway does (load hook, raw
signature, checker and skew window from the default model config), and times,
for one request of 1 and of 64 rows: the feature checks, the raw-signature
validation, the preprocessing, counting the batch into the skew window, and
the model call (composed signature minus preprocessing). Medians of several
repeats, in microseconds per request; the last column is everything the
gateway adds (checks + validation + preprocessing + skew) relative to the
model call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _time(fn: Callable[[], Any], seconds: float = 0.5, repeats: int = 5) -> float:
    """Median microseconds per call."""
    fn()
    samples = []
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / repeats:
            fn()
            n += 1
        samples.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(samples)


def build(tmp: Path) -> tuple[Any, Any, Any]:
    """Export the benchmark model; return (composed signature, feature checker, skew window)."""
    import keras

    import gateway
    from gateway.bundle.attach import attach_bundle
    from gateway.config import ModelConfig
    from gateway.lifecycle.loader import load_saved_model
    from gateway.serving.checks import build_checks

    rng = np.random.default_rng(0)
    n = 2000
    train = {
        "amount": rng.lognormal(3, 1, size=(n, 1)),
        "age": rng.normal(40, 12, size=(n, 1)),
        "country": rng.choice(
            np.array([f"C{i}".encode() for i in range(40)], dtype=object), size=n
        ),
        "device": rng.integers(0, 30, size=n),
        "score": rng.uniform(0, 1, size=(n, 1)),
    }
    inputs = {
        "amount": keras.Input(shape=(1,), name="amount"),
        "age": keras.Input(shape=(1,), name="age"),
        "country": keras.Input(shape=(), dtype="int64", name="country"),
        "device": keras.Input(shape=(), dtype="int64", name="device"),
        "score": keras.Input(shape=(), dtype="int64", name="score"),
    }
    cats = [
        keras.layers.Flatten()(keras.layers.Embedding(64, 4)(keras.layers.Reshape((1,))(inputs[k])))
        for k in ("country", "device", "score")
    ]
    hidden = keras.layers.Dense(32, activation="relu")(
        keras.layers.Concatenate()([inputs["amount"], inputs["age"], *cats])
    )
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
    path = gateway.export_version(
        model,
        tmp / "m",
        1,
        preprocessing={
            "amount": ["log1p", "min_max"],
            "age": "standardize",
            "country": {"kind": "vocabulary", "num_oov_buckets": 1},
            "device": {"kind": "vocabulary", "num_oov_buckets": 1},
            "score": {"kind": "bucketize", "num_buckets": 10},
        },
        train_features=train,
        categorical=["country", "device"],
    )
    loaded = attach_bundle(load_saved_model("bench", 1, path))
    checker, skew = build_checks(ModelConfig(name="bench", base_path=tmp), loaded)
    return loaded.signatures["serving_default"], checker, skew


def run(seconds: float = 0.5) -> list[dict[str, float]]:
    """Measure and return one row per batch size."""
    with tempfile.TemporaryDirectory() as tmp:
        sig, checker, skew = build(Path(tmp))
        rng = np.random.default_rng(1)
        rows = []
        for batch in (1, 64):
            raw = {
                "amount": rng.lognormal(3, 1, size=(batch, 1)),
                "age": rng.normal(40, 12, size=(batch, 1)),
                "country": rng.choice(np.array([b"C1", b"C7", b"C30"], dtype=object), size=batch),
                "device": rng.integers(0, 30, size=batch),
                "score": rng.uniform(0, 1, size=(batch, 1)),
            }
            prepared = sig.prepare(raw)
            check_us = _time(partial(checker.check, raw), seconds)
            validate_us = _time(partial(sig.validate, raw), seconds)
            pre_us = _time(partial(sig.prepare, raw), seconds)
            skew_us = _time(partial(skew.add, raw), seconds)
            full_us = _time(partial(sig.run, raw), seconds)
            model_us = full_us - pre_us
            added_us = check_us + validate_us + pre_us + skew_us
            rows.append(
                {
                    "batch": batch,
                    "checks_us": check_us,
                    "validate_us": validate_us,
                    "preprocessing_us": pre_us,
                    "skew_us": skew_us,
                    "model_us": model_us,
                    "composed_us": full_us,
                    "added_us": added_us,
                    "overhead_vs_model": added_us / model_us,
                    "prepared_features": float(len(prepared)),
                }
            )
        return rows


def main(argv: list[str] | None = None) -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0, help="measuring time per figure")
    args = parser.parse_args(argv)
    rows = run(args.seconds)
    print(
        f"{'batch':>5} {'checks':>8} {'validate':>9} {'preproc':>8} {'skew':>7} "
        f"{'added':>8} {'model':>8} {'added/model':>12} {'added/row':>10}   (µs per request)"
    )
    for r in rows:
        print(
            f"{r['batch']:>5.0f} {r['checks_us']:>8.1f} {r['validate_us']:>9.1f} "
            f"{r['preprocessing_us']:>8.1f} {r['skew_us']:>7.1f} {r['added_us']:>8.1f} "
            f"{r['model_us']:>8.1f} {r['overhead_vs_model']:>12.2f} "
            f"{r['added_us'] / r['batch']:>10.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
