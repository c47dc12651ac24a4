"""Verify, load and warm up one model version directory (runs on loader threads).

Every failure raises `VersionLoadError` whose message is the reason reported in
status, logs and metrics; it names the file when one is to blame.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from gateway.core.errors import (
    GatewayError,
    InternalError,
    InvalidInput,
    ResourceExhausted,
    VersionLoadError,
)
from gateway.core.inference import InferenceRequest
from gateway.core.servable import (
    CLASSIFY,
    PREDICT,
    REGRESS,
    Arrays,
    LoadedVersion,
    RunFn,
    Signature,
    TensorSpec,
)

log = structlog.get_logger("gateway.lifecycle")

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000
_SHARD = re.compile(r"^variables\.data-(\d{5})-of-(\d{5})$")

LoadHook = Callable[[LoadedVersion], LoadedVersion]
"""A load step after the SavedModel is loaded: may check the version (raise
`VersionLoadError`) or return it with extensions added."""

PreCheck = Callable[[Path], None]
"""A check of the version directory before TensorFlow reads it (raise `VersionLoadError`)."""


def _import_tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def read_signature_defs(path: Path) -> Any:
    """Parse saved_model.pb and return the 'serve' MetaGraph's signature_def map (a proto map)."""
    return _serve_meta_graph(path).signature_def


