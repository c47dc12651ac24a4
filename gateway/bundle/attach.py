"""Load hooks that attach a version's bundle: verify, compose, self test.

`verify_bundle` runs before TensorFlow reads anything (manifest check).
`attach_bundle` runs after the SavedModel is loaded: it reads the training
preprocessing, statistics and golden records, replaces each model signature
whose inputs the preprocessing produces with a *composed* signature taking raw
features (raw -> preprocessing -> graph transform -> dtype/shape conform ->
model), and runs the self test. Because the composed signature is an ordinary
`Signature`, batching, warmup and metadata treat it like any other: the
preprocessing runs on whole batches, on the model-call threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import structlog

from gateway._proto.gateway.v1 import bundle_pb2, preprocessing_pb2, statistics_pb2
from gateway.analysis.statistics import FeatureStatistics
from gateway.bundle.format import (
    GOLDEN,
    MANIFEST,
    PREPROCESSING,
    STATISTICS,
    TRANSFORM,
    tensors_from_proto,
    verify_manifest,
)
from gateway.bundle.preprocessing_codec import preprocessing_from_proto
from gateway.bundle.statistics_codec import statistics_from_proto
from gateway.core.errors import InvalidInput, VersionLoadError
from gateway.core.servable import Arrays, LoadedVersion, Signature, TensorSpec
from gateway.preprocessing.pipeline import Preprocessing
from gateway.preprocessing.values import PreprocessingError, ValueKind

log = structlog.get_logger("gateway.bundle")

# Representative TF dtypes for raw value kinds (validation accepts any width).
_RAW_DTYPE = {
    ValueKind.FLOAT: 1,  # DT_FLOAT
    ValueKind.INT: 9,  # DT_INT64
    ValueKind.STRING: 7,  # DT_STRING
}


@dataclass(frozen=True)
class Golden:
    """Decoded golden records."""

    signature: str
    raw: Mapping[str, np.ndarray]
    transformed: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray]
    atol: float
    rtol: float


@dataclass(frozen=True)
class Bundle:
    """Everything a version ships besides the SavedModel."""

    manifest: bundle_pb2.BundleManifest | None
    preprocessing: Preprocessing | None
    statistics: FeatureStatistics | None
    golden: Golden | None
    transform: Callable[[Arrays], Arrays] | None


def verify_bundle(path: Path) -> None:
    """Pre-load check: every file matches the manifest (when the version has one)."""
    try:
        verify_manifest(path)
    except ValueError as exc:
        raise VersionLoadError(f"manifest mismatch: {exc}") from exc


_T = TypeVar("_T")


def _read_message(path: Path, rel: Path, message: Any) -> Any:
    """Parse one bundle file; a failure names the file (and what could not be parsed)."""
    try:
        return message.FromString((path / rel).read_bytes())
    except Exception as exc:
        raise VersionLoadError(
            f"{rel}: cannot parse as {message.DESCRIPTOR.full_name} ({type(exc).__name__}: "
            f"{str(exc)[:200]}); the file is corrupt or was written by another tool"
        ) from exc


def _decode(
    path: Path, rel: Path, message: Any, what: str, convert: Callable[[Any], _T]
) -> _T | None:
    """Parse the bundle file `rel` (None when absent) and convert it; a failure names the
    file and what was wrong."""
    if not (path / rel).is_file():
        return None
    msg = _read_message(path, rel, message)
    try:
        return convert(msg)
    except Exception as exc:
        raise VersionLoadError(f"{rel}: invalid {what} ({type(exc).__name__}: {exc})") from exc


def _golden(g: Any) -> Golden:
    return Golden(
        g.signature_name or "serving_default",
        tensors_from_proto(g.raw),
        tensors_from_proto(g.transformed),
        tensors_from_proto(g.outputs),
        g.atol,
        g.rtol,
    )


def read_bundle(path: Path) -> Bundle | None:
    """Read the bundle files of a version directory; None when it has none.

    Raises `VersionLoadError` whose message starts with the path of the file that
    cannot be parsed or decoded (e.g. ``assets.extra/gateway/preprocessing.pb: ...``).
    """
    files = [path / f for f in (PREPROCESSING, STATISTICS, GOLDEN)]
    if not any(f.exists() for f in files) and not (path / TRANSFORM).exists():
        return None
    manifest = _decode(path, MANIFEST, bundle_pb2.BundleManifest, "manifest", lambda m: m)
    pre = _decode(
        path, PREPROCESSING, preprocessing_pb2.Preprocessing, "preprocessing",
        preprocessing_from_proto,
    )  # fmt: skip
    stats = _decode(
        path, STATISTICS, statistics_pb2.FeatureStatistics, "statistics",
        statistics_from_proto,
    )  # fmt: skip
    golden = _decode(path, GOLDEN, bundle_pb2.GoldenRecords, "golden records", _golden)
    transform = _load_transform(path / TRANSFORM) if (path / TRANSFORM).exists() else None
    return Bundle(manifest, pre, stats, golden, transform)


TFT_SIGNATURE = "transform_signature"
"""The signature key of TF Transform's TF1-style transform_fn SavedModels."""


