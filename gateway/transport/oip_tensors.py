"""Open Inference Protocol (KServe v2) tensors <-> numpy, validated before allocating.

The v2 datatypes map onto the core dtype table (`gateway.core.dtypes`); BYTES tensors are
numpy object arrays of bytes (TensorFlow's `tf.string`). A tensor travels either typed
(`InferTensorContents`, one repeated field per datatype family) or raw (one `bytes` entry
per tensor: little-endian elements without padding; BYTES elements each a 4-byte
little-endian length and its bytes). Every check (datatype, shape, element count against
contents length or raw byte length) runs before an array is allocated, and raises
`InvalidInput` naming the tensor and what was expected (`ResourceExhausted` for sizes
over the request's `DecodeLimits`: elements of a tensor and of the request, bytes of a
BYTES element). Works on any message with the spec's field names (ours, or
tritonclient's).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.core import dtypes
from gateway.core.errors import InvalidInput, Unimplemented
from gateway.core.limits import DEFAULT_LIMITS, DecodeLimits
from gateway.core.servable import Arrays, TensorSpec


@dataclass(frozen=True)
class Datatype:
    """One v2 datatype: its TensorFlow dtype code, numpy dtype, typed contents field."""

    name: str
    code: int
    field: str | None
    """The `InferTensorContents` field of typed contents (None: raw only, FP16/BF16)."""

    @property
    def dtype(self) -> np.dtype[Any] | None:
        """numpy dtype (object for BYTES); None when the gateway has none (BF16)."""
        return dtypes.numpy_dtype(self.code)


DATATYPES: dict[str, Datatype] = {
    d.name: d
    for d in (
        Datatype("BOOL", dtypes.DT_BOOL, "bool_contents"),
        Datatype("UINT8", dtypes.DT_UINT8, "uint_contents"),
        Datatype("UINT16", dtypes.DT_UINT16, "uint_contents"),
        Datatype("UINT32", dtypes.DT_UINT32, "uint_contents"),
        Datatype("UINT64", dtypes.DT_UINT64, "uint64_contents"),
        Datatype("INT8", dtypes.DT_INT8, "int_contents"),
        Datatype("INT16", dtypes.DT_INT16, "int_contents"),
        Datatype("INT32", dtypes.DT_INT32, "int_contents"),
        Datatype("INT64", dtypes.DT_INT64, "int64_contents"),
        Datatype("FP16", dtypes.DT_HALF, None),
        Datatype("FP32", dtypes.DT_FLOAT, "fp32_contents"),
        Datatype("FP64", dtypes.DT_DOUBLE, "fp64_contents"),
        Datatype("BYTES", dtypes.DT_STRING, "bytes_contents"),
        Datatype("BF16", dtypes.DT_BFLOAT16, None),
    )
}
"""The specification's datatypes, by name."""

_BY_CODE: dict[int, Datatype] = {d.code: d for d in DATATYPES.values()}
_CONTENT_FIELDS = tuple(dict.fromkeys(d.field for d in DATATYPES.values() if d.field))
_LENGTH = struct.Struct("<I")
_FIELD_DTYPES: dict[str, type[np.generic]] = {
    "bool_contents": np.bool_,
    "int_contents": np.int32,
    "int64_contents": np.int64,
    "uint_contents": np.uint32,
    "uint64_contents": np.uint64,
    "fp32_contents": np.float32,
    "fp64_contents": np.float64,
}
"""The element type of each numeric typed contents field."""


def datatype_of(code: int) -> str:
    """The v2 datatype of a TensorFlow dtype code (metadata); the TF name upper-cased for
    dtypes the protocol has no name for (e.g. COMPLEX64)."""
    known = _BY_CODE.get(code)
    return known.name if known is not None else dtypes.dtype_name(code).upper()


def shape_of(spec: TensorSpec) -> list[int]:
    """A signature tensor's shape as v2 metadata: -1 for unknown dimensions; [-1] for an
    unknown rank (the protocol cannot say "any rank")."""
    if spec.shape is None:
        return [-1]
    return [-1 if d is None else d for d in spec.shape]


def describe(spec: TensorSpec) -> str:
    """e.g. `FP32 [-1, 4]`."""
    return f"{datatype_of(spec.dtype)} {shape_of(spec)}"


