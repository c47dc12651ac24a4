"""TensorProto <-> numpy conversion, validated, without going through TensorFlow.

`tf.make_ndarray` / `tf.make_tensor_proto` are correct but slow on the request
path; these functions handle the wire forms TF Serving clients send
(`tensor_content` or the typed `*_val` fields, including the single-value
broadcast form) and raise `InvalidInput` naming the alias for malformed tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from gateway.core.dtypes import dtype_code, dtype_name, numpy_dtype
from gateway.core.errors import InvalidInput
from gateway.core.limits import DEFAULT_LIMITS, DecodeLimits


@dataclass(frozen=True)
class _Wire:
    dtype: np.dtype[Any]
    field: str  # the TensorProto repeated field used when tensor_content is empty
    name: str


def _wire(code: int, field: str) -> _Wire:
    dtype = numpy_dtype(code)
    assert dtype is not None
    return _Wire(dtype, field, dtype_name(code))


_WIRE: dict[int, _Wire] = {
    code: _wire(code, field)
    for code, field in (
        (types_pb2.DT_FLOAT, "float_val"),
        (types_pb2.DT_DOUBLE, "double_val"),
        (types_pb2.DT_INT32, "int_val"),
        (types_pb2.DT_UINT8, "int_val"),
        (types_pb2.DT_INT16, "int_val"),
        (types_pb2.DT_INT8, "int_val"),
        (types_pb2.DT_UINT16, "int_val"),
        (types_pb2.DT_INT64, "int64_val"),
        (types_pb2.DT_UINT32, "uint32_val"),
        (types_pb2.DT_UINT64, "uint64_val"),
        (types_pb2.DT_BOOL, "bool_val"),
        (types_pb2.DT_HALF, "half_val"),
        (types_pb2.DT_STRING, "string_val"),
    )
}
"""The request dtypes this codec decodes, and the typed field each uses."""


def tf_dtype_code(array: np.ndarray) -> int:
    """TF DataType enum value for a numpy array (bytes/str/object arrays are DT_STRING)."""
    code = dtype_code(array)
    if code is None:
        raise InvalidInput(f"unsupported output dtype {array.dtype}")
    return code


def to_numpy(
    alias: str, proto: tensor_pb2.TensorProto, limits: DecodeLimits = DEFAULT_LIMITS
) -> np.ndarray:
    """Decode one request tensor, validated against `limits` before anything is
    allocated: `InvalidInput` naming `alias` when malformed (dtype, rank, negative
    dimension, value count), `ResourceExhausted` over a size limit."""
    wire, shape, count = _checked(alias, proto, limits)
    return _decode(alias, proto, wire, shape, count, limits)


def to_numpy_inputs(
    protos: Mapping[str, tensor_pb2.TensorProto], limits: DecodeLimits = DEFAULT_LIMITS
) -> dict[str, np.ndarray]:
    """Decode a request's named tensors (`to_numpy` each); the running element total is
    checked against `limits.max_request_elements` before the next tensor is decoded."""
    out: dict[str, np.ndarray] = {}
    total = 0
    for alias, proto in protos.items():
        wire, shape, count = _checked(alias, proto, limits)
        total += count
        limits.request_elements(total, alias)
        out[alias] = _decode(alias, proto, wire, shape, count, limits)
    return out


def _checked(
    alias: str, proto: tensor_pb2.TensorProto, limits: DecodeLimits
) -> tuple[_Wire, tuple[int, ...], int]:
    """The wire form, shape and element count of a request tensor, checked (O(rank))."""
    wire = _WIRE.get(proto.dtype)
    if wire is None:
        raise InvalidInput(
            f"input '{alias}': unsupported or invalid dtype {dtype_name(proto.dtype)}"
        )
    if proto.tensor_shape.unknown_rank:
        raise InvalidInput(f"input '{alias}': tensor_shape has unknown rank; expected a full shape")
    dims = proto.tensor_shape.dim
    limits.rank(alias, len(dims))
    shape = tuple(d.size for d in dims)
    return wire, shape, limits.element_count(alias, shape)


def _decode(
    alias: str,
    proto: tensor_pb2.TensorProto,
    wire: _Wire,
    shape: tuple[int, ...],
    count: int,
    limits: DecodeLimits,
) -> np.ndarray:
    if wire.dtype == np.dtype(object):
        values = proto.string_val
        if len(values) == count or (len(values) == 1 and count > 1):
            if values:
                limits.string_bytes(alias, max(map(len, values)))
            out = np.empty(count, dtype=object)
            out[:] = list(values) if len(values) == count else values[0]
            return out.reshape(shape)
        raise InvalidInput(
            f"input '{alias}': shape {list(shape)} needs {count} string values, got {len(values)}"
        )
    if proto.tensor_content:
        expected = count * wire.dtype.itemsize
        if len(proto.tensor_content) != expected:
            raise InvalidInput(
                f"input '{alias}': tensor_content has {len(proto.tensor_content)} bytes, "
                f"shape {list(shape)} of {wire.name} needs {expected}"
            )
        return np.frombuffer(proto.tensor_content, dtype=wire.dtype).reshape(shape)
    values = getattr(proto, wire.field)
    n = len(values)
    if n == 1 and count > 1:  # the broadcast form: `count` is within the limit
        return np.full(shape, _flat(proto, wire, values)[0], dtype=wire.dtype)
    if n == count:
        return _flat(proto, wire, values).reshape(shape)
    raise InvalidInput(
        f"input '{alias}': shape {list(shape)} needs {count} values in {wire.field}, got {n}"
    )


def _flat(proto: tensor_pb2.TensorProto, wire: _Wire, values: Any) -> np.ndarray:
    if proto.dtype == types_pb2.DT_HALF:
        return np.asarray(values, dtype=np.uint16).view(np.float16)
    return np.asarray(values, dtype=wire.dtype)


def _shape_proto(shape: tuple[int, ...]) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in shape]
    )


_TYPED_FIELD: dict[int, str] = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_COMPLEX64: "scomplex_val",
    types_pb2.DT_COMPLEX128: "dcomplex_val",
}
"""The typed value field TF Serving's `AsProtoField` writes for each dtype (half: its
bit patterns in `half_val`; strings: `string_val`)."""


def fill_proto(proto: tensor_pb2.TensorProto, array: np.ndarray, typed: bool = True) -> None:
    """Write `array` into `proto` as TF Serving does: the typed value fields (`float_val`,
    `int64_val`, ...; complex as (real, imaginary) pairs, half as its bit patterns), or, with
    `typed=False`, numeric values as little-endian `tensor_content`. Strings always go in
    `string_val`."""
    proto.dtype = tf_dtype_code(array)
    proto.tensor_shape.CopyFrom(_shape_proto(array.shape))
    if proto.dtype == types_pb2.DT_STRING:
        flat = array.reshape(-1)
        if flat.dtype.kind == "U":
            proto.string_val.extend(s.encode() for s in flat.tolist())
        else:
            proto.string_val.extend(flat.tolist())
        return
    if not typed:
        proto.tensor_content = (
            np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        )
        return
    flat = array.reshape(-1)
    if proto.dtype == types_pb2.DT_HALF:
        proto.half_val.extend(flat.astype(np.float16, copy=False).view(np.uint16).tolist())
        return
    if flat.dtype.kind == "c":
        flat = flat.view(np.float32 if flat.dtype == np.complex64 else np.float64)
    getattr(proto, _TYPED_FIELD[proto.dtype]).extend(flat.tolist())


def from_numpy(array: np.ndarray, typed: bool = True) -> tensor_pb2.TensorProto:
    """Encode a numpy array as a new TensorProto (see `fill_proto`)."""
    proto = tensor_pb2.TensorProto()
    fill_proto(proto, np.asarray(array), typed)
    return proto
