"""TensorProto <-> numpy conversion, validated, without going through TensorFlow.

`tf.make_ndarray` / `tf.make_tensor_proto` are correct but slow on the request
path; these functions handle the wire forms TF Serving clients send
(`tensor_content` or the typed `*_val` fields, including the single-value
broadcast form) and raise `InvalidInput` naming the alias for malformed tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from gateway.errors import InvalidInput


@dataclass(frozen=True)
class _Wire:
    dtype: np.dtype[Any]
    field: str  # the TensorProto repeated field used when tensor_content is empty
    name: str


_WIRE: dict[int, _Wire] = {
    types_pb2.DT_FLOAT: _Wire(np.dtype(np.float32), "float_val", "float32"),
    types_pb2.DT_DOUBLE: _Wire(np.dtype(np.float64), "double_val", "float64"),
    types_pb2.DT_INT32: _Wire(np.dtype(np.int32), "int_val", "int32"),
    types_pb2.DT_UINT8: _Wire(np.dtype(np.uint8), "int_val", "uint8"),
    types_pb2.DT_INT16: _Wire(np.dtype(np.int16), "int_val", "int16"),
    types_pb2.DT_INT8: _Wire(np.dtype(np.int8), "int_val", "int8"),
    types_pb2.DT_UINT16: _Wire(np.dtype(np.uint16), "int_val", "uint16"),
    types_pb2.DT_INT64: _Wire(np.dtype(np.int64), "int64_val", "int64"),
    types_pb2.DT_UINT32: _Wire(np.dtype(np.uint32), "uint32_val", "uint32"),
    types_pb2.DT_UINT64: _Wire(np.dtype(np.uint64), "uint64_val", "uint64"),
    types_pb2.DT_BOOL: _Wire(np.dtype(np.bool_), "bool_val", "bool"),
    types_pb2.DT_HALF: _Wire(np.dtype(np.float16), "half_val", "float16"),
    types_pb2.DT_STRING: _Wire(np.dtype(object), "string_val", "string"),
}
_BY_NUMPY: dict[np.dtype[Any], int] = {
    w.dtype: code for code, w in _WIRE.items() if w.dtype != np.dtype(object)
}


def dtype_name(code: int) -> str:
    """Human name of a TF DataType enum value (e.g. 1 -> 'float32')."""
    wire = _WIRE.get(code)
    if wire is not None:
        return wire.name
    try:
        return str(types_pb2.DataType.Name(code)).removeprefix("DT_").lower()
    except ValueError:
        return f"unknown dtype {code}"


def numpy_dtype(code: int) -> np.dtype[Any] | None:
    """numpy dtype for a TF DataType enum value, or None when unsupported."""
    wire = _WIRE.get(code)
    return wire.dtype if wire else None


def tf_dtype_code(array: np.ndarray) -> int:
    """TF DataType enum value for a numpy array (bytes/str/object arrays are DT_STRING)."""
    if array.dtype.kind in "OSU":
        return int(types_pb2.DT_STRING)
    code = _BY_NUMPY.get(array.dtype)
    if code is None:
        raise InvalidInput(f"unsupported output dtype {array.dtype}")
    return code


def to_numpy(alias: str, proto: tensor_pb2.TensorProto) -> np.ndarray:
    """Decode one request tensor; raises `InvalidInput` naming `alias` when malformed."""
    wire = _WIRE.get(proto.dtype)
    if wire is None:
        raise InvalidInput(
            f"input '{alias}': unsupported or invalid dtype {dtype_name(proto.dtype)}"
        )
    if proto.tensor_shape.unknown_rank:
        raise InvalidInput(f"input '{alias}': tensor_shape has unknown rank; expected a full shape")
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if any(d < 0 for d in shape):
        raise InvalidInput(f"input '{alias}': negative dimension in tensor_shape {list(shape)}")
    count = math.prod(shape)
    if wire.dtype == np.dtype(object):
        values = proto.string_val
        if len(values) == count:
            out = np.empty(count, dtype=object)
            out[:] = list(values)
            return out.reshape(shape)
        if len(values) == 1 and count > 1:
            out = np.empty(count, dtype=object)
            out[:] = values[0]
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
    if proto.dtype == types_pb2.DT_HALF:
        flat = np.asarray(values, dtype=np.uint16).view(np.float16)
    else:
        flat = np.asarray(values, dtype=wire.dtype)
    if n == count:
        return flat.reshape(shape)
    if n == 1 and count > 1:
        return np.full(shape, flat[0], dtype=wire.dtype)
    if n == 0 and count == 0:
        return flat.reshape(shape)
    raise InvalidInput(
        f"input '{alias}': shape {list(shape)} needs {count} values in {wire.field}, got {n}"
    )


def _shape_proto(shape: tuple[int, ...]) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in shape]
    )


def fill_proto(proto: tensor_pb2.TensorProto, array: np.ndarray) -> None:
    """Write `array` into `proto` (numeric via tensor_content, strings via string_val)."""
    proto.dtype = tf_dtype_code(array)
    proto.tensor_shape.CopyFrom(_shape_proto(array.shape))
    if proto.dtype == types_pb2.DT_STRING:
        flat = array.reshape(-1)
        if flat.dtype.kind == "U":
            proto.string_val.extend(s.encode() for s in flat.tolist())
        else:
            proto.string_val.extend(flat.tolist())
        return
    proto.tensor_content = (
        np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    )


def from_numpy(array: np.ndarray) -> tensor_pb2.TensorProto:
    """Encode a numpy array as a new TensorProto."""
    proto = tensor_pb2.TensorProto()
    fill_proto(proto, np.asarray(array))
    return proto