def bf16_refusal(alias: str, spec: TensorSpec | None) -> InvalidInput | Unimplemented:
    """The error for a BF16 input: the gateway has no bfloat16 tensors (neither has its
    TensorProto codec), so it names what the model takes instead."""
    if spec is None:
        return InvalidInput(
            f"input '{alias}': datatype BF16 is not supported, and the model has no input '{alias}'"
        )
    if spec.dtype == dtypes.DT_BFLOAT16:
        return Unimplemented(
            f"input '{alias}': the model takes bfloat16, which the gateway cannot serve"
        )
    return InvalidInput(
        f"input '{alias}': datatype BF16 is not supported; the model's input '{alias}' is "
        f"{describe(spec)}"
    )


def _datatype(alias: str, name: str) -> Datatype:
    datatype = DATATYPES.get(name)
    if datatype is None:
        raise InvalidInput(
            f"input '{alias}': unknown datatype {name!r}; expected one of {', '.join(DATATYPES)}"
        )
    if datatype.dtype is None:
        raise bf16_refusal(alias, None)
    return datatype


def _shape(alias: str, dims: Sequence[int], limits: DecodeLimits) -> tuple[tuple[int, ...], int]:
    """The shape and its element count, checked (rank, negative dimensions, the element
    limit) before anything is allocated; O(rank)."""
    limits.rank(alias, len(dims))
    shape = tuple(int(d) for d in dims)
    return shape, limits.element_count(alias, shape)


def input_datatype(alias: str, name: str) -> Datatype:
    """The datatype an input names; InvalidInput for an unknown name, BF16 refused."""
    return _datatype(alias, name)


def input_shape(
    alias: str, dims: Sequence[int], limits: DecodeLimits = DEFAULT_LIMITS
) -> tuple[tuple[int, ...], int]:
    """An input's shape and element count; InvalidInput naming the input for a rank over
    the limit or a negative dimension, ResourceExhausted over the element limit."""
    return _shape(alias, dims, limits)


def decode_inputs(
    inputs: Sequence[Any], raw: Sequence[bytes], limits: DecodeLimits = DEFAULT_LIMITS
) -> Arrays:
    """The named arrays of a ModelInferRequest's `inputs` (typed contents) or
    `raw_input_contents` (one entry per input, in order); the running element total is
    checked against `limits` before the next input is decoded."""
    if raw and len(raw) != len(inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(inputs)} inputs; expected "
            "one per input, in the order of inputs"
        )
    out: Arrays = {}
    total = 0
    for i, tensor in enumerate(inputs):
        alias = tensor.name
        if not alias:
            raise InvalidInput(f"inputs[{i}]: expected a tensor name, got an empty string")
        if alias in out:
            raise InvalidInput(f"input '{alias}' is given more than once")
        for key in tensor.parameters:
            if key.startswith("shared_memory"):
                raise Unimplemented(
                    f"input '{alias}': shared memory is not supported; send the tensor's "
                    "contents in the request"
                )
        array = decode_input(tensor, raw[i] if raw else None, i, limits=limits, total=total)
        total += array.size
        out[alias] = array
    return out


def decode_input(
    tensor: Any,
    raw: bytes | None,
    index: int = 0,
    where: str | None = None,
    limits: DecodeLimits = DEFAULT_LIMITS,
    total: int = 0,
) -> np.ndarray:
    """One input tensor (`raw`: its raw_input_contents entry, or None for typed contents;
    `where` names the raw data in errors, by default `raw_input_contents[index]`), checked
    against `limits` (shape, element count, BYTES element sizes; with `total`, the
    elements of the request's inputs before this one, the request's total) before
    anything is allocated."""
    alias = tensor.name
    datatype = _datatype(alias, tensor.datatype)
    dtype = datatype.dtype
    assert dtype is not None
    shape, count = _shape(alias, tensor.shape, limits)
    limits.request_elements(total + count, alias)
    where = where or f"raw_input_contents[{index}]"
    if raw is not None:
        if tensor.HasField("contents"):
            raise InvalidInput(
                f"input '{alias}': both contents and raw_input_contents are given; send one"
            )
        if datatype.name == "BYTES":
            return _bytes_elements(alias, where, raw, shape, count, limits)
        expected = count * dtype.itemsize
        if len(raw) != expected:
            raise InvalidInput(
                f"input '{alias}': {where} has {len(raw)} bytes; shape {list(shape)} of "
                f"{datatype.name} needs {expected}"
            )
        if datatype.name == "BOOL":
            flags: np.ndarray = np.frombuffer(raw, dtype=np.uint8) != 0
            return flags.reshape(shape)
        array: np.ndarray = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
        return array.reshape(shape)
    contents = tensor.contents
    if datatype.field is None:
        if count == 0:
            return np.empty(shape, dtype=dtype)
        raise InvalidInput(
            f"input '{alias}': {datatype.name} has no typed contents field; send it in "
            "raw_input_contents"
        )
    values = getattr(contents, datatype.field)
    if len(values) != count:
        others = [
            f"{len(getattr(contents, f))} in {f}"
            for f in _CONTENT_FIELDS
            if f != datatype.field and len(getattr(contents, f))
        ]
        hint = f" (contents has {', '.join(others)})" if others else ""
        raise InvalidInput(
            f"input '{alias}': shape {list(shape)} needs {count} values in "
            f"contents.{datatype.field}, got {len(values)}{hint}"
        )
    if datatype.name == "BYTES":
        if count:
            limits.string_bytes(alias, max(map(len, values)))
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    wide = np.asarray(values, dtype=_FIELD_DTYPES[datatype.field])
    if wide.dtype != dtype and wide.size:  # INT8/16 in int_contents, UINT8/16 in uint_contents
        info = np.iinfo(dtype)
        low, high = int(wide.min()), int(wide.max())
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            raise InvalidInput(
                f"input '{alias}': value {bad} is out of range for {datatype.name} "
                f"[{info.min}, {info.max}]"
            )
    return wide.astype(dtype, copy=False).reshape(shape)