def _serve_meta_graph(path: Path) -> Any:
    """The 'serve' MetaGraphDef of saved_model.pb; VersionLoadError naming what is wrong."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb = path / "saved_model.pb"
    if not pb.is_file():
        raise VersionLoadError("saved_model.pb: missing")
    model = saved_model_pb2.SavedModel()
    try:
        model.ParseFromString(pb.read_bytes())
    except Exception as exc:
        raise VersionLoadError(
            f"saved_model.pb: cannot parse ({type(exc).__name__}); file is truncated or "
            "not a SavedModel"
        ) from exc
    for meta in model.meta_graphs:
        if "serve" in meta.meta_info_def.tags:
            return meta
    if not model.meta_graphs:
        raise VersionLoadError("saved_model.pb: no MetaGraph (file is empty or truncated)")
    raise VersionLoadError("saved_model.pb: no MetaGraph tagged 'serve'")


def verify_files(path: Path) -> None:
    """Cheap structural checks before TensorFlow reads anything."""
    variables = path / "variables"
    if not variables.is_dir():
        return  # a graph without variables is valid; TensorFlow will say otherwise
    names = {p.name for p in variables.iterdir()}
    shards = [m for m in map(_SHARD.match, names) if m]
    if "variables.index" not in names:
        if shards:
            raise VersionLoadError("variables/variables.index: missing")
        return
    if (variables / "variables.index").stat().st_size == 0:
        raise VersionLoadError("variables/variables.index: empty file")
    if shards:
        total = int(shards[0].group(2))
        for i in range(total):
            name = f"variables.data-{i:05d}-of-{total:05d}"
            if name not in names:
                raise VersionLoadError(f"variables/{name}: missing")
    else:
        raise VersionLoadError("variables/variables.data-00000-of-00001: missing")


def _spec(info: Any) -> TensorSpec:
    if info.tensor_shape.unknown_rank:
        return TensorSpec(info.dtype, None)
    return TensorSpec(
        info.dtype, tuple(None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim)
    )


def shared_strings(values: np.ndarray) -> np.ndarray:
    """A string output whose rows all equal the first (a classifier's `classes`, tiled
    per example) with the first row's bytes objects shared by every row: TensorFlow
    gives each element its own (some 40 bytes per label of every example)."""
    if values.dtype != object or values.ndim == 0 or len(values) < 2:
        return values
    if bool(np.all(values[1] == values[0])) and bool(np.all(values == values[:1])):
        return np.repeat(values[:1], len(values), axis=0)
    return values


def _make_run(tf: Any, fn: Any, output_keys: Sequence[str]) -> RunFn:
    @_guard(tf)
    def run(inputs: Mapping[str, np.ndarray]) -> Arrays:
        result = fn(**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: shared_strings(result[k].numpy()) for k in output_keys}

    return run


def _first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0][:500] if stripped else "(no message)"


SESSION = "tf1_session"
"""`LoadedVersion.extensions["runtime"]` of a TF1 graph served with session semantics."""
FUNCTION = "tf2_function"
"""`LoadedVersion.extensions["runtime"]` of a SavedModel served through its TF2 functions."""


def load_saved_model(model: str, version: int, path: Path) -> LoadedVersion:
    """Verify and load `path` (a TF Serving version directory) into a `LoadedVersion`.

    A TF1 SavedModel (a graph without a TF2 object graph: Estimator exports, graphs
    built with `tf.compat.v1`) is loaded into a `Session` and run with `session.run` on
    the signature's tensor names, as TF Serving does: what the client sent is fed as it
    is and TensorFlow enforces shapes. Anything else runs through its TF2 functions.
    Either way every signature has the same `Signature.run` contract.
    """
    verify_files(path)
    meta = _serve_meta_graph(path)
    signature_defs = meta.signature_def
    tf = _import_tf()
    session = not meta.object_graph_def.nodes
    if session:
        runs, resource = _load_session(tf, path, signature_defs)
    else:
        runs, resource = _load_functions(tf, path, signature_defs)
    signatures: dict[str, Signature] = {}
    for name, run in runs.items():
        sdef = signature_defs[name]
        signatures[name] = Signature(
            name=name,
            method=sdef.method_name or PREDICT,
            inputs={k: _spec(v) for k, v in sdef.inputs.items()},
            outputs={k: _spec(v) for k, v in sdef.outputs.items()},
            run=run,
            strict_shapes=not session,
        )
    if not signatures:
        raise VersionLoadError("saved_model.pb: no serving signatures")
    return LoadedVersion(
        model=model,
        version=version,
        path=path,
        signatures=signatures,
        signature_defs=signature_defs,
        extensions={"runtime": SESSION if session else FUNCTION},
        resource=resource,
    )


def _serving_names(signature_defs: Any) -> list[str]:
    return [name for name in signature_defs if not name.startswith("__")]


def _load_functions(tf: Any, path: Path, signature_defs: Any) -> tuple[dict[str, RunFn], Any]:
    try:
        obj = tf.saved_model.load(str(path), tags=["serve"])
    except Exception as exc:
        raise VersionLoadError(_tf_load_reason(exc)) from exc
    functions = dict(getattr(obj, "signatures", {}) or {})
    runs: dict[str, RunFn] = {}
    for name in _serving_names(signature_defs):
        fn = functions.get(name)
        if fn is None:
            raise VersionLoadError(f"signature '{name}': declared in saved_model.pb but not loaded")
        runs[name] = _make_run(tf, fn, sorted(signature_defs[name].outputs))
    return runs, obj


def _load_session(tf: Any, path: Path, signature_defs: Any) -> tuple[dict[str, RunFn], Any]:
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    try:
        with graph.as_default():
            tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path))
    except Exception as exc:
        session.close()
        raise VersionLoadError(_tf_load_reason(exc)) from exc
    runs: dict[str, RunFn] = {}
    for name in _serving_names(signature_defs):
        sdef = signature_defs[name]
        try:
            feeds = {alias: graph.get_tensor_by_name(t.name) for alias, t in sdef.inputs.items()}
            fetches = {alias: graph.get_tensor_by_name(t.name) for alias, t in sdef.outputs.items()}
        except (KeyError, ValueError) as exc:
            session.close()
            raise VersionLoadError(f"signature '{name}': {exc}") from exc
        runs[name] = _session_run(tf, session, feeds, fetches)
    return runs, session


def _session_run(
    tf: Any, session: Any, feeds: Mapping[str, Any], fetches: Mapping[str, Any]
) -> RunFn:
    keys = sorted(fetches)
    fetch_list = [fetches[k] for k in keys]
    guarded = _guard(tf)

    @guarded
    def run(inputs: Mapping[str, np.ndarray]) -> Arrays:
        try:
            values = session.run(fetch_list, feed_dict={feeds[k]: v for k, v in inputs.items()})
        except ValueError as exc:  # the feed does not fit a placeholder: the client's input
            # e.g. "Cannot feed value of shape () for Tensor input_example_tensor:0, which
            # has shape (None,)"
            raise InvalidInput(f"model rejected input: {_first_line(str(exc))}") from exc
        return {k: shared_strings(v) for k, v in zip(keys, values, strict=True)}

    return run


def _guard(tf: Any) -> Callable[[RunFn], RunFn]:
    """TensorFlow's errors as ours: the model refusing the input is the client's mistake
    (INVALID_ARGUMENT with TensorFlow's text), running out of memory RESOURCE_EXHAUSTED,
    anything else INTERNAL."""
    invalid = (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError)
    exhausted = tf.errors.ResourceExhaustedError

    def wrap(fn: RunFn) -> RunFn:
        def run(inputs: Mapping[str, np.ndarray]) -> Arrays:
            try:
                return fn(inputs)
            except invalid as exc:
                raise InvalidInput(f"model rejected input: {_first_line(exc.message)}") from exc
            except UnicodeDecodeError as exc:
                # TensorFlow fails to decode its own error message when it quotes the
                # client's bytes (e.g. a garbage serialized tf.Example): still bad input.
                raise InvalidInput(
                    "model rejected input: TensorFlow error quoting undecodable input bytes"
                ) from exc
            except exhausted as exc:
                raise ResourceExhausted(
                    f"model ran out of resources: {_first_line(exc.message)}"
                ) from exc
            except tf.errors.OpError as exc:
                raise InternalError(f"model call failed: {_first_line(exc.message)}") from exc

        return run

    return wrap


def _tf_load_reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    lowered = text.lower()
    if "read less bytes" in lowered or "checksum" in lowered or "data-" in lowered:
        return f"variables: data shard truncated or corrupt ({text[:300]})"
    if "sstable" in lowered or "variables.index" in lowered or "tensorslicereader" in lowered:
        return f"variables/variables.index: unreadable ({text[:300]})"
    if "saved_model.pb" in lowered:
        return f"saved_model.pb: {text[:300]}"
    return f"TensorFlow could not load the SavedModel: {text[:300]}"


WarmupDecoder = Callable[[bytes], InferenceRequest]
"""Decodes one record of the warmup file (a TF Serving PredictionLog) into a request; the
transport that owns the wire format provides it. Raises on a record it cannot decode."""


def warmup(loaded: LoadedVersion, decode: WarmupDecoder) -> int:
    """Replay `assets.extra/tf_serving_warmup_requests` (PredictionLog TFRecords); return count."""
    file = loaded.path / WARMUP_FILE
    if not file.is_file():
        return 0
    tf = _import_tf()
    count = 0
    try:
        records = list(
            tf.data.TFRecordDataset(str(file)).take(MAX_WARMUP_RECORDS).as_numpy_iterator()
        )
    except Exception as exc:
        raise VersionLoadError(f"{WARMUP_FILE}: unreadable TFRecord file ({exc})") from exc
    for i, raw in enumerate(records):
        try:
            request = decode(raw)
            sig = loaded.signature(request.signature)
            if request.examples is None:
                sig.validate(request.inputs)
                sig.run(request.inputs)
            else:
                want = request.method.signature_method
                if sig.method != want:
                    raise VersionLoadError(f"signature '{sig.name}' is not a {want} signature")
                if len(sig.inputs) != 1:
                    raise VersionLoadError(
                        f"signature '{sig.name}' must have exactly one input of serialized "
                        "tf.Example"
                    )
                (alias,) = sig.inputs
                sig.run({alias: request.examples.serialized})
        except VersionLoadError as exc:
            raise VersionLoadError(f"{WARMUP_FILE}: record {i} failed: {exc}") from exc
        except GatewayError as exc:
            raise VersionLoadError(f"{WARMUP_FILE}: record {i} failed: {exc.message}") from exc
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise VersionLoadError(
                f"{WARMUP_FILE}: record {i} failed: {type(exc).__name__}: {first}"
            ) from exc
        count += 1
    return count


PRIME_BATCH_SIZES = (1, 2)
"""Batch sizes of the synthetic priming calls (TensorFlow's first call, and its first call
with a batch of more than one row, each cost tens of milliseconds; later sizes do not)."""


def prime(loaded: LoadedVersion) -> int:
    """Call every batch-major signature of `loaded` on zero-filled inputs of batch 1 and 2,
    so that its first real requests do not pay TensorFlow's one-time costs (a cold canary
    would otherwise look slow to the latency gate). Failures are ignored: this is only a
    warm-up, and a model may well reject zeros. Returns the number of calls that ran."""
    ran = 0
    for sig in loaded.signatures.values():
        if not sig.batchable or sig.method in (CLASSIFY, REGRESS):
            continue
        for rows in PRIME_BATCH_SIZES:
            inputs = {}
            for alias, spec in sig.inputs.items():
                assert spec.shape is not None  # batchable
                shape = (rows, *(d or 1 for d in spec.shape[1:]))
                dtype = spec.np_dtype
                if dtype is None:
                    break
                if dtype == np.dtype(object):
                    inputs[alias] = np.full(shape, b"", dtype=object)
                else:
                    inputs[alias] = np.zeros(shape, dtype=dtype)
            else:
                try:
                    sig.run(inputs)
                    ran += 1
                except Exception:  # priming must never fail a version
                    log.debug("prime_call_failed", model=loaded.model, signature=sig.name)
    return ran


def load_version(
    model: str,
    version: int,
    path: Path,
    hooks: Sequence[LoadHook] = (),
    do_warmup: bool = True,
    pre_checks: Sequence[PreCheck] = (),
    decode_warmup: WarmupDecoder | None = None,
) -> tuple[LoadedVersion, int]:
    """The whole load pipeline: pre-checks, verify, load, hooks, warm up.

    Returns (version, warmup records replayed)."""
    for check in pre_checks:
        check(path)
    loaded = load_saved_model(model, version, path)
    for hook in hooks:
        loaded = hook(loaded)
    warmed = warmup(loaded, decode_warmup) if do_warmup and decode_warmup is not None else 0
    if do_warmup:
        prime(loaded)
    return loaded, warmed
