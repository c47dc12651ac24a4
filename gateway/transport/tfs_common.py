"""What TF Serving's two APIs here share: its gRPC servicers (`prediction.py`,
`model_service.py`) and its REST API (`tfs_rest.py`).

The data-plane request of a model (a version, a label or neither, and a signature), the
ClassificationResult / RegressionResult of a classify / regress answer, and the
GetModelStatus / GetModelMetadata responses are each built once, as TF Serving's
protobuf messages (the results encoded straight to their wire form with numpy: gRPC
sends those bytes, REST parses them); REST prints them as TF Serving's REST API does.
So both APIs answer the same request the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, status_pb2

from gateway.core.errors import InternalError, InvalidInput, NotFound
from gateway.core.inference import InferenceRequest, InferenceResult, Method
from gateway.core.model_view import Servable
from gateway.core.protocols import ModelRegistry
from gateway.core.servable import LoadedVersion
from gateway.core.states import VersionState
from gateway.transport.calls import current_request_id

SIGNATURE_DEF = "signature_def"
"""The one GetModelMetadata field TF Serving (and the gateway) answers."""

TFS_STATE = {
    VersionState.START: get_model_status_pb2.ModelVersionStatus.START,
    VersionState.LOADING: get_model_status_pb2.ModelVersionStatus.LOADING,
    VersionState.AVAILABLE: get_model_status_pb2.ModelVersionStatus.AVAILABLE,
    VersionState.UNLOADING: get_model_status_pb2.ModelVersionStatus.UNLOADING,
    VersionState.END: get_model_status_pb2.ModelVersionStatus.END,
    VersionState.FAILED: get_model_status_pb2.ModelVersionStatus.END,
}
UNKNOWN_ERROR = 2  # tensorflow.error.Code.UNKNOWN, what TF Serving reports for failed loads


def tfs_request(
    model: str,
    method: Method,
    *,
    version: int | None,
    label: str | None,
    signature: str,
    headers: Mapping[str, str],
    protocol: str,
    **fields: Any,
) -> InferenceRequest:
    """The data-plane request of a TF Serving call (from a ModelSpec, or from a REST path
    and body): the request id bound by the transport, the caller's metadata or headers
    (lowercase keys: rollout routing keys), `fields` (the method's inputs, ...) on top."""
    return InferenceRequest(
        model=model,
        method=method,
        version=version,
        label=label or None,
        signature=signature,
        headers=headers,
        request_id=current_request_id(),
        protocol=protocol,
        **fields,
    )


def _varint_sizes(values: np.ndarray) -> np.ndarray:
    """Bytes of the varint of each (non-negative) value."""
    sizes = np.ones(values.shape, dtype=np.int64)
    for bits in range(7, 63, 7):
        sizes += values >= (1 << bits)
    return sizes


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _put_varints(out: np.ndarray, at: np.ndarray, values: np.ndarray) -> None:
    """Write the varint of each `values[k]` at `out[at[k]:]`."""
    sizes = _varint_sizes(values)
    rest = values.astype(np.int64, copy=True)
    for k in range(int(sizes.max(initial=1))):
        live = sizes > k
        byte = (rest & 0x7F) | np.where(sizes > k + 1, 0x80, 0)
        out[(at + k)[live]] = byte[live]
        rest >>= 7


def _framed(body_size: int, field: int | None) -> tuple[bytearray, np.ndarray]:
    """A buffer for a message of `body_size` bytes, as length-delimited field `field`
    (tag and length written) or bare, and the body's part of it to fill (a bytearray:
    protobuf parses it without a copy, where a memoryview would be copied first)."""
    head = b"" if field is None else bytes([field << 3 | 2]) + _varint(body_size)
    out = bytearray(len(head) + body_size)
    out[: len(head)] = head
    return out, np.frombuffer(out, dtype=np.uint8)[len(head) :]


def _label_bytes(label: Any) -> bytes:
    """A `classes` value as TF Serving writes the label: bytes as UTF-8 text, anything
    else as its `str`."""
    if isinstance(label, bytes):
        label.decode()  # a string field carries valid UTF-8 only
        return bytes(label)
    return str(label).encode()


def _label_codes(labels: np.ndarray) -> tuple[np.ndarray, list[bytes]]:
    """Each label's index into the distinct label texts, and those texts: one index per
    column ([num_classes]) when every row has the first row's labels, else [rows,
    num_classes]."""
    rows, width = labels.shape
    if rows == 0 or bool((labels == labels[:1]).all()):  # the same classes on every row
        texts = [_label_bytes(v) for v in labels[0].tolist()] if rows else []
        return np.arange(width if rows else 0, dtype=np.int64), texts
    if labels.dtype.kind in "OSU":
        table: dict[Any, int] = {}
        flat = (table.setdefault(v, len(table)) for v in labels.flat)
        codes = np.fromiter(flat, dtype=np.int64, count=labels.size).reshape(labels.shape)
        return codes, [_label_bytes(v) for v in table]
    distinct, inverse = np.unique(labels, return_inverse=True)
    texts = [_label_bytes(v) for v in distinct.tolist()]
    return inverse.reshape(labels.shape).astype(np.int64), texts


def _floats(values: np.ndarray) -> np.ndarray:
    """`values` as the proto's float32 (little-endian; out of range: +-inf, as a float
    field set from Python stores them)."""
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(values, dtype="<f4")


_CHUNK_ELEMENTS = 16384
"""Classes encoded per step (bounds the encoder's temporaries)."""


def classification_result_wire(result: InferenceResult, field: int | None = None) -> bytearray:
    """The serialized ClassificationResult (as length-delimited field `field`
    when given) of a classify signature's `classes` and/or `scores` ([batch,
    num_classes] each), as TF Serving builds it, encoded with numpy: the cost is the
    answer's size, not a message and a Python object per class."""
    classes = result.outputs.get("classes")
    scores = result.outputs.get("scores")
    if classes is None and scores is None:
        raise InvalidInput(f"signature '{result.signature}' has neither 'classes' nor 'scores'")
    rows = len(classes) if classes is not None else len(scores)  # type: ignore[arg-type]
    labels = classes.reshape(rows, -1) if classes is not None else None
    values = scores.reshape(rows, -1) if scores is not None else None
    width = (values if values is not None else labels).shape[1] if rows else 0  # type: ignore[union-attr]
    if labels is not None and rows:
        if labels.shape[1] < width:
            raise InternalError(
                f"signature '{result.signature}': 'classes' has {labels.shape[1]} values per "
                f"example, 'scores' {width}"
            )
        labels = labels[:, :width]
    # Class {string label = 1; float score = 2}, in Classifications.classes = 1: the
    # bytes before a score depend only on the label, built once per distinct label.
    if labels is not None:
        codes, texts = _label_codes(labels)
        fields = [b"\x0a" + _varint(len(t)) + t for t in texts]
    else:
        codes, fields = np.zeros(width, dtype=np.int64), [b""]
    score = values is not None
    prefixes = [
        b"\x0a" + _varint(len(f) + 5 * score) + f + (b"\x15" if score else b"") for f in fields
    ]
    scores_u8 = (
        _floats(values).view(np.uint8).reshape(rows, width, 4) if values is not None else None
    )
    if codes.ndim == 1:  # every row alike but for its scores: one template, filled in
        gap = b"\0\0\0\0" if score else b""
        classes_bytes = b"".join(prefixes[c] + gap for c in codes.tolist())
        template = b"\x0a" + _varint(len(classes_bytes)) + classes_bytes
        out, flat = _framed(len(template) * rows, field)
        body = flat.reshape(rows, len(template))
        body[:] = np.frombuffer(template, dtype=np.uint8)
        if scores_u8 is not None:
            at = len(template) - len(classes_bytes)
            for j, c in enumerate(codes.tolist()):
                at += len(prefixes[c])
                body[:, at : at + 4] = scores_u8[:, j]
                at += 4
        return out
    prefix_sizes = np.array([len(p) for p in prefixes], dtype=np.int64)
    table = np.zeros((len(prefixes), int(prefix_sizes.max(initial=0))), dtype=np.uint8)
    for k, p in enumerate(prefixes):
        table[k, : len(p)] = np.frombuffer(p, dtype=np.uint8)
    record = prefix_sizes + 4 * score
    step = max(1, _CHUNK_ELEMENTS // max(width, 1))
    total = 0
    for a in range(0, rows, step):  # pass 1: the size
        row_sizes = record[codes[a : a + step]].sum(axis=1)
        total += int((1 + _varint_sizes(row_sizes) + row_sizes).sum())
    out, body = _framed(total, field)
    pos = 0
    for a in range(0, rows, step):  # pass 2: the bytes, a bounded chunk of rows at a time
        code = codes[a : a + step]
        sizes = record[code]
        row_sizes = sizes.sum(axis=1)
        heads = 1 + _varint_sizes(row_sizes)
        row_starts = pos + np.cumsum(heads + row_sizes) - (heads + row_sizes)
        pos += int((heads + row_sizes).sum())
        body[row_starts] = 0x0A  # ClassificationResult.classifications = 1
        _put_varints(body, row_starts + 1, row_sizes)
        starts = (row_starts + heads)[:, None] + np.cumsum(sizes, axis=1) - sizes
        prefix = prefix_sizes[code]
        for k in range(table.shape[1]):
            keep = prefix > k
            body[(starts + k)[keep]] = table[code[keep], k]
        if scores_u8 is not None:
            at = starts + prefix
            for k in range(4):
                body[at + k] = scores_u8[a : a + step, :, k]
    return out


def regression_result_wire(result: InferenceResult, field: int | None = None) -> bytearray:
    """The serialized RegressionResult (as field `field` when given) of a regress
    signature's `outputs` (one value per example), encoded with numpy."""
    values = result.outputs.get("outputs")
    if values is None:
        raise InvalidInput(f"signature '{result.signature}' has no 'outputs' output")
    first = _floats(values.reshape(len(values), -1)[:, 0])
    rows = len(first)
    out, body = _framed(7 * rows, field)
    # Regression {float value = 1} in RegressionResult.regressions = 1
    records = body.reshape(rows, 7)
    records[:, :3] = np.frombuffer(b"\x0a\x05\x0d", dtype=np.uint8)
    records[:, 3:] = first.view(np.uint8).reshape(rows, 4)
    return out


def fill_classifications(out: Any, result: InferenceResult) -> None:
    """A ClassificationResult from a classify signature's `classes` and/or `scores`
    ([batch, num_classes] each), as TF Serving builds it."""
    out.MergeFromString(classification_result_wire(result))


def fill_regressions(out: Any, result: InferenceResult) -> None:
    """A RegressionResult from a regress signature's `outputs` (one value per example)."""
    out.MergeFromString(regression_result_wire(result))


def fill_spec(spec: Any, result: InferenceResult) -> None:
    """Say in the response which version and signature answered."""
    spec.name = result.model
    spec.version.value = result.version
    spec.signature_name = result.signature


def model_status(
    registry: ModelRegistry[Servable], name: str, version: int | None, label: str | None
) -> Any:
    """GetModelStatusResponse: every known version of `name` (or the one `version` or
    `label` names), with TF Serving's states and a status on every entry (OK, or for a
    FAILED version END with UNKNOWN and the reason, as TF Serving reports failed loads)."""
    statuses = registry.statuses(name)
    if version is not None:
        statuses = [s for s in statuses if s.version == version]
        if not statuses:
            raise NotFound(f"model '{name}' has no version {version}")
    elif label:
        labelled = registry.labels(name).get(label)
        statuses = [s for s in statuses if s.version == labelled]
        if not statuses:
            raise NotFound(f"model '{name}' has no version label '{label}'")
    response = get_model_status_pb2.GetModelStatusResponse()
    for status in statuses:
        entry = response.model_version_status.add()
        entry.version = status.version
        entry.state = TFS_STATE[status.state]
        if status.state is VersionState.FAILED:
            entry.status.CopyFrom(
                status_pb2.StatusProto(error_code=UNKNOWN_ERROR, error_message=status.error)
            )
        else:
            entry.status.SetInParent()  # error_code OK, as TF Serving always sets it
    return response


def model_metadata(loaded: LoadedVersion) -> Any:
    """GetModelMetadataResponse with the `signature_def` of a version: the SavedModel's
    SignatureDefMap (less internal `__...` entries), or for a version that ships
    preprocessing the raw-feature signatures clients send."""
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = loaded.model
    response.model_spec.version.value = loaded.version
    sigmap = get_model_metadata_pb2.SignatureDefMap()
    advertised = loaded.extensions.get("advertised_signature_defs")
    source = advertised if advertised is not None else loaded.signature_defs
    for name, sdef in source.items():
        if not name.startswith("__"):
            sigmap.signature_def[name].CopyFrom(sdef)
    response.metadata[SIGNATURE_DEF].Pack(sigmap)
    return response


__all__ = [
    "SIGNATURE_DEF",
    "classification_result_wire",
    "fill_classifications",
    "fill_regressions",
    "fill_spec",
    "model_metadata",
    "model_status",
    "regression_result_wire",
    "tfs_request",
]