def _bytes_elements(
    alias: str,
    where: str,
    raw: bytes,
    shape: tuple[int, ...],
    count: int,
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> np.ndarray:
    """Raw BYTES: `count` elements, each a 4-byte little-endian length and its bytes
    (each at most `limits.max_string_bytes`)."""
    most = limits.max_string_bytes
    elements: list[bytes] = []
    offset, size = 0, len(raw)
    view = memoryview(raw)
    while offset < size:
        if len(elements) == count:
            raise InvalidInput(
                f"input '{alias}': {where} holds more than the {count} BYTES elements of "
                f"shape {list(shape)} ({size - offset} bytes left over)"
            )
        if offset + 4 > size:
            raise InvalidInput(
                f"input '{alias}': {where} ends inside the 4-byte length of element {len(elements)}"
            )
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if length > most:
            limits.string_bytes(alias, length)
        if offset + length > size:
            raise InvalidInput(
                f"input '{alias}': {where} element {len(elements)} declares {length} bytes, "
                f"{size - offset} are left"
            )
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    if len(elements) != count:
        raise InvalidInput(
            f"input '{alias}': {where} holds {len(elements)} BYTES elements; shape "
            f"{list(shape)} needs {count}"
        )
    array = np.empty(count, dtype=object)
    array[:] = elements
    return array.reshape(shape)


def output_datatype(alias: str, array: np.ndarray) -> Datatype:
    """The v2 datatype of an output array; Unimplemented for dtypes the protocol lacks."""
    code = dtypes.dtype_code(array)
    datatype = _BY_CODE.get(code) if code is not None else None
    if datatype is None or datatype.dtype is None:
        raise Unimplemented(
            f"output '{alias}': dtype {array.dtype} has no Open Inference Protocol datatype"
        )
    return datatype


def needs_raw(outputs: Mapping[str, np.ndarray]) -> bool:
    """True when some output can only travel raw (FP16)."""
    return any(output_datatype(k, v).field is None for k, v in outputs.items())


def _flat_bytes(array: np.ndarray) -> list[bytes]:
    flat = array.reshape(-1).tolist()
    return [v.encode() if isinstance(v, str) else bytes(v) for v in flat]


def fill_output(out: Any, alias: str, array: np.ndarray, raw: bool) -> bytes | None:
    """Fill an InferOutputTensor's name, datatype, shape and (typed) contents; with `raw`,
    return its raw_output_contents entry instead of filling contents."""
    datatype = output_datatype(alias, array)
    out.name = alias
    out.datatype = datatype.name
    out.shape.extend(int(d) for d in array.shape)
    if datatype.name == "BYTES":
        elements = _flat_bytes(array)
        if raw:
            return b"".join(_LENGTH.pack(len(e)) + e for e in elements)
        out.contents.bytes_contents.extend(elements)
        return None
    if raw:
        little = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False)
        return little.tobytes()
    assert datatype.field is not None  # needs_raw chose raw for FP16
    getattr(out.contents, datatype.field).extend(array.reshape(-1).tolist())
    return None


__all__ = [
    "DATATYPES",
    "Datatype",
    "bf16_refusal",
    "datatype_of",
    "decode_input",
    "decode_inputs",
    "describe",
    "fill_output",
    "input_datatype",
    "input_shape",
    "needs_raw",
    "output_datatype",
    "shape_of",
]
