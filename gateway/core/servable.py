"""Loaded, immutable model versions: what the request path is allowed to see.

A `LoadedVersion` is built by the lifecycle (off the request path) and never
changes afterwards. The request path only calls `Signature.validate` and the
version's batched runner; it never touches files or TensorFlow loading APIs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gateway.core.dtypes import dtype_name, numpy_dtype
from gateway.core.errors import InvalidInput

_KIND = {"f": "f", "i": "i", "u": "i", "b": "i", "O": "s", "S": "s", "U": "s"}
_KIND_NAME = {"f": "float", "i": "integer", "s": "string"}

PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
DEFAULT_SIGNATURE = "serving_default"

Arrays = dict[str, np.ndarray]
RunFn = Callable[[Mapping[str, np.ndarray]], Arrays]


@dataclass(frozen=True)
class TensorSpec:
    """dtype (TF enum) and shape (None = unknown dim; shape None = unknown rank)."""

    dtype: int
    shape: tuple[int | None, ...] | None
    kind_only: bool = False
    """Raw-feature inputs accept any width of the right kind (float/int/string)."""

    @property
    def np_dtype(self) -> np.dtype[Any] | None:
        """numpy dtype, or None for dtypes the gateway cannot convert."""
        return numpy_dtype(self.dtype)

    def describe(self) -> str:
        """e.g. `float32 [?, 4]`."""
        if self.shape is None:
            dims = "<unknown rank>"
        else:
            dims = "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"
        if self.kind_only:
            np_dtype = self.np_dtype
            kind = _KIND_NAME[_KIND[np_dtype.kind]] if np_dtype is not None else "?"
            return f"{kind} {dims}"
        return f"{dtype_name(self.dtype)} {dims}"

    def batch_major(self) -> bool:
        """True when the first dimension is the (unknown) batch dimension."""
        return self.shape is not None and len(self.shape) >= 1 and self.shape[0] is None


def _shape_ok(spec: TensorSpec, array: np.ndarray) -> bool:
    if spec.shape is None:
        return True
    return len(array.shape) == len(spec.shape) and all(
        w is None or w == g for w, g in zip(spec.shape, array.shape, strict=True)
    )


@dataclass(frozen=True)
class Signature:
    """One SignatureDef of a version: its method, input/output specs and how to run it."""

    name: str
    method: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    run: RunFn = field(repr=False, compare=False)
    prepare: Callable[[Mapping[str, np.ndarray]], Arrays] | None = field(
        default=None, repr=False, compare=False
    )
    """For raw-feature signatures: raw features -> the model's inputs (preprocessing)."""
    strict_shapes: bool = True
    """False for TF1 graphs run with session semantics: TensorFlow itself checks shapes
    (a tensor that is not a placeholder may be fed any shape it accepts), so `validate`
    checks names and dtypes only, and a request whose shapes differ from the signature's
    runs on its own instead of being batched."""

    @property
    def batchable(self) -> bool:
        """Requests can be concatenated along dim 0 when every tensor is batch-major."""
        return all(s.batch_major() for s in self.inputs.values()) and all(
            s.batch_major() for s in self.outputs.values()
        )

    def validate(self, inputs: Mapping[str, np.ndarray]) -> int:
        """Check aliases, dtypes and shapes; return the batch size (rows) of the request.

        Raises `InvalidInput` naming the alias, the expected and the received dtype/shape.
        """
        missing = sorted(set(self.inputs) - set(inputs))
        if missing:
            raise InvalidInput(
                f"missing input {', '.join(repr(m) for m in missing)} for signature "
                f"'{self.name}'; expected inputs: {self._expected()}"
            )
        extra = sorted(set(inputs) - set(self.inputs))
        if extra:
            raise InvalidInput(
                f"unexpected input {', '.join(repr(e) for e in extra)} for signature "
                f"'{self.name}'; expected inputs: {self._expected()}"
            )
        rows: int | None = None
        for alias, spec in self.inputs.items():
            array = inputs[alias]
            want = spec.np_dtype
            got_string = array.dtype.kind in "OSU"
            if spec.kind_only and want is not None:
                wrong = _KIND[want.kind] != _KIND.get(array.dtype.kind)
            else:
                wrong = (want == np.dtype(object)) != got_string or (
                    not got_string and array.dtype != want
                )
            if wrong:
                expected = (
                    _KIND_NAME[_KIND[want.kind]]
                    if spec.kind_only and want is not None
                    else dtype_name(spec.dtype)
                )
                raise InvalidInput(
                    f"input '{alias}': expected dtype {expected}, got "
                    f"{'string' if got_string else array.dtype.name} (signature '{self.name}' "
                    f"expects {spec.describe()})"
                )
            if not _shape_ok(spec, array):
                if not self.strict_shapes:
                    continue
                raise InvalidInput(
                    f"input '{alias}': expected shape {spec.describe().split(' ', 1)[1]}, "
                    f"got {list(array.shape)}"
                )
            if spec.batch_major():
                if rows is None:
                    rows = array.shape[0]
                elif array.shape[0] != rows:
                    raise InvalidInput(
                        f"input '{alias}': batch size {array.shape[0]} differs from other "
                        f"inputs' batch size {rows}"
                    )
        return rows if rows is not None else 1

    def conforms(self, inputs: Mapping[str, np.ndarray]) -> bool:
        """Every input has the signature's shape (what batching needs)."""
        return all(_shape_ok(spec, inputs[alias]) for alias, spec in self.inputs.items())

    def _expected(self) -> str:
        return ", ".join(f"'{a}': {s.describe()}" for a, s in sorted(self.inputs.items()))


@dataclass(frozen=True)
class LoadedVersion:
    """A ready model version: signatures plus the SignatureDef protos for metadata.

    `extensions` carries per-version data added by load hooks (preprocessing,
    training statistics, ...) keyed by hook name.
    """

    model: str
    version: int
    path: Path
    signatures: Mapping[str, Signature]
    signature_defs: Any = field(repr=False, compare=False)  # SignatureDefMap proto
    # Any: each load hook stores its own type under its name (the bundle, the runtime...)
    extensions: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    resource: Any = field(default=None, repr=False, compare=False)  # keeps TF objects alive

    def signature(self, name: str) -> Signature:
        """Return signature `name` ('' = serving_default); NotFound-style InvalidInput otherwise."""
        key = name or DEFAULT_SIGNATURE
        sig = self.signatures.get(key)
        if sig is None:
            raise InvalidInput(
                f"signature_name '{key}' not found in model '{self.model}' version "
                f"{self.version}; available: {', '.join(sorted(self.signatures)) or 'none'}"
            )
        return sig