def transform_saved_model_dir(path: Path) -> Path:
    """The SavedModel directory of a graph transform: `path` itself, or `path/transform_fn`
    when `path` is a TF Transform output directory (``transform_fn/`` and
    ``transformed_metadata/``)."""
    if (
        not (path / "saved_model.pb").is_file()
        and (path / "transform_fn" / "saved_model.pb").is_file()
    ):
        return path / "transform_fn"
    return path


def _transform_function(obj: Any, where: str) -> tuple[Any, dict[str, Any], bool]:
    """(callable, {feature: numpy dtype}, takes_one_dict) of a loaded graph transform.

    Looks, in order, for TF Transform's TF2 layout (a ``transform_fn`` function taking one
    dict of features), its TF1 layout (signature ``transform_signature``), and a
    ``serving_default`` signature taking one keyword argument per feature.
    """
    restored = getattr(obj, "transform_fn", None)
    concrete = list(getattr(restored, "concrete_functions", ()) or ())
    if restored is not None and len(concrete) == 1:
        args, _kwargs = concrete[0].structured_input_signature
        if len(args) == 1 and isinstance(args[0], Mapping):
            wanted = {name: spec.dtype.as_numpy_dtype for name, spec in args[0].items()}
            return concrete[0], wanted, True
    signatures = getattr(obj, "signatures", {}) or {}
    for key in (TFT_SIGNATURE, "serving_default"):
        if key in signatures:
            fn = signatures[key]
            _, kwargs = fn.structured_input_signature
            return fn, {name: spec.dtype.as_numpy_dtype for name, spec in kwargs.items()}, False
    raise VersionLoadError(
        f"{where}: the graph transform has no 'transform_fn' function taking a dict of "
        f"features and no '{TFT_SIGNATURE}' or 'serving_default' signature "
        f"(signatures: {sorted(signatures)})"
    )


def _load_transform(path: Path) -> Callable[[Arrays], Arrays]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    where = TRANSFORM.as_posix()
    try:
        obj = tf.saved_model.load(str(transform_saved_model_dir(path)))
    except Exception as exc:
        raise VersionLoadError(f"{where}: cannot load the graph transform: {exc}") from exc
    fn, wanted, takes_dict = _transform_function(obj, where)

    def transform(features: Arrays) -> Arrays:
        args = {}
        for name, dtype in wanted.items():
            if name not in features:
                raise InvalidInput(f"graph transform needs feature '{name}', which is missing")
            value = features[name]
            args[name] = tf.constant(value if value.dtype.kind in "OSU" else value.astype(dtype))
        try:
            out = fn(args) if takes_dict else fn(**args)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            text = getattr(exc, "message", None) or str(exc)
            raise InvalidInput(f"graph transform rejected input: {text[:300]}") from exc
        return {k: np.asarray(v.numpy()) for k, v in out.items()}

    return transform


