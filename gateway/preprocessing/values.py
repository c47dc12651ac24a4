"""Value kinds and vectorized conversions shared by preprocessing and analysis.

Raw features arrive as numpy arrays whose first dimension is the batch.  String
features may be ``bytes`` (``S``), text (``U``) or ``object`` arrays (what
``tf.make_ndarray`` returns for ``DT_STRING``); everything string-like is
normalized to fixed-width UTF-8 bytes (``S``) so that lookups run in C.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = [
    "PreprocessingError",
    "ValueKind",
    "as_bytes",
    "as_text",
    "value_kind",
]


class PreprocessingError(ValueError):
    """A batch cannot be preprocessed (e.g. an out-of-vocabulary value with no OOV bucket)."""


class ValueKind(enum.StrEnum):
    """Kind of values a feature carries: float, int (incl. bool) or string."""

    FLOAT = "float"
    INT = "int"
    STRING = "string"


def value_kind(values: np.ndarray) -> ValueKind:
    """Classify an array by dtype: ``f`` -> FLOAT, ``i/u/b`` -> INT, ``S/U/O`` -> STRING."""
    k = values.dtype.kind
    if k == "f":
        return ValueKind.FLOAT
    if k in "iub":
        return ValueKind.INT
    if k in "SUO":
        return ValueKind.STRING
    raise ValueError(f"unsupported dtype {values.dtype}")


def as_bytes(values: np.ndarray) -> np.ndarray:
    """Convert a string-like array to a fixed-width UTF-8 bytes (``S``) array of the same shape.

    ASCII text converts with one C cast; non-ASCII text falls back to numpy's
    element-wise UTF-8 encoder.  Trailing NUL bytes are not preserved (numpy
    ``S`` semantics).  ``None`` in object arrays must be filled first.
    """
    k = values.dtype.kind
    if k == "S":
        return values
    if k in "UO":
        try:
            return values.astype(np.bytes_)
        except UnicodeEncodeError:
            if k == "U":
                return np.asarray(np.strings.encode(values, "utf-8"))
            # object array with non-ASCII str (and maybe bytes) elements
            enc = np.frompyfunc(lambda s: s.encode("utf-8") if isinstance(s, str) else s, 1, 1)
            return np.asarray(enc(values)).astype(np.bytes_)
    raise ValueError(f"expected a string array, got dtype {values.dtype}")


def as_text(token: bytes | str) -> str:
    """Decode one token to ``str`` (UTF-8, undecodable bytes replaced)."""
    if isinstance(token, bytes):
        return token.decode("utf-8", errors="replace")
    return token
