"""A deterministic, protobuf-aware fuzzer for a running gateway's gRPC (and REST) APIs.

``python -m loadtest.fuzz --target HOST:PORT --count N --seed S [--model m ...]
[--rest HOST:PORT --rest-count N] [--token-file F]``, or ``--serve`` to build small models
in a temporary directory and start its own ``gateway serve`` (what ``make fuzz`` runs).

Case ``i`` of seed ``S`` is generated from ``random.Random(f"{S}/{i}")`` alone (and the
models the fuzzer discovered), so any finding is replayed with ``--replay i``. Each case
is one raw call (``channel.unary_unary(path)`` with bytes in and out) to one of:

* ``tensorflow.serving.PredictionService/{Predict,Classify,Regress,MultiInference,
  GetModelMetadata}``, ``tensorflow.serving.ModelService/{GetModelStatus,
  HandleReloadConfigRequest}``, ``gateway.v1.AdminService/*``,
  ``inference.GRPCInferenceService/*`` and ``grpc.health.v1.Health/Check``;

built as a VALID request for a discovered model (``GetModelMetadata`` signatures,
``AdminService.GetStatus`` versions and labels), then, by style:

* ``valid``: sent as is;
* ``field``: one to three protobuf-aware mutations: odd dtypes (DT_VARIANT, DT_RESOURCE,
  reference types, unknown enum numbers), shapes with 0 / -1 / huge / up to 100 dims,
  the broadcast form (one value, huge shape), ``tensor_content`` of the wrong length,
  values in the wrong typed field, huge strings (up to 1 MiB), empty / unknown / odd
  model names, versions, labels and signatures, tf.Examples with odd features, v2
  datatypes (``BF16``, ``FOO``, ...), ``raw_input_contents`` mismatched with the inputs,
  odd parameters, and a generic mutator setting any field (found by walking the
  descriptor) to an edge value;
* ``utf8``: invalid UTF-8 put into one string field of the serialized message;
* ``bytes``: byte-level mutations of the serialized message (bit flips, truncation,
  insertion, deletion, duplication, splicing, junk fields);
* ``random``: random bytes;
* ``nested``: deeply nested groups (unknown fields) or messages (a TensorProto variant
  chain), around protobuf's recursion limit and far past it;
* ``oversize``: a message over ``max_message_bytes``.

Mutating admin calls (``ReloadConfig``, ``UpdateRollout``, ``HandleReloadConfigRequest``)
are sent without the token, with a wrong one or with a malformed ``authorization``
header: each that parses must be answered UNAUTHENTICATED. With ``--token-file``,
``UpdateRollout`` is also sent with the valid token (rollout actions on the fuzzed
models), and ``ReloadConfig`` with it at ``--reload-rate`` (it re-reads the unchanged
config file); ``HandleReloadConfigRequest`` never carries it (it would replace the
served models).

The REST leg (``--rest``) sends mutated JSON bodies (and paths, headers, raw bytes) to
TF Serving's ``/v1`` and the v2 protocol's ``/v2`` endpoints; no answer may be HTTP 500.

A case's ``x-request-id`` is ``fuzz-S-i``. Findings: INTERNAL or UNKNOWN answers (HTTP
500), non-OK answers without details, mutating calls without the token answered other
than UNAUTHENTICATED. The process exits 1 when there is any.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

PS = "/tensorflow.serving.PredictionService/"
MS = "/tensorflow.serving.ModelService/"
ADMIN = "/gateway.v1.AdminService/"
OIP = "/inference.GRPCInferenceService/"
HEALTH = "/grpc.health.v1.Health/"

MUTATING = frozenset(
    {MS + "HandleReloadConfigRequest", ADMIN + "ReloadConfig", ADMIN + "UpdateRollout"}
)
"""Calls that need the admin token when one is configured."""

FINDING_CODES = frozenset({"INTERNAL", "UNKNOWN", "HTTP_500", "DISCONNECTED"})
DISCONNECTED = "DISCONNECTED"
"""A REST request the server closed the connection on without answering."""
MiB = 1 << 20

_EDGE_INTS = (
    0, 1, -1, 2, 3, 7, 100, 255, 65535, 2**31 - 1, -(2**31), 2**32 - 1, 2**32, 2**53,
    2**62, 2**63 - 1, -(2**63), 2**64 - 1,
)  # fmt: skip
_EDGE_FLOATS = (
    0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 1e-45, 3.4e38, 1e308, 5e-324,
    100.0, 150.0, 1e-300,
)  # fmt: skip
_ODD_STRINGS = (
    "", " ", "\x00", "nope", "../../etc/passwd", "é模型", "a" * 300, "%s%n%x", "{}", "m\nx",
    "-1", "NaN", "1e999", "serving_default\x00", "\t", "*", "/", "m/versions/1", ":predict",
)  # fmt: skip
_INT_RANGES = {
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
_V2_DATATYPES = (
    "BF16", "FP16", "FOO", "", "fp32", "BYTES", "BOOL", "INT8", "UINT8", "INT16", "UINT16",
    "UINT32", "UINT64", "INT32", "INT64", "FP64", "FP32", "STRING", "TYPE_FP32", "X" * 1000,
)  # fmt: skip


# --- protobuf modules (imported lazily: TensorFlow's protos load TensorFlow) ---------------


class _Protos:
    """The message modules, imported on first use."""

    def __init__(self) -> None:
        from grpc_health.v1 import health_pb2
        from tensorflow.core.example import example_pb2, feature_pb2
        from tensorflow.core.framework import (
            resource_handle_pb2,
            tensor_pb2,
            tensor_shape_pb2,
            types_pb2,
        )
        from tensorflow_serving.apis import (
            classification_pb2,
            get_model_metadata_pb2,
            get_model_status_pb2,
            inference_pb2,
            model_management_pb2,
            predict_pb2,
            regression_pb2,
        )
        from tensorflow_serving.config import model_server_config_pb2

        from gateway._proto.gateway.v1 import admin_pb2
        from gateway._proto.inference import grpc_service_pb2

        self.health = health_pb2
        self.example = example_pb2
        self.feature = feature_pb2
        self.resource = resource_handle_pb2
        self.tensor = tensor_pb2
        self.shape = tensor_shape_pb2
        self.types = types_pb2
        self.classification = classification_pb2
        self.metadata = get_model_metadata_pb2
        self.status = get_model_status_pb2
        self.inference = inference_pb2
        self.management = model_management_pb2
        self.predict = predict_pb2
        self.regression = regression_pb2
        self.server_config = model_server_config_pb2
        self.admin = admin_pb2
        self.oip = grpc_service_pb2
        self.dtypes = tuple(v.number for v in types_pb2.DataType.DESCRIPTOR.values)
        self.requests: dict[str, Any] = {
            PS + "Predict": predict_pb2.PredictRequest,
            PS + "Classify": classification_pb2.ClassificationRequest,
            PS + "Regress": regression_pb2.RegressionRequest,
            PS + "MultiInference": inference_pb2.MultiInferenceRequest,
            PS + "GetModelMetadata": get_model_metadata_pb2.GetModelMetadataRequest,
            MS + "GetModelStatus": get_model_status_pb2.GetModelStatusRequest,
            MS + "HandleReloadConfigRequest": model_management_pb2.ReloadConfigRequest,
            ADMIN + "GetStatus": admin_pb2.GetStatusRequest,
            ADMIN + "ReloadConfig": admin_pb2.ReloadConfigRequest,
            ADMIN + "GetFeatureSkew": admin_pb2.GetFeatureSkewRequest,
            ADMIN + "GetDivergenceSummary": admin_pb2.GetDivergenceSummaryRequest,
            ADMIN + "GetRollout": admin_pb2.GetRolloutRequest,
            ADMIN + "UpdateRollout": admin_pb2.UpdateRolloutRequest,
            OIP + "ModelInfer": grpc_service_pb2.ModelInferRequest,
            OIP + "ModelMetadata": grpc_service_pb2.ModelMetadataRequest,
            OIP + "ModelReady": grpc_service_pb2.ModelReadyRequest,
            OIP + "ServerLive": grpc_service_pb2.ServerLiveRequest,
            OIP + "ServerReady": grpc_service_pb2.ServerReadyRequest,
            OIP + "ServerMetadata": grpc_service_pb2.ServerMetadataRequest,
            HEALTH + "Check": health_pb2.HealthCheckRequest,
        }


_PROTOS: _Protos | None = None


def protos() -> _Protos:
    """The protobuf modules (imported once)."""
    global _PROTOS
    if _PROTOS is None:
        _PROTOS = _Protos()
    return _PROTOS


# --- what is fuzzed ------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """One signature input: alias, TensorFlow DataType number, dims (-1: any; None:
    unknown rank)."""

    alias: str
    dtype: int
    dims: tuple[int, ...] | None


@dataclass(frozen=True)
class SignatureInfo:
    name: str
    method: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[str, ...]

    @property
    def takes_examples(self) -> bool:
        """One DT_STRING input (serialized tf.Example), as Classify/Regress need."""
        return len(self.inputs) == 1 and self.inputs[0].dtype == 7

    @property
    def classifies(self) -> bool:
        return self.takes_examples and (
            self.method.endswith("classify") or bool({"classes", "scores"} & set(self.outputs))
        )

    @property
    def regresses(self) -> bool:
        return self.takes_examples and (
            self.method.endswith("regress") or self.outputs == ("outputs",)
        )


@dataclass(frozen=True)
class ModelInfo:
    """A served model as the fuzzer knows it."""

    name: str
    signatures: tuple[SignatureInfo, ...]
    versions: tuple[int, ...] = ()
    labels: tuple[str, ...] = ()
    example: tuple[str, int] | None = None
    """The float feature (name, width) its tf.Example signatures parse, if any."""

    def signature(self, name: str) -> SignatureInfo | None:
        return next((s for s in self.signatures if s.name == name), None)

    @property
    def default(self) -> SignatureInfo | None:
        return self.signature("serving_default") or (
            self.signatures[0] if self.signatures else None
        )


def fallback_model(name: str, features: int = 4) -> ModelInfo:
    """What is assumed of a model whose metadata could not be read: `x: float [?, N]`."""
    x = TensorSpec("x", 1, (-1, features))
    return ModelInfo(
        name, (SignatureInfo("serving_default", "tensorflow/serving/predict", (x,), ("output_0",)),)
    )


@dataclass
class Context:
    """Everything a case is generated from."""

    models: list[ModelInfo]
    token: str | None = None
    reload_rate: float = 0.0
    max_message_bytes: int = 4 * MiB

    def model(
        self, rng: random.Random, pred: Callable[[ModelInfo], bool] | None = None
    ) -> ModelInfo:
        pool = [m for m in self.models if pred is None or pred(m)] or self.models
        return rng.choice(pool)

    def names(self) -> list[str]:
        return [m.name for m in self.models]


async def discover(
    channel: Any,
    names: Sequence[str],
    examples: Mapping[str, tuple[str, int]],
    timeout: float = 30.0,
) -> list[ModelInfo]:
    """Read each model's signatures (GetModelMetadata) and versions and labels
    (AdminService.GetStatus, read-only) from the gateway; `fallback_model` for a model
    whose metadata cannot be read."""
    p = protos()
    metadata = channel.unary_unary(
        PS + "GetModelMetadata",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=p.metadata.GetModelMetadataResponse.FromString,
    )
    status = channel.unary_unary(
        ADMIN + "GetStatus",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=p.admin.GetStatusResponse.FromString,
    )
    found: list[ModelInfo] = []
    for name in names:
        request = p.metadata.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = name
        try:
            response = await metadata(request, timeout=timeout)
        except grpc.aio.AioRpcError:
            found.append(fallback_model(name))
            continue
        sigmap = p.metadata.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sigmap)
        sigs = []
        for sig_name in sorted(sigmap.signature_def):
            sig = sigmap.signature_def[sig_name]
            inputs = []
            for alias in sorted(sig.inputs):
                info = sig.inputs[alias]
                shape = info.tensor_shape
                dims = None if shape.unknown_rank else tuple(int(d.size) for d in shape.dim)
                inputs.append(TensorSpec(alias, int(info.dtype), dims))
            sigs.append(
                SignatureInfo(sig_name, sig.method_name, tuple(inputs), tuple(sorted(sig.outputs)))
            )
        versions: tuple[int, ...] = ()
        labels: tuple[str, ...] = ()
        try:
            st = await status(p.admin.GetStatusRequest(model=name), timeout=timeout)
            for model in st.models:
                if model.name == name:
                    versions = tuple(sorted(v.version for v in model.versions))
                    labels = tuple(sorted(model.labels))
        except grpc.aio.AioRpcError:
            pass
        found.append(ModelInfo(name, tuple(sigs), versions, labels, examples.get(name)))
    return found


# --- cases ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One fuzz request: the method's full path, the bytes, what was done to them."""

    index: int
    method: str
    payload: bytes
    mutation: str
    metadata: tuple[tuple[str, str | bytes], ...]
    expect_unauthenticated: bool = False

    @property
    def request_id(self) -> str:
        return next((str(v) for k, v in self.metadata if k == "x-request-id"), "")