def _conformer(alias: str, spec: TensorSpec) -> Callable[[np.ndarray], np.ndarray]:
    """Cast/reshape a preprocessed feature to what the model input expects (decided at load)."""
    want = spec.np_dtype
    rank = None if spec.shape is None else len(spec.shape)
    trailing_one = spec.shape is not None and len(spec.shape) >= 2 and spec.shape[-1] == 1

    def conform(value: np.ndarray) -> np.ndarray:
        if want is not None and want.kind not in "OSU" and value.dtype != want:
            if value.dtype.kind in "OSU":
                raise InvalidInput(f"feature '{alias}': expected numbers, got strings")
            value = value.astype(want)
        if rank is not None and value.ndim != rank:
            if value.ndim == rank - 1 and trailing_one:
                value = value[..., None]
            elif value.ndim == rank + 1 and value.shape[-1] == 1:
                value = value[..., 0]
        return value

    return conform


def _raw_inputs(pre: Preprocessing) -> dict[str, TensorSpec]:
    specs = {}
    for name, raw in pre.raw_signature().items():
        dims = tuple(None if d < 0 else int(d) for d in raw.shape)
        specs[name] = TensorSpec(_RAW_DTYPE[raw.kind], (None, *dims), kind_only=True)
    return specs


def compose(
    sig: Signature, pre: Preprocessing, transform: Callable[[Arrays], Arrays] | None
) -> Signature:
    """A signature taking raw features: preprocessing, graph transform, conform, model."""
    conformers = {alias: _conformer(alias, spec) for alias, spec in sig.inputs.items()}
    model_run = sig.run

    def to_model_inputs(raw: Mapping[str, np.ndarray]) -> Arrays:
        try:
            features = pre.apply(raw)
        except PreprocessingError as exc:
            raise InvalidInput(f"preprocessing failed: {exc}") from exc
        if transform is not None:
            features = {**features, **transform(features)}
        missing = [a for a in conformers if a not in features]
        if missing:
            raise InvalidInput(
                f"preprocessing produced no value for model input(s) {missing}; "
                f"produced: {sorted(features)}"
            )
        return {alias: conform(features[alias]) for alias, conform in conformers.items()}

    def run(raw: Mapping[str, np.ndarray]) -> Arrays:
        return model_run(to_model_inputs(raw))

    return replace(sig, inputs=_raw_inputs(pre), run=run, prepare=to_model_inputs)


def _advertised(loaded: LoadedVersion, composed: Mapping[str, Signature]) -> Any:
    """SignatureDefs as GetModelMetadata should show them: raw-feature inputs."""
    from tensorflow.core.protobuf import meta_graph_pb2

    out: dict[str, Any] = {}
    for name, sdef in loaded.signature_defs.items():
        copy = meta_graph_pb2.SignatureDef()
        copy.CopyFrom(sdef)
        if name in composed:
            copy.inputs.clear()
            for alias, spec in composed[name].inputs.items():
                info = copy.inputs[alias]
                info.name = alias
                info.dtype = spec.dtype
                for d in spec.shape or ():
                    info.tensor_shape.dim.add(size=-1 if d is None else d)
        out[name] = copy
    return out


