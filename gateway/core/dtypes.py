"""The dtype table: TensorFlow's DataType enum values, their numpy dtypes and names.

The enum values are TensorFlow's (`tensorflow/core/framework/types.proto`), written
out here so that the core needs no TensorFlow or protobuf import; every wire format
(TensorProto, JSON, the Open Inference Protocol) maps to and from these codes.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

DT_INVALID: Final = 0
DT_FLOAT: Final = 1
DT_DOUBLE: Final = 2
DT_INT32: Final = 3
DT_UINT8: Final = 4
DT_INT16: Final = 5
DT_INT8: Final = 6
DT_STRING: Final = 7
DT_COMPLEX64: Final = 8
DT_INT64: Final = 9
DT_BOOL: Final = 10
DT_QINT8: Final = 11
DT_QUINT8: Final = 12
DT_QINT32: Final = 13
DT_BFLOAT16: Final = 14
DT_QINT16: Final = 15
DT_QUINT16: Final = 16
DT_UINT16: Final = 17
DT_COMPLEX128: Final = 18
DT_HALF: Final = 19
DT_RESOURCE: Final = 20
DT_VARIANT: Final = 21
DT_UINT32: Final = 22
DT_UINT64: Final = 23

_NUMPY: dict[int, tuple[np.dtype[Any], str]] = {
    DT_FLOAT: (np.dtype(np.float32), "float32"),
    DT_DOUBLE: (np.dtype(np.float64), "float64"),
    DT_INT32: (np.dtype(np.int32), "int32"),
    DT_UINT8: (np.dtype(np.uint8), "uint8"),
    DT_INT16: (np.dtype(np.int16), "int16"),
    DT_INT8: (np.dtype(np.int8), "int8"),
    DT_UINT16: (np.dtype(np.uint16), "uint16"),
    DT_INT64: (np.dtype(np.int64), "int64"),
    DT_UINT32: (np.dtype(np.uint32), "uint32"),
    DT_UINT64: (np.dtype(np.uint64), "uint64"),
    DT_BOOL: (np.dtype(np.bool_), "bool"),
    DT_HALF: (np.dtype(np.float16), "float16"),
    DT_COMPLEX64: (np.dtype(np.complex64), "complex64"),
    DT_COMPLEX128: (np.dtype(np.complex128), "complex128"),
    DT_STRING: (np.dtype(object), "string"),
}
"""Every dtype the gateway converts; strings are numpy object arrays of bytes."""

_OTHER_NAMES: dict[int, str] = {
    DT_INVALID: "invalid",
    DT_QINT8: "qint8",
    DT_QUINT8: "quint8",
    DT_QINT32: "qint32",
    DT_BFLOAT16: "bfloat16",
    DT_QINT16: "qint16",
    DT_QUINT16: "quint16",
    DT_RESOURCE: "resource",
    DT_VARIANT: "variant",
}

_BY_NUMPY: dict[np.dtype[Any], int] = {
    dtype: code for code, (dtype, _) in _NUMPY.items() if dtype != np.dtype(object)
}


def dtype_name(code: int) -> str:
    """Human name of a DataType value (e.g. 1 -> 'float32')."""
    known = _NUMPY.get(code)
    if known is not None:
        return known[1]
    return _OTHER_NAMES.get(code, f"unknown dtype {code}")


def numpy_dtype(code: int) -> np.dtype[Any] | None:
    """numpy dtype of a DataType value, or None when the gateway cannot convert it."""
    known = _NUMPY.get(code)
    return known[0] if known else None


def dtype_code(array: np.ndarray) -> int | None:
    """DataType value of a numpy array (bytes/str/object arrays are DT_STRING); None when
    the array's dtype has no TensorFlow equivalent."""
    if array.dtype.kind in "OSU":
        return DT_STRING
    return _BY_NUMPY.get(array.dtype.newbyteorder("="))