_METHOD_WEIGHTS: tuple[tuple[str, float], ...] = (
    (PS + "Predict", 22),
    (PS + "Classify", 8),
    (PS + "Regress", 6),
    (PS + "MultiInference", 6),
    (PS + "GetModelMetadata", 4),
    (MS + "GetModelStatus", 3),
    (MS + "HandleReloadConfigRequest", 3),
    (ADMIN + "GetStatus", 1.5),
    (ADMIN + "ReloadConfig", 1.5),
    (ADMIN + "GetFeatureSkew", 1),
    (ADMIN + "GetDivergenceSummary", 1),
    (ADMIN + "GetRollout", 1),
    (ADMIN + "UpdateRollout", 3),
    (OIP + "ModelInfer", 18),
    (OIP + "ModelMetadata", 3),
    (OIP + "ModelReady", 2),
    (OIP + "ServerLive", 0.3),
    (OIP + "ServerReady", 0.3),
    (OIP + "ServerMetadata", 0.4),
    (HEALTH + "Check", 1),
)
_STYLE_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("valid", 10),
    ("field", 52),
    ("utf8", 7),
    ("bytes", 20),
    ("random", 5),
    ("nested", 5),
    ("oversize", 0.3),
)


def _pick(rng: random.Random, weighted: Sequence[tuple[str, float]]) -> str:
    return rng.choices([k for k, _ in weighted], weights=[w for _, w in weighted])[0]


def make_case(seed: int, index: int, ctx: Context) -> Case:
    """Case `index` of `seed` (a pure function of both and `ctx`)."""
    p = protos()
    rng = random.Random(f"{seed}/{index}")
    method = _pick(rng, _METHOD_WEIGHTS)
    msg, notes = _VALID[method](rng, ctx)
    style = _pick(rng, _STYLE_WEIGHTS)
    if style == "field":
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
            if rng.random() < 0.25:
                notes.append(generic_mutation(rng, msg))
            else:
                notes.append(_TARGETED.get(method, _generic_only)(rng, ctx, msg))
    payload = msg.SerializeToString()
    if style == "utf8":
        payload, note = inject_invalid_utf8(rng, msg)
        notes.append(note)
    elif style == "bytes":
        donor = _VALID[_pick(rng, _METHOD_WEIGHTS)](rng, ctx)[0].SerializeToString()
        payload, byte_notes = byte_mutations(rng, payload, donor)
        notes.extend(byte_notes)
    elif style == "random":
        payload = rng.randbytes(rng.choice((0, 1, 2, 7, 64, 1000, 4096, 65536)))
        notes.append(f"random {len(payload)} bytes")
    elif style == "nested":
        payload, note = nested(rng, method, payload)
        notes.append(note)
    elif style == "oversize":
        payload = payload + _unknown_bytes_field(ctx.max_message_bytes + rng.randint(1, 4096))
        notes.append(f"padded to {len(payload)} bytes")
    rid = f"fuzz-{seed}-{index}"
    metadata: list[tuple[str, str | bytes]] = [("x-request-id", rid)]
    if rng.random() < 0.05:
        metadata.append(("x-user-id", rng.choice(("", "u1", "ü".encode().hex(), "x" * 1000))))
    if rng.random() < 0.03:
        metadata.append(("fuzz-bin", rng.randbytes(rng.randint(0, 64))))
    expect_unauth = False
    if method in MUTATING:
        authorized = ctx.token is not None and (
            (method == ADMIN + "UpdateRollout" and rng.random() < 0.5)
            or (method == ADMIN + "ReloadConfig" and rng.random() < ctx.reload_rate)
        )
        if authorized:
            metadata.append(("authorization", f"Bearer {ctx.token}"))
            notes.append("with the admin token")
        else:
            header = rng.choice(
                (
                    None,
                    "Bearer wrong",
                    "Bearer",
                    "Bearer ",
                    "Basic dXNlcjpwYXNz",
                    "bearer x" * 50,
                    "token",
                )
            )
            if header is not None:
                metadata.append(("authorization", header))
            notes.append(f"authorization {header!r}")
            expect_unauth = len(payload) <= ctx.max_message_bytes and _parses(
                p.requests[method], payload
            )
    return Case(
        index,
        method,
        payload,
        f"{style}: {'; '.join(notes)}",
        tuple(metadata),
        expect_unauth,
    )


def cases(seed: int, count: int, ctx: Context, start: int = 0) -> Iterator[Case]:
    """Cases `start .. start+count-1` of `seed`, generated lazily."""
    for i in range(start, start + count):
        try:
            yield make_case(seed, i, ctx)
        except Exception as exc:  # a fuzzer bug: say which case, go on with the next
            print(f"fuzz: case {i} of seed {seed} could not be generated: {exc!r}", file=sys.stderr)


def _parses(cls: Any, payload: bytes) -> bool:
    try:
        cls.FromString(payload)
    except Exception:
        return False
    return True


# --- valid requests ------------------------------------------------------------------------

_NP = {
    1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8,
    9: np.int64, 10: np.bool_, 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64,
}  # fmt: skip
_V2_OF = {1: "FP32", 2: "FP64", 3: "INT32", 4: "UINT8", 5: "INT16", 6: "INT8", 7: "BYTES",
          9: "INT64", 10: "BOOL", 17: "UINT16", 19: "FP16", 22: "UINT32", 23: "UINT64"}  # fmt: skip


def _example(rng: random.Random, feature: tuple[str, int]) -> Any:
    ex = protos().example.Example()
    ex.features.feature[feature[0]].float_list.value.extend(
        round(rng.uniform(-3, 3), 3) for _ in range(feature[1])
    )
    return ex


def _shape_of(spec: TensorSpec, rows: int) -> list[int]:
    if spec.dims is None:
        return [rows, 1]
    dims = [d if d >= 0 else 1 for d in spec.dims]
    if spec.dims and spec.dims[0] < 0:
        dims[0] = rows
    return dims


def _values(rng: random.Random, spec: TensorSpec, shape: list[int], model: ModelInfo) -> np.ndarray:
    n = int(np.prod(shape)) if shape else 1
    if spec.dtype == 7:
        feature = model.example or ("x", 1)
        return np.array(
            [_example(rng, feature).SerializeToString() for _ in range(n)], dtype=object
        ).reshape(shape)
    np_type = _NP.get(spec.dtype, np.float32)
    if np_type is np.bool_:
        return np.array([rng.random() < 0.5 for _ in range(n)], dtype=np.bool_).reshape(shape)
    if np.issubdtype(np_type, np.integer):
        return np.array([rng.randint(0, 5) for _ in range(n)], dtype=np_type).reshape(shape)
    return np.array([rng.uniform(-3, 3) for _ in range(n)], dtype=np_type).reshape(shape)


def _fill_tensor(rng: random.Random, t: Any, dtype: int, values: np.ndarray) -> None:
    """A TensorProto of `values`: typed fields or (numeric) `tensor_content`."""
    t.dtype = dtype
    for d in values.shape:
        t.tensor_shape.dim.add(size=int(d))
    flat = values.reshape(-1)
    if dtype == 7:
        t.string_val.extend(flat.tolist())
    elif rng.random() < 0.4:
        t.tensor_content = flat.astype(flat.dtype.newbyteorder("<")).tobytes()
    elif dtype == 1:
        t.float_val.extend(flat.tolist())
    elif dtype == 2:
        t.double_val.extend(flat.tolist())
    elif dtype == 9:
        t.int64_val.extend(flat.tolist())
    elif dtype == 10:
        t.bool_val.extend(flat.tolist())
    elif dtype == 19:
        t.half_val.extend(flat.view(np.uint16).tolist())
    elif dtype == 22:
        t.uint32_val.extend(flat.tolist())
    elif dtype == 23:
        t.uint64_val.extend(flat.tolist())
    else:
        t.int_val.extend(int(v) for v in flat.tolist())


def _model_spec(rng: random.Random, spec: Any, model: ModelInfo, signature: str | None) -> None:
    spec.name = model.name
    r = rng.random()
    if r < 0.15 and model.versions:
        spec.version.value = rng.choice(model.versions)
    elif r < 0.25 and model.labels:
        spec.version_label = rng.choice(model.labels)
    if signature is not None and (signature != "serving_default" or rng.random() < 0.5):
        spec.signature_name = signature


def _valid_predict(rng: random.Random, ctx: Context) -> tuple[Any, list[str]]:
    p = protos()
    model = ctx.model(rng, lambda m: bool(m.signatures))
    sig = (
        model.default
        if rng.random() < 0.7
        else rng.choice(model.signatures)
        if model.signatures
        else None
    )
    req = p.predict.PredictRequest()
    _model_spec(rng, req.model_spec, model, sig.name if sig else None)
    rows = rng.choice((1, 1, 2, 3, 8))
    for spec in sig.inputs if sig else ():
        shape = _shape_of(spec, rows)
        _fill_tensor(rng, req.inputs[spec.alias], spec.dtype, _values(rng, spec, shape, model))
    if sig and rng.random() < 0.1:
        req.output_filter.append(rng.choice(sig.outputs))
    return req, [f"Predict {model.name}/{sig.name if sig else '-'}"]


def _example_input(rng: random.Random, inp: Any, feature: tuple[str, int]) -> None:
    n = rng.choice((1, 1, 2, 5))
    if rng.random() < 0.8:
        inp.example_list.examples.extend(_example(rng, feature) for _ in range(n))
    else:
        inp.example_list_with_context.context.CopyFrom(_example(rng, feature))
        inp.example_list_with_context.examples.extend(protos().example.Example() for _ in range(n))


def _example_model(rng: random.Random, ctx: Context) -> ModelInfo:
    return ctx.model(rng, lambda m: m.example is not None)


def _valid_examples(kind: str) -> Callable[[random.Random, Context], tuple[Any, list[str]]]:
    def build(rng: random.Random, ctx: Context) -> tuple[Any, list[str]]:
        p = protos()
        model = _example_model(rng, ctx)
        fitting = [
            s for s in model.signatures if (s.classifies if kind == "Classify" else s.regresses)
        ]
        sig = rng.choice(fitting).name if fitting else None
        req = (
            p.classification.ClassificationRequest
            if kind == "Classify"
            else p.regression.RegressionRequest
        )()
        _model_spec(rng, req.model_spec, model, sig)
        _example_input(rng, req.input, model.example or ("x", 1))
        return req, [f"{kind} {model.name}/{sig}"]

    return build