def _compare(
    kind: str, name: str, got: np.ndarray, want: np.ndarray, atol: float, rtol: float
) -> str | None:
    """None when equal within tolerance, else a reason naming the feature/output."""
    if got.shape != want.shape and got.size == want.size:
        got = got.reshape(want.shape)
    if got.shape != want.shape:
        return (
            f"{kind} '{name}' has shape {list(got.shape)}, golden records have {list(want.shape)}"
        )
    if want.dtype.kind in "OSU" or got.dtype.kind in "OSU":
        unequal = np.flatnonzero(got.reshape(-1) != want.reshape(-1))
        if unequal.size:
            i = int(unequal[0])
            return (
                f"{kind} '{name}' differs from the golden records in {unequal.size} value(s); "
                f"first at flat index {i}: {got.reshape(-1)[i]!r} != {want.reshape(-1)[i]!r}"
            )
        return None
    g, w = got.astype(np.float64), want.astype(np.float64)
    diff = np.abs(g - w)
    limit = atol + rtol * np.abs(w)
    bad = ~(diff <= limit) & ~(np.isnan(g) & np.isnan(w))
    if bad.any():
        i = int(np.argmax(np.where(bad, diff, -1).reshape(-1)))
        worst = float(diff.reshape(-1)[i])
        return (
            f"{kind} '{name}' differs from the golden records: max abs diff {worst:.6g} "
            f"(serving {float(g.reshape(-1)[i]):.6g} vs golden {float(w.reshape(-1)[i]):.6g}; "
            f"tolerance atol={atol:g} rtol={rtol:g}) in {int(bad.sum())} value(s)"
        )
    return None


def self_test(sig: Signature, golden: Golden, source: str) -> None:
    """Re-apply serving preprocessing to the golden raw rows and re-run the model."""
    to_model = sig.prepare
    try:
        inputs = to_model(golden.raw) if to_model is not None else dict(golden.raw)
    except Exception as exc:
        raise VersionLoadError(f"self test: preprocessing of golden rows failed: {exc}") from exc
    for name, want in golden.transformed.items():
        if name in inputs:
            reason = _compare("feature", name, inputs[name], want, golden.atol, golden.rtol)
            if reason:
                raise VersionLoadError(
                    f"self test: {reason} (serving transform does not reproduce training)"
                )
    try:
        outputs = sig.run(golden.raw) if to_model is not None else sig.run(inputs)
    except Exception as exc:
        raise VersionLoadError(f"self test: model call on golden rows failed: {exc}") from exc
    for name, want in golden.outputs.items():
        if name not in outputs:
            raise VersionLoadError(f"self test: output '{name}' missing from the model's outputs")
        reason = _compare("output", name, outputs[name], want, golden.atol, golden.rtol)
        if reason:
            hint = "wrong or corrupted checkpoint or variables not loaded"
            if source == "training":
                hint = (
                    "wrong or corrupted checkpoint, variables not loaded, or preprocessing "
                    "missing from the bundle"
                )
            raise VersionLoadError(f"self test: {reason} ({hint})")


def attach_bundle(loaded: LoadedVersion) -> LoadedVersion:
    """Load hook: compose raw-feature signatures, run the self test, record the bundle."""
    bundle = read_bundle(loaded.path)
    if bundle is None:
        return loaded
    signatures = dict(loaded.signatures)
    composed: dict[str, Signature] = {}
    if bundle.preprocessing is not None:
        produced = set(bundle.preprocessing.raw_signature())
        for name, sig in loaded.signatures.items():
            if bundle.transform is not None or set(sig.inputs) <= produced:
                composed[name] = compose(sig, bundle.preprocessing, bundle.transform)
        signatures.update(composed)
    source = bundle.manifest.golden_outputs_source if bundle.manifest else ""
    if bundle.golden is not None:
        golden_sig = signatures.get(bundle.golden.signature)
        if golden_sig is None:
            raise VersionLoadError(
                f"self test: golden records name signature '{bundle.golden.signature}', "
                "which the SavedModel does not have"
            )
        self_test(golden_sig, bundle.golden, source)
    if source == "export":
        log.warning(
            "golden_outputs_from_export",
            model=loaded.model,
            version=loaded.version,
            detail="golden outputs were computed at export, not in training: the self test "
            "cannot tell whether preprocessing is missing from the bundle (pass "
            "training_outputs= to export_version)",
        )
    extensions = {
        **loaded.extensions,
        "bundle": bundle,
        "advertised_signature_defs": _advertised(loaded, composed),
    }
    return replace(loaded, signatures=signatures, extensions=extensions)