def _valid_multi(rng: random.Random, ctx: Context) -> tuple[Any, list[str]]:
    p = protos()
    model = _example_model(rng, ctx)
    req = p.inference.MultiInferenceRequest()
    tasks = [(s.name, "tensorflow/serving/classify") for s in model.signatures if s.classifies][:1]
    tasks += [(s.name, "tensorflow/serving/regress") for s in model.signatures if s.regresses][:1]
    for sig, method in tasks or [("", "tensorflow/serving/classify")]:
        task = req.tasks.add(method_name=method)
        task.model_spec.name = model.name
        task.model_spec.signature_name = sig
    _example_input(rng, req.input, model.example or ("x", 1))
    return req, [f"MultiInference {model.name} x{len(req.tasks)}"]


def _valid_metadata(rng: random.Random, ctx: Context) -> tuple[Any, list[str]]:
    req = protos().metadata.GetModelMetadataRequest(metadata_field=["signature_def"])
    model = ctx.model(rng)
    _model_spec(rng, req.model_spec, model, None)
    return req, [f"GetModelMetadata {model.name}"]


def _valid_status(rng: random.Random, ctx: Context) -> tuple[Any, list[str]]:
    req = protos().status.GetModelStatusRequest()
    model = ctx.model(rng)
    _model_spec(rng, req.model_spec, model, None)
    return req, [f"GetModelStatus {model.name}"]


def _valid_tfs_reload(rng: random.Random, ctx: Context) -> tuple[Any, list[str]]:
    req = protos().management.ReloadConfigRequest()
    for name in rng.sample(ctx.names(), rng.randint(1, len(ctx.names()))):
        req.config.model_config_list.config.add(
            name=name, base_path=f"/nonexistent/fuzz/{name}", model_platform="tensorflow"
        )
    return req, ["HandleReloadConfigRequest"]


def _valid_admin(name: str) -> Callable[[random.Random, Context], tuple[Any, list[str]]]:
    def build(rng: random.Random, ctx: Context) -> tuple[Any, list[str]]:
        admin = protos().admin
        cls = protos().requests[ADMIN + name]
        if name == "ReloadConfig":
            return cls(), [name]
        model = "" if name == "GetStatus" and rng.random() < 0.3 else ctx.model(rng).name
        if name == "UpdateRollout":
            action = rng.randint(1, 7)
            req = admin.UpdateRolloutRequest(model=model, action=action, reason="fuzz")
            if action == admin.UpdateRolloutRequest.SET_WEIGHT:
                req.weight = rng.choice((1.0, 5.0, 50.0, 100.0))
            return req, [f"UpdateRollout {model} {admin.UpdateRolloutRequest.Action.Name(action)}"]
        return cls(model=model), [f"{name} {model!r}"]

    return build


def _valid_infer(rng: random.Random, ctx: Context) -> tuple[Any, list[str]]:
    oip = protos().oip
    model = ctx.model(rng, lambda m: m.default is not None)
    sig = model.default
    req = oip.ModelInferRequest(model_name=model.name)
    if model.versions and rng.random() < 0.3:
        req.model_version = str(rng.choice(model.versions))
    if rng.random() < 0.2:
        req.id = f"v2-{rng.randint(0, 10**6)}"
    rows = rng.choice((1, 1, 2, 4))
    raw = rng.random() < 0.4
    for spec in sig.inputs if sig else ():
        shape = _shape_of(spec, rows)
        values = _values(rng, spec, shape, model)
        tensor = req.inputs.add(
            name=spec.alias, datatype=_V2_OF.get(spec.dtype, "FP32"), shape=shape
        )
        flat = values.reshape(-1)
        if raw:
            req.raw_input_contents.append(_raw_bytes(flat, spec.dtype))
        elif spec.dtype == 7:
            tensor.contents.bytes_contents.extend(flat.tolist())
        elif spec.dtype in (1, 19):
            tensor.contents.fp32_contents.extend(flat.astype(np.float32).tolist())
        elif spec.dtype == 2:
            tensor.contents.fp64_contents.extend(flat.tolist())
        elif spec.dtype == 9:
            tensor.contents.int64_contents.extend(flat.tolist())
        elif spec.dtype == 10:
            tensor.contents.bool_contents.extend(flat.tolist())
        else:
            tensor.contents.int_contents.extend(int(v) for v in flat.tolist())
    if sig and rng.random() < 0.15:
        req.outputs.add(name=rng.choice(sig.outputs))
    return req, [f"ModelInfer {model.name} {'raw' if raw else 'typed'}"]


def _raw_bytes(flat: np.ndarray, dtype: int) -> bytes:
    if dtype == 7:
        return b"".join(struct.pack("<I", len(v)) + v for v in flat.tolist())
    return bytes(flat.astype(flat.dtype.newbyteorder("<")).tobytes())


def _valid_named(cls_path: str) -> Callable[[random.Random, Context], tuple[Any, list[str]]]:
    def build(rng: random.Random, ctx: Context) -> tuple[Any, list[str]]:
        model = ctx.model(rng)
        req = protos().requests[cls_path](name=model.name)
        if model.versions and rng.random() < 0.3:
            req.version = str(rng.choice(model.versions))
        return req, [f"{cls_path.rsplit('/', 1)[1]} {model.name}"]

    return build


def _valid_empty(path: str) -> Callable[[random.Random, Context], tuple[Any, list[str]]]:
    def build(rng: random.Random, ctx: Context) -> tuple[Any, list[str]]:
        return protos().requests[path](), [path.rsplit("/", 1)[1]]

    return build


def _valid_health(rng: random.Random, ctx: Context) -> tuple[Any, list[str]]:
    service = rng.choice(["", *ctx.names()])
    return protos().health.HealthCheckRequest(service=service), [f"Health.Check {service!r}"]


_VALID: dict[str, Callable[[random.Random, Context], tuple[Any, list[str]]]] = {
    PS + "Predict": _valid_predict,
    PS + "Classify": _valid_examples("Classify"),
    PS + "Regress": _valid_examples("Regress"),
    PS + "MultiInference": _valid_multi,
    PS + "GetModelMetadata": _valid_metadata,
    MS + "GetModelStatus": _valid_status,
    MS + "HandleReloadConfigRequest": _valid_tfs_reload,
    **{
        ADMIN + n: _valid_admin(n)
        for n in (
            "GetStatus",
            "ReloadConfig",
            "GetFeatureSkew",
            "GetDivergenceSummary",
            "GetRollout",
            "UpdateRollout",
        )
    },
    OIP + "ModelInfer": _valid_infer,
    OIP + "ModelMetadata": _valid_named(OIP + "ModelMetadata"),
    OIP + "ModelReady": _valid_named(OIP + "ModelReady"),
    OIP + "ServerLive": _valid_empty(OIP + "ServerLive"),
    OIP + "ServerReady": _valid_empty(OIP + "ServerReady"),
    OIP + "ServerMetadata": _valid_empty(OIP + "ServerMetadata"),
    HEALTH + "Check": _valid_health,
}


# --- protobuf-aware mutations --------------------------------------------------------------


def _odd_string(rng: random.Random, ctx: Context | None = None, huge: bool = True) -> str:
    r = rng.random()
    if huge and r < 0.04:
        return "n" * rng.choice((4096, 65536, MiB))
    if ctx is not None and r < 0.3:
        other = ctx.model(rng)
        return rng.choice([other.name, *(s.name for s in other.signatures), *other.labels])
    return rng.choice(_ODD_STRINGS)


def _huge_string(rng: random.Random) -> str:
    return "s" * rng.choice((1000, 65536, 512 * 1024, MiB))


def _mutate_spec(rng: random.Random, ctx: Context, spec: Any) -> str:
    which = rng.randrange(6)
    if which == 0:
        spec.name = _odd_string(rng, ctx)
        return f"model_spec.name={spec.name[:40]!r}"
    if which == 1:
        spec.version.value = rng.choice((*_EDGE_INTS[:16], -(2**63), 2**63 - 1, 99))
        return f"model_spec.version={spec.version.value}"
    if which == 2:
        spec.version_label = _odd_string(rng, ctx)
        return f"model_spec.version_label={spec.version_label[:40]!r}"
    if which == 3:
        spec.signature_name = _odd_string(rng, ctx)
        return f"model_spec.signature_name={spec.signature_name[:40]!r}"
    if which == 4:
        spec.version.value = rng.choice((1, 2, 99))
        spec.version_label = rng.choice(("stable", "canary", "nope"))
        return "model_spec: version and version_label"
    spec.Clear()
    return "model_spec cleared"


def _dtype_name(dtype: int) -> str:
    try:
        return str(protos().types.DataType.Name(dtype))
    except ValueError:
        return str(dtype)


def _odd_shape(rng: random.Random) -> list[int]:
    kind = rng.randrange(7)
    if kind == 0:
        return [0, rng.choice((0, 4))]
    if kind == 1:
        return [rng.choice((-1, -2, -(2**63))), 4]
    if kind == 2:
        return [rng.choice((2**31, 2**40, 2**62, 2**63 - 1)), rng.choice((1, 4, 2**31))]
    if kind == 3:
        return [rng.choice((1, 2))] * rng.randint(30, 100)
    if kind == 4:
        return []
    if kind == 5:
        return [rng.choice((1, 2, 3, 5, 4194305))] + [
            rng.choice((1, 3, 4, 7)) for _ in range(rng.randint(0, 3))
        ]
    return [rng.choice(_EDGE_INTS[:16]) for _ in range(rng.randint(1, 6))]


_VALUE_FIELDS = (
    "float_val", "double_val", "int_val", "string_val", "scomplex_val", "int64_val", "bool_val",
    "dcomplex_val", "half_val", "uint32_val", "uint64_val", "float8_val",
)  # fmt: skip


def _add_values(rng: random.Random, t: Any, name: str, n: int) -> None:
    if name == "float8_val":  # one bytes field, a byte per element
        t.float8_val = rng.randbytes(n)
        return
    target = getattr(t, name)
    if name in ("float_val", "double_val", "scomplex_val", "dcomplex_val"):
        target.extend(rng.choice(_EDGE_FLOATS) for _ in range(n))
    elif name == "string_val":
        target.extend(rng.randbytes(rng.randint(0, 8)) for _ in range(n))
    elif name == "bool_val":
        target.extend(rng.random() < 0.5 for _ in range(n))
    else:
        kind = {
            "int_val": "int32",
            "half_val": "int32",
            "int64_val": "int64",
            "uint32_val": "uint32",
        }.get(name, "uint64")
        lo, hi = _INT_RANGES[kind]
        target.extend(v for v in (rng.choice(_EDGE_INTS) for _ in range(n)) if lo <= v <= hi)


def mutate_tensor(rng: random.Random, t: Any) -> str:
    """One protobuf-aware mutation of a TensorProto."""
    p = protos()
    which = rng.randrange(14)
    if which == 0:
        t.dtype = rng.choice((*p.dtypes, 20, 21, 21, 999, 2**31 - 1, -1, 200, 34))
        return f"dtype={_dtype_name(t.dtype)}"
    if which == 1:
        dims = _odd_shape(rng)
        t.tensor_shape.ClearField("dim")
        for d in dims:
            t.tensor_shape.dim.add(size=d, name=rng.choice(("", "", "n" * 100)))
        return f"shape={dims[:8]}{'...' if len(dims) > 8 else ''} ({len(dims)} dims)"
    if which == 2:
        t.tensor_shape.unknown_rank = True
        return "unknown_rank with dims" if t.tensor_shape.dim else "unknown_rank"
    if which == 3:  # the broadcast form: one value for a huge shape
        for name in (*_VALUE_FIELDS, "tensor_content"):
            t.ClearField(name)
        t.float_val.append(1.0)
        t.dtype = rng.choice((1, 1, 2, 7, 9, 19))
        if t.dtype != 1:
            t.ClearField("float_val")
            _add_values(
                rng,
                t,
                {2: "double_val", 7: "string_val", 9: "int64_val", 19: "half_val"}[t.dtype],
                1,
            )
        dims = rng.choice(
            (
                [2**31, 2**31],
                [10**6, 4],
                [4194305, 1],
                [2**20, 4],
                [2**40],
                [2**16, 2**16],
                [1, 2**62],
            )
        )
        t.tensor_shape.ClearField("dim")
        for d in dims:
            t.tensor_shape.dim.add(size=d)
        return f"broadcast one {_dtype_name(t.dtype)} value to {dims}"
    if which == 4:
        have = len(t.tensor_content)
        n = rng.choice((0, 1, 3, max(have - 1, 0), have + 1, have * 2 + 4, 5 * MiB // 4))
        t.tensor_content = rng.randbytes(n)
        return f"tensor_content {n} bytes"
    if which == 5:
        name = rng.choice(_VALUE_FIELDS)
        _add_values(rng, t, name, rng.choice((1, 3, 4, 100)))
        return f"values in {name}"
    if which == 6:
        for name in _VALUE_FIELDS[:-1]:  # the repeated ones (float8_val is one bytes field)
            if len(getattr(t, name)) > 1:
                del getattr(t, name)[-1]
                return f"one value fewer in {name}"
        t.float_val.extend([1.0] * rng.choice((1, 7, 1000)))
        return "extra float_val"
    if which == 7:
        t.string_val.append(rng.randbytes(rng.choice((1000, 65536, MiB))))
        return f"huge string_val ({len(t.string_val[-1])} bytes)"
    if which == 8:
        t.dtype = 21
        for _ in range(rng.randint(1, 3)):
            v = t.variant_val.add(type_name=rng.choice(("", "tensorflow::TensorList", "x" * 100)))
            v.metadata = rng.randbytes(rng.randint(0, 32))
            for _ in range(rng.randint(0, 2)):
                inner = v.tensors.add(dtype=rng.choice(p.dtypes))
                inner.tensor_shape.dim.add(size=rng.choice((1, -1, 2**40)))
                inner.float_val.append(1.0)
        return "DT_VARIANT variant_val"
    if which == 9:
        t.dtype = 20
        h = t.resource_handle_val.add(
            device="/cpu:0", container=rng.choice(("", "x" * 100)), name="r"
        )
        h.hash_code = rng.choice((0, 2**64 - 1))
        h.maybe_type_name = rng.choice(("", "tensorflow::Var"))
        dts = h.dtypes_and_shapes.add(dtype=rng.choice(p.dtypes))
        dts.shape.dim.add(size=rng.choice((-1, 2**40)))
        return "DT_RESOURCE resource_handle_val"
    if which == 10:
        t.ClearField("tensor_content")
        t.float_val.extend(rng.choice((math.nan, math.inf, -math.inf, 3.4e38)) for _ in range(4))
        return "NaN/inf float_val"
    if which == 11:
        t.version_number = rng.choice((-1, 2**31 - 1, 7))
        return f"version_number={t.version_number}"
    if which == 12:
        t.dtype = rng.choice((2, 3, 9, 19, 10, 8, 18, 14, 22, 23, 4, 6, 17))
        return f"dtype swapped to {_dtype_name(t.dtype)}"
    t.dtype = 7
    for name in (*_VALUE_FIELDS, "tensor_content"):
        t.ClearField(name)
    t.string_val.extend(rng.randbytes(rng.randint(0, 12)) for _ in range(rng.choice((1, 4, 8))))
    return "DT_STRING of junk bytes"


def _mutate_predict(rng: random.Random, ctx: Context, req: Any) -> str:
    which = rng.randrange(10)
    if which < 6 and req.inputs:
        alias = rng.choice(sorted(req.inputs))
        return f"inputs[{alias!r}]: {mutate_tensor(rng, req.inputs[alias])}"
    if which == 6:
        return _mutate_spec(rng, ctx, req.model_spec)
    if which == 7:
        if req.inputs and rng.random() < 0.5:
            alias = rng.choice(sorted(req.inputs))
            t = req.inputs[alias]
            copy = type(t)()
            copy.CopyFrom(t)
            del req.inputs[alias]
            new = rng.choice(("", "y", "x" * 1000, "inputs", "examples", alias.upper()))
            if rng.random() < 0.7:
                req.inputs[new].CopyFrom(copy)
            return (
                f"input {alias!r} renamed to {new[:20]!r}"
                if new in req.inputs
                else f"input {alias!r} removed"
            )
        extra = rng.choice(("extra", "x", "examples", ""))
        req.inputs[extra].dtype = rng.choice((1, 7, 21))
        return f"extra input {extra!r}"
    if which == 8:
        req.output_filter.extend(
            rng.choice((["nope"], ["output_0"] * 3, [""], ["scores", "classes", "x"]))
        )
        return f"output_filter={list(req.output_filter)[:5]}"
    req.inputs.clear()
    return "no inputs"


def mutate_examples(rng: random.Random, inp: Any) -> str:
    """One mutation of a tensorflow.serving.Input (tf.Example list)."""
    ex_pb2 = protos().example
    examples = (
        inp.example_list_with_context.examples
        if inp.HasField("example_list_with_context")
        else inp.example_list.examples
    )
    which = rng.randrange(12)
    if which == 0 and examples:
        ex = rng.choice(examples)
        if ex.features.feature:
            name = rng.choice(sorted(ex.features.feature))
            value = protos().feature.Feature()
            value.CopyFrom(ex.features.feature[name])
            del ex.features.feature[name]
            new = rng.choice(_ODD_STRINGS)
            ex.features.feature[new].CopyFrom(value)
            return f"feature {name!r} renamed to {new[:20]!r}"
    if which == 1 and examples:
        ex = rng.choice(examples)
        f = ex.features.feature[rng.choice((*ex.features.feature, "x"))]
        if rng.random() < 0.5:
            f.bytes_list.value.extend(
                rng.randbytes(rng.randint(0, 8)) for _ in range(rng.randint(0, 3))
            )
            return "feature as bytes_list"
        f.int64_list.value.extend(rng.choice(_EDGE_INTS[:17]) for _ in range(rng.randint(0, 3)))
        return "feature as int64_list"
    if which == 2 and examples:
        ex = rng.choice(examples)
        n = rng.choice((0, 1, 3, 1000))
        for f in ex.features.feature.values():
            f.float_list.value[:] = [0.5] * n
        return f"{n} values per feature"
    if which == 3 and examples:
        for f in rng.choice(examples).features.feature.values():
            f.float_list.value[:] = [
                rng.choice((math.nan, math.inf, -math.inf, 3.4e38)) for _ in f.float_list.value
            ]
        return "NaN/inf feature values"
    if which == 4:
        ex = examples.add() if rng.random() < 0.5 or not examples else rng.choice(examples)
        ex.features.feature["x"].bytes_list.value.append(rng.randbytes(rng.choice((65536, MiB))))
        return "huge bytes feature"
    if which == 5:
        ex = examples.add()
        n = rng.choice((100, 4096, 4097, 5000))
        for i in range(n):
            ex.features.feature[f"f{i}"].float_list.value.append(1.0)
        return f"{n} features in one example"
    if which == 6:
        template = min(examples, key=lambda e: e.ByteSize()) if examples else ex_pb2.Example()
        n = min(rng.choice((1000, 5000, 20000)), 8 * MiB // (template.ByteSize() + 2))
        for _ in range(n):
            examples.add().CopyFrom(template)
        return f"{n} more examples"
    if which == 7:
        del examples[:]
        return "no examples"
    if which == 8:
        ctx_ex = inp.example_list_with_context.context
        base = [e.SerializeToString() for e in examples]
        inp.example_list_with_context.ClearField("examples")
        for b in base:
            inp.example_list_with_context.examples.add().ParseFromString(b)
        f = ctx_ex.features.feature[rng.choice(("x", "y", ""))]
        f.int64_list.value.extend([1, 2, 3][: rng.randint(0, 3)])
        return "context with an odd feature"
    if which == 9:
        inp.Clear()
        return "input unset"
    if which == 10:
        examples.add()
        examples.add().features.SetInParent()
        return "empty examples"
    if examples:
        rng.choice(examples).features.feature[rng.choice(("x", "z"))].Clear()
    return "feature without a kind"


def _mutate_example_request(rng: random.Random, ctx: Context, req: Any) -> str:
    if rng.random() < 0.3:
        return _mutate_spec(rng, ctx, req.model_spec)
    return mutate_examples(rng, req.input)


def _mutate_multi(rng: random.Random, ctx: Context, req: Any) -> str:
    which = rng.randrange(6)
    if which == 0:
        del req.tasks[:]
        return "no tasks"
    if which == 1:
        for _ in range(rng.choice((1, 3, 10))):
            task = req.tasks.add(
                method_name=rng.choice(
                    (
                        "tensorflow/serving/classify",
                        "tensorflow/serving/regress",
                        "tensorflow/serving/predict",
                        "",
                        "foo",
                    )
                )
            )
            task.model_spec.name = ctx.model(rng).name
            task.model_spec.signature_name = _odd_string(rng, ctx) if rng.random() < 0.5 else ""
        return f"{len(req.tasks)} tasks"
    if which == 2 and req.tasks:
        task = rng.choice(req.tasks)
        task.method_name = _odd_string(rng)
        return f"method_name={task.method_name[:30]!r}"
    if which == 3 and req.tasks:
        return "task " + _mutate_spec(rng, ctx, rng.choice(req.tasks).model_spec)
    if which == 4 and req.tasks:
        req.tasks.add().CopyFrom(req.tasks[0])
        return "duplicate task"
    return mutate_examples(rng, req.input)


def _mutate_metadata(rng: random.Random, ctx: Context, req: Any) -> str:
    if rng.random() < 0.5:
        return _mutate_spec(rng, ctx, req.model_spec)
    req.ClearField("metadata_field")
    req.metadata_field.extend(
        rng.choice(
            (
                [],
                ["foo"],
                ["signature_def"] * 50,
                ["signature_def", "foo"],
                [_huge_string(rng)],
                [""],
            )
        )
    )
    return f"metadata_field={[f[:20] for f in req.metadata_field][:3]}"


def _mutate_spec_only(rng: random.Random, ctx: Context, req: Any) -> str:
    return _mutate_spec(rng, ctx, req.model_spec)


def _mutate_tfs_reload(rng: random.Random, ctx: Context, req: Any) -> str:
    configs = req.config.model_config_list.config
    which = rng.randrange(7)
    if which == 0:
        for _ in range(rng.choice((10, 50))):
            configs.add(name=_odd_string(rng, huge=False), base_path=_odd_string(rng, huge=False))
        return f"{len(configs)} model configs"
    if which == 1 and configs:
        c = rng.choice(configs)
        c.base_path = rng.choice(("", "/", "relative/path", "/proc/self", "\x00", "/tmp"))
        return f"base_path={c.base_path!r}"
    if which == 2 and configs:
        c = rng.choice(configs)
        c.model_platform = rng.choice(("", "foo", "tensorflow\x00"))
        c.model_type = rng.choice((0, 1, 2, 99))
        return "model_platform/model_type"
    if which == 3 and configs:
        policy = rng.choice(configs).model_version_policy
        pick = rng.randrange(3)
        if pick == 0:
            policy.specific.versions.extend(rng.choice(_EDGE_INTS[:17]) for _ in range(3))
        elif pick == 1:
            policy.latest.num_versions = rng.choice((0, 2**32 - 1))
        else:
            policy.all.SetInParent()
        return "model_version_policy"
    if which == 4 and configs:
        c = rng.choice(configs)
        c.version_labels[_odd_string(rng)] = rng.choice(_EDGE_INTS[:17])
        return "version_labels"
    if which == 5:
        req.config.custom_model_config.type_url = _odd_string(rng)
        req.config.custom_model_config.value = rng.randbytes(16)
        return "custom_model_config"
    req.metric_names.extend(_odd_string(rng) for _ in range(3))
    return "metric_names"


def _mutate_admin(rng: random.Random, ctx: Context, req: Any) -> str:
    fields = req.DESCRIPTOR.fields_by_name
    if "action" in fields and rng.random() < 0.6:
        which = rng.randrange(3)
        if which == 0:
            req.action = rng.choice((0, 1, 2, 3, 4, 5, 6, 7, 8, 99, -1, 2**31 - 1))
            return f"action={req.action}"
        if which == 1:
            req.action = 4
            req.weight = rng.choice(_EDGE_FLOATS)
            return f"SET_WEIGHT weight={req.weight}"
        req.reason = rng.choice((_huge_string(rng), *_ODD_STRINGS))
        return "odd reason"
    if "model" in fields:
        req.model = _odd_string(rng, ctx)
        return f"model={req.model[:30]!r}"
    return generic_mutation(rng, req)


def _odd_v2_shape(rng: random.Random) -> list[int]:
    return _odd_shape(rng)


def mutate_infer(rng: random.Random, ctx: Context, req: Any) -> str:
    """One mutation of a v2 ModelInferRequest."""
    which = rng.randrange(13)
    inputs = req.inputs
    if which == 0 and inputs:
        t = rng.choice(inputs)
        t.datatype = rng.choice(_V2_DATATYPES)
        return f"datatype={t.datatype[:10]!r}"
    if which == 1 and inputs:
        t = rng.choice(inputs)
        t.ClearField("shape")
        t.shape.extend(_odd_v2_shape(rng))
        return f"shape={list(t.shape)[:8]} ({len(t.shape)} dims)"
    if which == 2 and inputs:
        t = rng.choice(inputs)
        name = rng.choice(
            (
                "bool_contents",
                "int_contents",
                "int64_contents",
                "uint_contents",
                "uint64_contents",
                "fp32_contents",
                "fp64_contents",
                "bytes_contents",
            )
        )
        target = getattr(t.contents, name)
        n = rng.choice((1, 3, 100))
        if name == "bool_contents":
            target.extend([True] * n)
        elif name == "bytes_contents":
            target.extend(rng.randbytes(rng.randint(0, 9)) for _ in range(n))
        elif name in ("fp32_contents", "fp64_contents"):
            target.extend(rng.choice(_EDGE_FLOATS) for _ in range(n))
        else:
            lo, hi = _INT_RANGES[
                {"int_contents": "int32", "uint_contents": "uint32", "int64_contents": "int64"}.get(
                    name, "uint64"
                )
            ]
            target.extend(v for v in (rng.choice(_EDGE_INTS) for _ in range(n)) if lo <= v <= hi)
        return f"values in {name}"
    if which == 3:
        if req.raw_input_contents and rng.random() < 0.6:
            i = rng.randrange(len(req.raw_input_contents))
            n = len(req.raw_input_contents[i])
            req.raw_input_contents[i] = rng.randbytes(
                rng.choice((0, 1, max(n - 1, 0), n + 1, n * 3, 5 * MiB // 4))
            )
            return f"raw_input_contents[{i}] {len(req.raw_input_contents[i])} bytes (was {n})"
        req.raw_input_contents.extend(
            rng.randbytes(rng.choice((0, 4, 16))) for _ in range(rng.randint(1, 3))
        )
        return f"{len(req.raw_input_contents)} raw_input_contents for {len(inputs)} inputs"
    if which == 4 and inputs:
        t = rng.choice(inputs)
        t.datatype = "BYTES"
        t.ClearField("contents")
        bad = rng.choice(
            (
                b"\xff\xff\xff\xff",
                b"\x05\x00\x00\x00ab",
                b"\x01\x00",
                struct.pack("<I", 2**31) + b"x",
            )
        )
        if req.raw_input_contents:
            req.raw_input_contents[0] = bad
        else:
            t.contents.bytes_contents.append(bad)
            req.raw_input_contents.append(bad)
        return f"BYTES raw contents {bad[:8]!r}"
    if which == 5 and inputs:
        t = rng.choice(inputs)
        t.datatype = rng.choice(("BF16", "FP16"))
        n = min(math.prod(max(d, 0) for d in t.shape), 10**6)
        t.ClearField("contents")
        del req.raw_input_contents[:]
        req.raw_input_contents.append(rng.randbytes(n * 2 + rng.choice((0, 0, 1))))
        return f"{t.datatype} raw"
    if which == 6:
        op = rng.randrange(4)
        if op == 0 and inputs:
            inputs.add().CopyFrom(inputs[0])
            return "duplicate input"
        if op == 1 and inputs:
            del inputs[rng.randrange(len(inputs))]
            return "input removed"
        if op == 2 and inputs:
            rng.choice(inputs).name = rng.choice(("", "y", "x" * 1000, "inputs"))
            return "input renamed"
        inputs.add(name="extra", datatype="FP32", shape=[1]).contents.fp32_contents.append(1.0)
        return "extra input"
    if which == 7:
        for _ in range(rng.randint(1, 3)):
            out = req.outputs.add(name=rng.choice(("nope", "", "output_0", "scores", "x" * 500)))
            if rng.random() < 0.5:
                _odd_parameter(rng, out.parameters)
        return f"outputs={[o.name[:10] for o in req.outputs]}"
    if which == 8:
        _odd_parameter(rng, req.parameters)
        if inputs and rng.random() < 0.5:
            _odd_parameter(rng, rng.choice(inputs).parameters)
        return "odd parameters"
    if which == 9:
        req.model_version = rng.choice(
            (
                "-1",
                "0",
                "abc",
                "99999999999999999999999",
                "1.0",
                " 1",
                "stable",
                "canary",
                "0x1",
                "\uff11",
            )
        )
        return f"model_version={req.model_version!r}"
    if which == 10:
        req.id = rng.choice(("", "x" * 129, _huge_string(rng), "id\n"))
        return f"id of {len(req.id)} chars"
    if which == 11:
        req.model_name = _odd_string(rng, ctx)
        return f"model_name={req.model_name[:30]!r}"
    if inputs and req.raw_input_contents and rng.random() < 0.5:
        t = rng.choice(inputs)
        t.contents.fp32_contents.append(1.0)
        return "raw and typed contents"
    if inputs:
        t = rng.choice(inputs)
        t.ClearField("contents")
        return "input without contents"
    return "no inputs"


def _odd_parameter(rng: random.Random, params: Any) -> None:
    key = rng.choice(
        (
            "binary_data_output",
            "classification",
            "binary_data",
            "sequence_id",
            "priority",
            "timeout",
            "headers",
            "",
            "x" * 100,
        )
    )
    value = params[key]
    kind = rng.randrange(5)
    if kind == 0:
        value.bool_param = rng.random() < 0.5
    elif kind == 1:
        value.int64_param = rng.choice(_EDGE_INTS[:17])
    elif kind == 2:
        value.string_param = _odd_string(rng)
    elif kind == 3:
        value.double_param = rng.choice(_EDGE_FLOATS)
    else:
        value.uint64_param = rng.choice((0, 2**64 - 1))


def _mutate_named(rng: random.Random, ctx: Context, req: Any) -> str:
    if rng.random() < 0.5:
        req.name = _odd_string(rng, ctx)
        return f"name={req.name[:30]!r}"
    req.version = rng.choice(
        ("-1", "0", "abc", "99999999999999999999999", "1", "2", "stable", " 1", "1.5")
    )
    return f"version={req.version!r}"


def _generic_only(rng: random.Random, ctx: Context, msg: Any) -> str:
    return generic_mutation(rng, msg)


_TARGETED: dict[str, Callable[[random.Random, Context, Any], str]] = {
    PS + "Predict": _mutate_predict,
    PS + "Classify": _mutate_example_request,
    PS + "Regress": _mutate_example_request,
    PS + "MultiInference": _mutate_multi,
    PS + "GetModelMetadata": _mutate_metadata,
    MS + "GetModelStatus": _mutate_spec_only,
    MS + "HandleReloadConfigRequest": _mutate_tfs_reload,
    **{
        ADMIN + n: _mutate_admin
        for n in (
            "GetStatus",
            "GetFeatureSkew",
            "GetDivergenceSummary",
            "GetRollout",
            "UpdateRollout",
        )
    },
    OIP + "ModelInfer": mutate_infer,
    OIP + "ModelMetadata": _mutate_named,
    OIP + "ModelReady": _mutate_named,
}


def _int_kind(f: Any) -> str | None:
    t = f.type
    if t in (f.TYPE_INT32, f.TYPE_SINT32, f.TYPE_SFIXED32):
        return "int32"
    if t in (f.TYPE_UINT32, f.TYPE_FIXED32):
        return "uint32"
    if t in (f.TYPE_INT64, f.TYPE_SINT64, f.TYPE_SFIXED64):
        return "int64"
    if t in (f.TYPE_UINT64, f.TYPE_FIXED64):
        return "uint64"
    return None


def _slots(msg: Any, depth: int = 0) -> Iterator[tuple[Any, Any]]:
    """(message, field) pairs reachable from `msg`: its fields and those of its set
    submessages (repeated and map values included), up to a depth."""
    for f in msg.DESCRIPTOR.fields:
        yield msg, f
        if f.type != f.TYPE_MESSAGE or depth > 6:
            continue
        if f.message_type.GetOptions().map_entry:
            value_field = f.message_type.fields_by_name["value"]
            if value_field.type == value_field.TYPE_MESSAGE:
                for v in getattr(msg, f.name).values():
                    yield from _slots(v, depth + 1)
        elif f.is_repeated:
            for v in getattr(msg, f.name):
                yield from _slots(v, depth + 1)
        elif msg.HasField(f.name):
            yield from _slots(getattr(msg, f.name), depth + 1)


def _scalar(rng: random.Random, f: Any, huge: bool = True) -> Any:
    kind = _int_kind(f)
    if kind is not None:
        lo, hi = _INT_RANGES[kind]
        return rng.choice([v for v in _EDGE_INTS if lo <= v <= hi])
    if f.type in (f.TYPE_FLOAT, f.TYPE_DOUBLE):
        return rng.choice(_EDGE_FLOATS)
    if f.type == f.TYPE_BOOL:
        return rng.random() < 0.5
    if f.type == f.TYPE_ENUM:
        return rng.choice([v.number for v in f.enum_type.values] + [99, -1, 2**31 - 1])
    if f.type == f.TYPE_STRING:
        return _odd_string(rng, huge=huge)
    return rng.randbytes(rng.choice((0, 1, 8, 100, 4096) if huge else (0, 1, 8)))


def generic_mutation(rng: random.Random, msg: Any) -> str:
    """Set one field anywhere in `msg` (walked by descriptor) to an edge value, clear it,
    or add to it."""
    slots = list(_slots(msg))
    if not slots:
        return "generic: nothing to mutate"
    for _ in range(8):
        owner, f = rng.choice(slots)
        where = f"{owner.DESCRIPTOR.name}.{f.name}"
        try:
            if f.type == f.TYPE_MESSAGE and f.message_type.GetOptions().map_entry:
                mapping = getattr(owner, f.name)
                key_f = f.message_type.fields_by_name["key"]
                value_f = f.message_type.fields_by_name["value"]
                key = _scalar(rng, key_f)
                if value_f.type == value_f.TYPE_MESSAGE:
                    mapping[key].SetInParent()
                else:
                    mapping[key] = _scalar(rng, value_f)
                return f"generic: {where}[{str(key)[:20]!r}] added"
            if f.is_repeated:
                container = getattr(owner, f.name)
                if rng.random() < 0.3:
                    owner.ClearField(f.name)
                    return f"generic: {where} cleared"
                n = rng.choice((1, 2, 10, 1000))
                if f.type == f.TYPE_MESSAGE:
                    for _ in range(n):
                        container.add()
                else:
                    container.extend(_scalar(rng, f, huge=False) for _ in range(n))
                return f"generic: {n} added to {where}"
            if f.type == f.TYPE_MESSAGE:
                if owner.HasField(f.name) and rng.random() < 0.5:
                    owner.ClearField(f.name)
                    return f"generic: {where} cleared"
                getattr(owner, f.name).SetInParent()
                return f"generic: {where} set empty"
            value = _scalar(rng, f)
            setattr(owner, f.name, value)
            shown = value[:20] if isinstance(value, str | bytes) else value
            return f"generic: {where}={shown!r}"
        except (ValueError, TypeError):
            continue  # a closed enum's unknown number, an out-of-range value
    return "generic: no settable field"


# --- invalid UTF-8, byte-level mutations, nesting -------------------------------------------

_BAD_UTF8 = (
    b"\xff",
    b"\xc3\x28",
    b"\xa0\xa1",
    b"\xe2\x28\xa1",
    b"\xf0\x90\x28\xbc",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
)


def inject_invalid_utf8(rng: random.Random, msg: Any) -> tuple[bytes, str]:
    """`msg` serialized with invalid UTF-8 in one string field (a map key or value
    included): the field is set to a marker of the bad bytes' length, then replaced."""
    strings: list[tuple[Any, Any]] = []
    for owner, f in _slots(msg):
        if f.type == f.TYPE_STRING or (
            f.type == f.TYPE_MESSAGE
            and f.message_type.GetOptions().map_entry
            and f.message_type.fields_by_name["key"].type == f.TYPE_STRING
            and len(getattr(owner, f.name))
        ):
            strings.append((owner, f))
    if not strings:
        payload = msg.SerializeToString()
        return payload + b"\x0a\x02" + rng.choice(
            _BAD_UTF8[1:3]
        ), "no string field: bad UTF-8 as field 1"
    owner, f = rng.choice(strings)
    bad = b"".join(rng.choice(_BAD_UTF8) for _ in range(rng.randint(1, 3)))
    prefix = "".join(rng.choice("abc") for _ in range(rng.randint(0, 4)))
    marker = "\x01" * len(bad)
    text = prefix + marker
    where = f"{owner.DESCRIPTOR.name}.{f.name}"
    if f.type == f.TYPE_MESSAGE:  # a map<string, ...>: rename one key
        mapping = getattr(owner, f.name)
        key = rng.choice(sorted(mapping))
        value_f = f.message_type.fields_by_name["value"]
        if value_f.type == value_f.TYPE_MESSAGE:
            mapping[text].CopyFrom(mapping[key])
        else:
            mapping[text] = mapping[key]
        del mapping[key]
        where += " key"
    elif f.is_repeated:
        container = getattr(owner, f.name)
        if container and rng.random() < 0.5:
            container[rng.randrange(len(container))] = text
        else:
            container.append(text)
    else:
        setattr(owner, f.name, text)
    payload = msg.SerializeToString()
    return payload.replace(marker.encode(), bad, 1), f"invalid UTF-8 {bad!r} in {where}"


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _ld(field_number: int, body: bytes) -> bytes:
    return _varint(field_number << 3 | 2) + _varint(len(body)) + body


def _unknown_bytes_field(total: int) -> bytes:
    """An unknown length-delimited field (number 9999) of about `total` bytes."""
    return _ld(9999, b"\0" * max(total - 8, 0))


def byte_mutations(rng: random.Random, payload: bytes, donor: bytes) -> tuple[bytes, list[str]]:
    """One to three byte-level mutations of a serialized message."""
    data = bytearray(payload)
    notes = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        which = rng.randrange(9)
        n = len(data)
        if which == 0 and n:
            k = rng.choice((1, 1, 2, 8))
            for _ in range(k):
                i = rng.randrange(n)
                data[i] ^= 1 << rng.randrange(8)
            notes.append(f"{k} bit flips")
        elif which == 1 and n:
            cut = rng.randrange(n)
            del data[cut:]
            notes.append(f"truncated to {cut} of {n} bytes")
        elif which == 2:
            i = rng.randint(0, n)
            data[i:i] = rng.randbytes(rng.randint(1, 16))
            notes.append(f"random bytes inserted at {i}")
        elif which == 3 and n:
            i = rng.randrange(n)
            del data[i : i + rng.randint(1, 16)]
            notes.append(f"bytes deleted at {i}")
        elif which == 4 and n:
            i = rng.randrange(n)
            j = min(n, i + rng.randint(1, 64))
            data[j:j] = data[i:j] * rng.choice((1, 2, 10))
            notes.append(f"bytes {i}..{j} duplicated")
        elif which == 5 and n:
            i = rng.randrange(n)
            data[i] = rng.choice((0xFF, 0x80, 0x00, 0x7F))
            notes.append(f"byte {i} set to {data[i]:#x}")
        elif which == 6:
            cut = rng.randint(0, n)
            j = rng.randint(0, len(donor))
            data = data[:cut] + bytearray(donor[j:])
            notes.append(f"spliced at {cut} with another message's tail")
        elif which == 7:
            number = rng.choice((1, 2, 3, 5, 7, 15, 1000, 2**29 - 1, 0))
            wire = rng.randrange(8)
            junk = _varint(number << 3 | wire)
            if wire == 2:
                junk += _varint(rng.choice((0, 1, 2**31, 2**62)))
            junk += rng.randbytes(rng.randint(0, 8))
            data += junk
            notes.append(f"junk field {number} wire type {wire}")
        else:
            data += _varint(rng.choice((2**63, 2**64 - 1)))[:-1]
            notes.append("unterminated varint appended")
    return bytes(data), notes


def nested(rng: random.Random, method: str, payload: bytes) -> tuple[bytes, str]:
    """Deep nesting: unknown groups (any message), or, for Predict, a TensorProto whose
    variant_val holds a tensor whose variant_val ... `depth` levels."""
    depth = rng.choice((10, 64, 99, 100, 101, 150, 1000, 10000, 100000))
    if method == PS + "Predict" and rng.random() < 0.5:
        depth = min(depth, 5000)
        t = b""
        for _ in range(depth):
            variant = _ld(3, t)  # VariantTensorDataProto.tensors
            t = _varint(1 << 3) + _varint(21) + _ld(15, variant)  # dtype=DT_VARIANT, variant_val
        entry = _ld(1, b"x") + _ld(2, t)
        return _ld(1, _ld(1, b"m")) + _ld(2, entry), f"TensorProto variant chain, depth {depth}"
    number = rng.choice((1, 2, 5, 1000, 4242))
    start = _varint(number << 3 | 3)
    end = _varint(number << 3 | 4)
    closed = rng.random() < 0.5
    body = start * depth + (end * depth if closed else b"")
    return payload + body, f"{depth} nested groups (field {number}{', closed' if closed else ''})"


# --- running -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    index: int
    method: str
    mutation: str
    code: str
    details: str
    expect_unauthenticated: bool = False


@dataclass
class Report:
    """What a fuzz run saw."""

    seed: int
    requests: int = 0
    elapsed: float = 0.0
    codes: Counter[str] = field(default_factory=Counter)
    per_method: dict[str, Counter[str]] = field(default_factory=dict)
    findings: list[Outcome] = field(default_factory=list)
    """INTERNAL / UNKNOWN answers (REST: HTTP 500, or the connection closed unanswered)."""
    empty_details: list[Outcome] = field(default_factory=list)
    auth_violations: list[Outcome] = field(default_factory=list)
    """Mutating calls without the token not answered UNAUTHENTICATED."""
    unauthenticated_checked: int = 0
    transport_errors: Counter[str] = field(default_factory=Counter)

    def add(self, o: Outcome) -> None:
        self.requests += 1
        self.codes[o.code] += 1
        self.per_method.setdefault(o.method, Counter())[o.code] += 1
        if o.code in FINDING_CODES:
            self.findings.append(o)
        if (
            o.code not in ("OK", "HTTP_200")
            and not o.details.strip()
            and not o.method.startswith(HEALTH)  # grpc's stock health servicer: bare NOT_FOUND
        ):
            self.empty_details.append(o)
        if o.expect_unauthenticated:
            self.unauthenticated_checked += 1
            if o.code != "UNAUTHENTICATED":
                self.auth_violations.append(o)

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def clean(self) -> bool:
        return not (self.findings or self.empty_details or self.auth_violations)

    def summary(self, title: str = "gRPC", limit: int = 30) -> str:
        lines = [
            f"{title}: {self.requests} requests in {self.elapsed:.1f} s "
            f"({self.rate:.0f} req/s), seed {self.seed}",
            "  status codes: " + ", ".join(f"{c} {n}" for c, n in self.codes.most_common()),
            "  per RPC:",
        ]
        for method in sorted(self.per_method):
            counts = self.per_method[method]
            shown = ", ".join(f"{c} {n}" for c, n in counts.most_common())
            lines.append(f"    {method.lstrip('/')}: {sum(counts.values())} ({shown})")
        if self.transport_errors:
            lines.append(
                "  transport errors: "
                + ", ".join(f"{k} {n}" for k, n in self.transport_errors.most_common())
            )
        lines.append(
            f"  INTERNAL/UNKNOWN{'/HTTP 500/DISCONNECTED' if title == 'REST' else ''}: "
            f"{len(self.findings)}"
        )
        lines.extend(
            f"    {n}x {o.method} -> {o.code}: {o.details[:300]}"
            f"  (e.g. #{o.index} [{o.mutation[:300]}])"
            for n, o in distinct(self.findings)[:limit]
        )
        lines.append(f"  non-OK answers without details: {len(self.empty_details)}")
        lines.extend(
            f"    #{o.index} {o.method} [{o.mutation[:200]}] -> {o.code}"
            for o in self.empty_details[:limit]
        )
        if self.unauthenticated_checked or title != "REST":
            lines.append(
                f"  mutating calls without the token: {self.unauthenticated_checked}, "
                f"not UNAUTHENTICATED: {len(self.auth_violations)}"
            )
            lines.extend(
                f"    #{o.index} {o.method} [{o.mutation[:200]}] -> {o.code}: {o.details[:200]}"
                for o in self.auth_violations[:limit]
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        def rows(items: list[Outcome]) -> list[dict[str, Any]]:
            return [o.__dict__ for o in items]

        return {
            "seed": self.seed,
            "requests": self.requests,
            "elapsed_s": self.elapsed,
            "rate_rps": self.rate,
            "codes": dict(self.codes),
            "per_method": {m: dict(c) for m, c in self.per_method.items()},
            "findings": rows(self.findings),
            "empty_details": rows(self.empty_details),
            "auth_violations": rows(self.auth_violations),
            "unauthenticated_checked": self.unauthenticated_checked,
            "transport_errors": dict(self.transport_errors),
        }


CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", 64 * MiB),
)


async def run_cases(
    target: str,
    todo: Iterable[Case],
    seed: int = 0,
    concurrency: int = 16,
    timeout: float = 10.0,
    progress: Callable[[Report], None] | None = None,
) -> Report:
    """Send `todo` to `target` (grpc.aio, `concurrency` calls in flight, each with
    `timeout`), recording each answer's status code and details."""
    report = Report(seed)
    source = iter(todo)
    started = time.perf_counter()
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        calls: dict[str, Any] = {}

        async def worker() -> None:
            for case in source:
                call = calls.get(case.method)
                if call is None:
                    call = calls[case.method] = channel.unary_unary(case.method)
                try:
                    await call(case.payload, timeout=timeout, metadata=case.metadata)
                    code, details = "OK", ""
                except grpc.aio.AioRpcError as exc:
                    code, details = exc.code().name, exc.details() or ""
                report.add(
                    Outcome(
                        case.index,
                        case.method,
                        case.mutation,
                        code,
                        details,
                        case.expect_unauthenticated,
                    )
                )
                if progress is not None and report.requests % 1000 == 0:
                    progress(report)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    report.elapsed = time.perf_counter() - started
    return report


async def fuzz(
    target: str,
    count: int,
    seed: int = 0,
    models: Sequence[str] = ("m",),
    examples: Mapping[str, tuple[str, int]] | None = None,
    token: str | None = None,
    reload_rate: float = 0.0,
    concurrency: int = 16,
    timeout: float = 10.0,
    start: int = 0,
    progress: Callable[[Report], None] | None = None,
) -> Report:
    """Discover `models` at `target`, then send cases `start .. start+count-1` of `seed`."""
    ctx = await context_for(target, models, examples or {}, token, reload_rate)
    return await run_cases(
        target, cases(seed, count, ctx, start), seed, concurrency, timeout, progress
    )


async def context_for(
    target: str,
    models: Sequence[str],
    examples: Mapping[str, tuple[str, int]],
    token: str | None = None,
    reload_rate: float = 0.0,
) -> Context:
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        found = await discover(channel, models, examples)
    return Context(found, token, reload_rate)


# --- REST ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestCase:
    index: int
    method: str
    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...]
    mutation: str


def _json_rows(rng: random.Random, model: ModelInfo, rows: int) -> tuple[dict[str, Any], list[str]]:
    sig = model.default
    if sig is None or (sig.takes_examples and model.example is None):
        return {"instances": [[1.0, 2.0, 3.0, 4.0]]}, ["instances"]
    if sig.takes_examples and model.example is not None:
        feature = model.example
        examples = [
            {feature[0]: [round(rng.uniform(-3, 3), 3) for _ in range(feature[1])]}
            for _ in range(rows)
        ]
        return {"examples": examples}, ["examples"]
    cols = {}
    for spec in sig.inputs:
        shape = _shape_of(spec, rows)
        cols[spec.alias] = _values(rng, spec, shape, model).tolist()
    if len(cols) == 1 and rng.random() < 0.5:
        return {"instances": next(iter(cols.values()))}, ["instances (row)"]
    if rng.random() < 0.5:
        return {"inputs": cols}, ["inputs (columnar)"]
    instances = [{k: v[i] for k, v in cols.items()} for i in range(rows)]
    return {"instances": instances}, ["instances (named rows)"]


def _odd_json(rng: random.Random) -> Any:
    kind = rng.randrange(14)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return _odd_string(rng)
    if kind == 3:
        return rng.choice((1e308, -0.0, 2**70, -(2**64), 1.5, 0))
    if kind == 4:
        return []
    if kind == 5:
        return {}
    if kind == 6:
        out: Any = 1.0
        for _ in range(rng.choice((50, 500))):
            out = [out]
        return out
    if kind == 7:
        return {"b64": rng.choice(("!!!", "", "AAAA", "====", "QUJD" * 1000))}
    if kind == 8:
        return [1.0] * rng.choice((1000, 100000))
    if kind == 9:
        return [[1.0, 2.0], [3.0]]
    if kind == 10:
        return math.nan
    if kind == 11:
        return "\ud800"  # a lone surrogate, written as its \u escape
    if kind == 12:
        return [{"x": [1.0]}, [1.0]]
    return {"b64": "AAAA", "extra": 1}


def _mutate_json(rng: random.Random, doc: Any) -> str:
    """Replace, delete or add one node somewhere in a JSON document."""
    nodes: list[tuple[Any, Any, str]] = []

    def walk(node: Any, path: str, depth: int) -> None:
        if depth > 5:
            return
        if isinstance(node, dict):
            for k, v in list(node.items()):
                nodes.append((node, k, f"{path}.{k}"))
                walk(v, f"{path}.{k}", depth + 1)
        elif isinstance(node, list):
            for i, v in enumerate(node[:4]):
                nodes.append((node, i, f"{path}[{i}]"))
                walk(v, f"{path}[{i}]", depth + 1)

    walk(doc, "", 0)
    if not nodes or rng.random() < 0.15:
        if isinstance(doc, dict):
            key = rng.choice(
                (
                    "signature_name",
                    "instances",
                    "inputs",
                    "examples",
                    "context",
                    "outputs",
                    "parameters",
                    "id",
                    "unknown",
                    "",
                )
            )
            doc[key] = _odd_json(rng)
            return f"{key} = odd value"
        return "no node"
    parent, key, path = rng.choice(nodes)
    if rng.random() < 0.2:
        del parent[key]
        return f"{path} removed"
    parent[key] = _odd_json(rng)
    return f"{path} = {json.dumps(parent[key], allow_nan=True)[:40]}"


def _v2_body(rng: random.Random, model: ModelInfo, rows: int) -> dict[str, Any]:
    sig = model.default
    inputs = []
    for spec in sig.inputs if sig else ():
        shape = _shape_of(spec, rows)
        values = _values(rng, spec, shape, model)
        data: Any = values.reshape(-1).tolist()
        if spec.dtype == 7:
            data = [v.decode("latin-1") for v in data]
        inputs.append(
            {
                "name": spec.alias,
                "shape": shape,
                "datatype": _V2_OF.get(spec.dtype, "FP32"),
                "data": data,
            }
        )
    body: dict[str, Any] = {"inputs": inputs}
    if rng.random() < 0.2:
        body["id"] = rng.choice(("v2", "v2", "", "id\n", "\x00", "x" * 129, "é", "a b"))
    return body


def make_rest_case(seed: int, index: int, ctx: Context) -> RestCase:
    """REST case `index` of `seed`."""
    rng = random.Random(f"rest/{seed}/{index}")
    model = ctx.model(rng)
    name = model.name
    notes: list[str] = []
    if rng.random() < 0.1:
        name = rng.choice(("nope", "", "%ff", "..", "n" * 10000, "m%2Fx", "m:predict", "é"))
        notes.append(f"model {name[:20]!r}")
    where = ""
    r = rng.random()
    if r < 0.15 and model.versions:
        where = (
            f"/versions/{rng.choice((*model.versions, -1, 0, 99, 'abc', '99999999999999999999'))}"
        )
    elif r < 0.25:
        where = f"/labels/{rng.choice((*model.labels, 'nope', '', '%00'))}"
    rows = rng.choice((1, 1, 2, 4))
    api = rng.choices(("v1", "v2", "get"), weights=(50, 40, 10))[0]
    method = "POST"
    doc: Any
    if api == "v1":
        verb = rng.choices(
            (":predict", ":classify", ":regress", ":foo", ""), weights=(60, 15, 15, 5, 5)
        )[0]
        if verb in (":classify", ":regress") and model.example is not None:
            feature = model.example
            doc = {"examples": [{feature[0]: [0.5] * feature[1]} for _ in range(rows)]}
            notes.append(verb)
        else:
            doc, more = _json_rows(rng, model, rows)
            notes += more
        if rng.random() < 0.2:
            doc["signature_name"] = rng.choice([*(s.name for s in model.signatures), "nope", ""])
        path = f"/v1/models/{name}{where}{verb}"
    elif api == "v2":
        doc = _v2_body(rng, model, rows)
        if doc.get("id", "v2") != "v2":
            notes.append(f"id={doc['id'][:20]!r}")
        version = where.split("/")[-1] if where.startswith("/versions") else ""
        path = f"/v2/models/{name}{f'/versions/{version}' if version else ''}/infer"
        notes.append("v2 infer")
    else:
        method = "GET"
        doc = None
        path = rng.choice(
            (
                f"/v1/models/{name}{where}",
                f"/v1/models/{name}{where}/metadata",
                f"/v2/models/{name}",
                f"/v2/models/{name}/ready",
                "/v2",
                "/v2/health/ready",
                "/v1/models",
            )
        )
    style = rng.choices(("valid", "json", "text", "raw"), weights=(10, 60, 20, 10))[0]
    headers: list[tuple[str, str]] = [("x-request-id", f"fuzz-rest-{seed}-{index}")]
    if doc is not None and style == "json":
        for _ in range(rng.choice((1, 1, 2, 3))):
            notes.append(_mutate_json(rng, doc))
    body = b"" if doc is None else json.dumps(doc, allow_nan=True).encode()
    if style == "text" and body:
        body, more = byte_mutations(rng, body, json.dumps(_v2_body(rng, model, 1)).encode())
        notes.extend(more)
        if rng.random() < 0.3:
            i = rng.randint(0, len(body))
            body = body[:i] + rng.choice(_BAD_UTF8) + body[i:]
            notes.append("invalid UTF-8")
    elif style == "raw":
        kind = rng.randrange(4)
        if kind == 0:
            body = rng.randbytes(rng.choice((0, 1, 100, 10000)))
            notes.append(f"random {len(body)} bytes")
        elif kind == 1:
            depth = rng.choice((1000, 100000, 1000000))
            body = b'{"instances": ' + b"[" * depth + b"1" + b"]" * depth + b"}"
            notes.append(f"JSON nested {depth} deep")
        elif kind == 2:
            body = b'{"a":' * 10000 + b"1" + b"}" * 10000
            notes.append("JSON objects nested 10000 deep")
        else:
            body = json.dumps([doc]).encode() if doc is not None else b"[]"
            notes.append("top level array")
    if api == "v2" and rng.random() < 0.1:
        headers.append(
            (
                "Inference-Header-Content-Length",
                rng.choice(
                    (
                        "-1",
                        "0",
                        "abc",
                        str(len(body) + 10),
                        str(len(body) // 2),
                        "99999999999999999999",
                    )
                ),
            )
        )
        notes.append(f"Inference-Header-Content-Length {headers[-1][1]}")
    if rng.random() < 0.05:
        headers.append(
            (
                "Content-Type",
                rng.choice(
                    (
                        "text/plain",
                        "application/json; charset=latin-1",
                        "multipart/form-data",
                        "application/octet-stream",
                    )
                ),
            )
        )
    if rng.random() < 0.03:
        method = rng.choice(("PUT", "DELETE", "GET", "PATCH"))
        notes.append(f"method {method}")
    return RestCase(
        index,
        method,
        path,
        body,
        tuple(headers),
        f"{style}: {'; '.join(notes)}",
    )


async def run_rest(
    base_url: str,
    todo: Iterable[RestCase],
    seed: int = 0,
    concurrency: int = 16,
    timeout: float = 10.0,
) -> Report:
    """Send REST cases; a status is recorded as ``HTTP_<n>``, an HTTP 500 is a finding."""
    import aiohttp

    report = Report(seed)
    source = iter(todo)
    started = time.perf_counter()
    limit = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(
        timeout=limit, connector=aiohttp.TCPConnector(limit=concurrency)
    ) as session:

        async def worker() -> None:
            for case in source:
                route = f"{case.method} {_route(case.path)}"
                try:
                    async with session.request(
                        case.method,
                        base_url + case.path,
                        data=case.body,
                        headers=list(case.headers),
                        skip_auto_headers=("Content-Type",),
                    ) as response:
                        text = await response.text(errors="replace")
                        code = f"HTTP_{response.status}"
                except aiohttp.ServerDisconnectedError as exc:
                    # no answer at all: the server failed while writing its response
                    report.add(Outcome(case.index, route, case.mutation, DISCONNECTED, str(exc)))
                    continue
                except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                    report.transport_errors[type(exc).__name__] += 1
                    continue
                details = text if response.status >= 400 else ""
                report.add(Outcome(case.index, route, case.mutation, code, details))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    report.elapsed = time.perf_counter() - started
    return report


def _route(path: str) -> str:
    """A path's endpoint, for the per-route counts (model names and versions elided)."""
    if path.startswith("/v1/"):
        verb = (
            path.rsplit(":", 1)[1]
            if ":" in path.rsplit("/", 1)[-1]
            else ("metadata" if path.endswith("/metadata") else "status")
        )
        return f"/v1 {verb}"
    if path.startswith("/v2/models/"):
        return "/v2 " + (
            "infer"
            if path.endswith("/infer")
            else "ready"
            if path.endswith("/ready")
            else "metadata"
        )
    return path[:20]


async def fuzz_rest(
    base_url: str,
    count: int,
    ctx: Context,
    seed: int = 0,
    concurrency: int = 16,
    timeout: float = 10.0,
) -> Report:
    todo = (make_rest_case(seed, i, ctx) for i in range(count))
    return await run_rest(base_url, todo, seed, concurrency, timeout)


# --- the server side: metrics, memory, logs ------------------------------------------------


def scrape(url: str, prefix: str) -> dict[str, float]:
    """Prometheus samples whose name starts with `prefix` (labels kept in the key)."""
    text = urllib.request.urlopen(url, timeout=60).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def internal_errors(metrics_url: str) -> float:
    """The server's `gateway_internal_errors_total`, summed over its labels."""
    return sum(scrape(metrics_url, "gateway_internal_errors_total").values())


def rss_bytes(pid: int) -> int:
    """VmRSS of `pid` (bytes; 0 when it is gone): the benchmark's reader."""
    from loadtest.bench import rss_kib

    return rss_kib(pid) * 1024


_RID = re.compile(r"\(request id [^)]*\)")


def distinct(outcomes: Iterable[Outcome]) -> list[tuple[int, Outcome]]:
    """Outcomes grouped by method, code and details (request ids elided): (count, first)."""
    groups: dict[tuple[str, str, str], list[Outcome]] = {}
    for o in outcomes:
        key = (o.method, o.code, _RID.sub("(request id ...)", o.details)[:200])
        groups.setdefault(key, []).append(o)
    return [(len(v), v[0]) for v in groups.values()]


def server_errors(log: Path, tail: int = 1200) -> list[str]:
    """The distinct error events of a JSON server log (`level: error`), grouped by event,
    method and the exception's last line (or the `error` field): count, first request id,
    and the traceback's tail."""
    if not log.exists():
        return []
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("level") not in ("error", "critical"):
            continue
        exc = str(record.get("exception", ""))
        last = exc.strip().splitlines()[-1] if exc.strip() else str(record.get("error", ""))
        key = (str(record.get("event")), str(record.get("method", "")), last[:300])
        groups.setdefault(key, []).append(record)
    out = []
    for (event, method, last), records in groups.items():
        first = records[0]
        rid = first.get("request_id")
        text = f"{len(records)}x {event} {method} (first request id {rid!r}): {last}"
        exc = str(first.get("exception", ""))
        out.append(text + (f"\n{exc[-tail:]}" if exc else ""))
    return out


# --- a self-contained gateway (`--serve`, `make fuzz`) -------------------------------------

SERVE_MODELS = ("m", "est", "hpt", "bundle")
SERVE_EXAMPLES = {"est": ("x", 2), "hpt": ("x", 1)}


@dataclass
class Served:
    """A `gateway serve` child process started by `serve`."""

    proc: subprocess.Popen[str]
    target: str
    rest: str
    metrics_url: str
    log: Path
    token: str


def build_repository(root: Path) -> None:
    """m/{1,2} (Keras classifiers, two seeds), est/1 (tf.Example Estimator-style),
    hpt/1 (TF1 half_plus_two), bundle/1 (preprocessing and training statistics)."""
    from gateway import samples

    samples.build_keras_classifier(root / "m" / "1", seed=1)
    samples.build_keras_classifier(root / "m" / "2", seed=2)
    samples.build_estimator_example_model(root / "est" / "1")
    samples.build_half_plus_two(root / "hpt" / "1")
    samples.build_keras_bundle(root / "bundle", 1)


def serve_config(root: Path, port: int, rest_port: int, metrics_port: int) -> dict[str, Any]:
    """The gateway config of `--serve`: a shadowed model, tf.Example models, a bundle,
    the REST port and an admin token."""
    (root / "token").write_text("fuzz-admin-token\n")
    return {
        "server": {
            "host": "127.0.0.1",
            "port": port,
            "metrics_port": metrics_port,
            "rest_api_port": rest_port,
            "admin_token_file": str(root / "token"),
        },
        "logging": {
            "file": str(root / "gw.log"),
            "divergence_log": str(root / "logs" / "divergence.jsonl"),
        },
        "models": [
            {
                "name": "m",
                "base_path": str(root / "models" / "m"),
                "version_policy": {"all": {}},
                "primary": 1,
                "version_labels": {"stable": 1, "canary": 2},
                "shadows": [{"version": 2}],
            },
            {"name": "est", "base_path": str(root / "models" / "est")},
            {"name": "hpt", "base_path": str(root / "models" / "hpt")},
            {"name": "bundle", "base_path": str(root / "models" / "bundle")},
        ],
    }


def wait_serving(target: str, models: Sequence[str], timeout: float = 120.0) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for model in models:
            while True:
                try:
                    status = stub.Check(
                        health_pb2.HealthCheckRequest(service=model), timeout=5
                    ).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{model} not SERVING at {target} after {timeout} s")
                time.sleep(0.2)  # polling the health service


@contextlib.contextmanager
def serve(root: Path) -> Iterator[Served]:
    """Build the models under `root`, start `gateway serve` on free ports, wait until every
    model is SERVING; SIGTERM (then SIGKILL) on exit."""
    import yaml

    from gateway.workers import free_port

    build_repository(root / "models")
    port, rest_port, metrics_port = free_port(), free_port(), free_port()
    cfg = serve_config(root, port, rest_port, metrics_port)
    (root / "gateway.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    with (root / "gateway.err").open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(root / "gateway.yaml")],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("listening"):
            raise RuntimeError(f"gateway did not start: {line!r}; see {root / 'gateway.err'}")
        target = f"127.0.0.1:{port}"
        wait_serving(target, SERVE_MODELS)
        yield Served(
            proc,
            target,
            f"http://127.0.0.1:{rest_port}",
            f"http://127.0.0.1:{metrics_port}/metrics",
            root / "gw.log",
            "fuzz-admin-token",
        )
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def predict_probe(target: str, model: str = "m") -> bytes:
    """A fixed valid Predict's serialized response outputs (compared before and after)."""
    p = protos()
    req = p.predict.PredictRequest()
    req.model_spec.name = model
    t = req.inputs["x"]
    _fill_tensor(
        random.Random(0), t, 1, np.array([[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 2.0, -2.0]], np.float32)
    )
    t.ClearField("tensor_content")
    t.float_val[:] = [0.1, 0.2, 0.3, 0.4, 1.0, -1.0, 2.0, -2.0]
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            PS + "Predict",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=p.predict.PredictResponse.FromString,
        )
        response = call(req, timeout=30)
    return b"".join(
        k.encode() + response.outputs[k].SerializeToString() for k in sorted(response.outputs)
    )


# --- CLI -----------------------------------------------------------------------------------


def _examples_arg(values: Sequence[str]) -> dict[str, tuple[str, int]]:
    out = {}
    for v in values:
        name, _, rest = v.partition("=")
        feature, _, width = (rest or "x:1").partition(":")
        out[name] = (feature, int(width or 1))
    return out


def _progress(report: Report) -> None:
    print(
        f"  ... {report.requests} requests, {dict(report.codes.most_common(4))}",
        file=sys.stderr,
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m loadtest.fuzz", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--target", help="gRPC HOST:PORT of a running gateway")
    ap.add_argument(
        "--serve", action="store_true", help="build models in a temp dir and start a gateway"
    )
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first case index")
    ap.add_argument(
        "--model", action="append", default=[], help="model to fuzz (repeatable; default m)"
    )
    ap.add_argument(
        "--example-model",
        action="append",
        default=[],
        metavar="NAME=FEATURE:WIDTH",
        help="a model whose tf.Example signatures parse float FEATURE of WIDTH values",
    )
    ap.add_argument("--rest", help="REST HOST:PORT (server.rest_api_port): also fuzz /v1 and /v2")
    ap.add_argument(
        "--rest-count", type=int, default=None, help="REST requests (default: count / 5)"
    )
    ap.add_argument("--token-file", help="the admin token: also send authorized UpdateRollout")
    ap.add_argument(
        "--reload-rate",
        type=float,
        default=0.05,
        help="share of ReloadConfig calls sent with the token (they re-read the same file)",
    )
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument(
        "--replay", type=int, default=None, metavar="INDEX", help="print and send case INDEX only"
    )
    ap.add_argument("--json", help="write the reports to this file")
    ap.add_argument("--workdir", help="with --serve: build and log here (kept), not in a temp dir")
    args = ap.parse_args(argv)
    if not args.serve and not args.target:
        ap.error("--target or --serve is required")
    if args.serve:
        with contextlib.ExitStack() as stack:
            if args.workdir:
                tmp = args.workdir
                Path(tmp).mkdir(parents=True, exist_ok=True)
            else:
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="gateway-fuzz-"))
            print(
                f"building models and starting a gateway in {tmp} ...", file=sys.stderr, flush=True
            )
            with serve(Path(tmp)) as served:
                return _run(
                    args,
                    served.target,
                    served.rest.removeprefix("http://"),
                    list(SERVE_MODELS),
                    SERVE_EXAMPLES,
                    served.token,
                    served,
                )
    token = Path(args.token_file).read_text().strip() if args.token_file else None
    return _run(
        args,
        args.target,
        args.rest,
        args.model or ["m"],
        _examples_arg(args.example_model),
        token,
        None,
    )


def _run(
    args: argparse.Namespace,
    target: str,
    rest: str | None,
    models: list[str],
    examples: Mapping[str, tuple[str, int]],
    token: str | None,
    served: Served | None,
) -> int:
    ctx = asyncio.run(context_for(target, models, examples, token, args.reload_rate))
    if args.replay is not None:
        case = make_case(args.seed, args.replay, ctx)
        print(f"case {case.index}: {case.method} [{case.mutation}] {len(case.payload)} bytes")
        print(f"  payload: {case.payload[:400]!r}{'...' if len(case.payload) > 400 else ''}")
        report = asyncio.run(run_cases(target, [case], args.seed, 1, args.timeout))
        print(report.summary())
        return 0 if report.clean else 1
    baseline = predict_probe(target) if served is not None else b""
    before = rss_bytes(served.proc.pid) if served is not None else 0
    report = asyncio.run(
        run_cases(
            target,
            cases(args.seed, args.count, ctx, args.start),
            args.seed,
            args.concurrency,
            args.timeout,
            _progress,
        )
    )
    print(report.summary())
    reports = {"grpc": report.to_json()}
    clean = report.clean
    if rest:
        rest_report = asyncio.run(
            fuzz_rest(
                f"http://{rest}",
                args.rest_count if args.rest_count is not None else max(args.count // 5, 1),
                ctx,
                args.seed,
                args.concurrency,
                args.timeout,
            )
        )
        print(rest_report.summary("REST"))
        reports["rest"] = rest_report.to_json()
        clean = clean and rest_report.clean
        report.findings += rest_report.findings
    if served is not None:
        alive = served.proc.poll() is None
        after = rss_bytes(served.proc.pid) if alive else 0
        errors = internal_errors(served.metrics_url) if alive else math.nan
        unchanged = alive and predict_probe(target) == baseline
        print(
            f"server: {'alive' if alive else f'DEAD (exit {served.proc.returncode})'}; "
            f"RSS {before / MiB:.0f} -> "
            f"{after / MiB:.0f} MiB; gateway_internal_errors_total {errors:g}; "
            f"valid Predict {'unchanged' if unchanged else 'CHANGED'}"
        )
        reports["server"] = {
            "alive": alive,
            "rss_before": before,
            "rss_after": after,
            "internal_errors_total": errors,
            "predict_unchanged": unchanged,
        }
        clean = clean and alive and unchanged and errors == 0
        for line in server_errors(served.log):
            print(f"  server log: {line}")
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=2, default=str))
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
