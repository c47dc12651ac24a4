"""TF Serving's REST JSON <-> numpy and tf.Example, by the rules of its `json_tensor.cc`.

Predict requests carry tensors in the row format (`instances`: one item per batch row;
objects of named inputs when the signature has several) or the columnar format
(`inputs`: one value, or an object of named inputs); every JSON value is converted to
the dtype of the signature's input (TF Serving's type inference: JSON numbers become
float inputs without loss of precision, integers only become integer inputs, booleans
only bool inputs, strings and `{"b64": ...}` only string inputs); lists must be dense
(ragged lists are refused naming the depth and lengths). Responses mirror the request's
format (`predictions` / `outputs`), string outputs whose alias ends in `_bytes` (and,
here, string outputs that are not valid UTF-8) as `{"b64": ...}`, floats in their
shortest round-tripping form, NaN and infinities as the `NaN`, `Infinity`, `-Infinity`
tokens TF Serving writes (and reads). Classify/Regress `examples` (and `context`) become
tf.Example protos in a `tensorflow.serving.Input`.

Every malformed value raises `InvalidInput` naming the input (or feature), where it is,
and what was expected, in TF Serving's words first; a tensor over the request's
`DecodeLimits` (rank, elements of a tensor or of the request, bytes of a string) raises
the limit's error (`ResourceExhausted` for sizes) before its array is allocated.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import orjson
from tensorflow_serving.apis import input_pb2

from gateway.core import dtypes
from gateway.core.errors import InvalidInput, Unimplemented
from gateway.core.limits import DEFAULT_LIMITS, DecodeLimits
from gateway.core.servable import Arrays, TensorSpec

B64 = "b64"
BYTES_SUFFIX = "_bytes"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_SHOW_CHARS = 80
_TOO_DEEP = "<a value nested too deeply to show>"

_TF_NAMES = {
    dtypes.DT_FLOAT: "float",
    dtypes.DT_DOUBLE: "double",
    dtypes.DT_INT32: "int32",
    dtypes.DT_UINT8: "uint8",
    dtypes.DT_INT16: "int16",
    dtypes.DT_INT8: "int8",
    dtypes.DT_STRING: "string",
    dtypes.DT_INT64: "int64",
    dtypes.DT_BOOL: "bool",
    dtypes.DT_UINT32: "uint32",
    dtypes.DT_UINT64: "uint64",
    dtypes.DT_HALF: "half",
    dtypes.DT_UINT16: "uint16",
    dtypes.DT_BFLOAT16: "bfloat16",
    dtypes.DT_COMPLEX64: "complex64",
    dtypes.DT_COMPLEX128: "complex128",
}
"""TensorFlow's `DataTypeString` names, the words of TF Serving's messages."""


class Format(enum.Enum):
    """Which layout a Predict request used; its response uses the same."""

    ROW = "instances"
    COLUMNAR = "inputs"

    @property
    def response_key(self) -> str:
        """`predictions` for the row format, `outputs` for the columnar one."""
        return "predictions" if self is Format.ROW else "outputs"


class _ValueError(Exception):
    """A malformed value inside one tensor: the message and its index path."""

    def __init__(self, message: str, path: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


def _tf_name(code: int) -> str:
    return _TF_NAMES.get(code, dtypes.dtype_name(code))


def show(value: Any) -> str:
    """A JSON value as TF Serving's messages print it (shortened)."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:  # orjson writes at most 254 levels; repr recurses too (1000 frames)
        text = _TOO_DEEP
    return text if len(text) <= _SHOW_CHARS else text[: _SHOW_CHARS - 3] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _type_error(value: Any, code: int) -> str:
    return (
        f"JSON Value: {show(value)} Type: {_json_type(value)} is not of expected type: "
        f"{_tf_name(code)}"
    )


# -- parsing -------------------------------------------------------------------------------


def loads(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object. NaN, Infinity and -Infinity are accepted, as TF
    Serving accepts them; a syntax error names its position."""
    if not body.strip():
        raise InvalidInput("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        doc = _nonfinite_json(body)
        if doc is None:
            raise InvalidInput(
                f"JSON Parse error: {exc.msg} at offset: {exc.pos} "
                f"(line {exc.lineno}, column {exc.colno})"
            ) from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"JSON Value: {show(doc)} Is not object")
    return doc


def _nonfinite_json(body: bytes) -> Any:
    """The document read by the standard library, which takes the NaN, Infinity and
    -Infinity tokens orjson refuses; None when it has none of them or does not parse."""
    if b"NaN" not in body and b"Infinity" not in body:
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def signature_name(doc: Mapping[str, Any]) -> str:
    """The optional `signature_name` ('' = serving_default)."""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise InvalidInput(
            f"JSON Value: {show(name)} not formatted correctly. 'signature_name' key must be "
            "a string value."
        )
    return name


# -- JSON values -> tensors ----------------------------------------------------------------


def _dense(
    value: Any, alias: str = "", limits: DecodeLimits = DEFAULT_LIMITS
) -> tuple[tuple[int, ...], list[Any]]:
    """TF Serving's dense shape (each level's length from its first element) and the
    leaf values in row-major order; `_ValueError` for a ragged or uneven list, the
    limits' InvalidInput for a rank over `limits.max_rank` (before any recursion)."""
    shape: list[int] = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    limits.rank(alias, len(shape))
    if not shape:
        return (), [value]
    flat: list[Any] = []
    _collect(value, tuple(shape), 0, (), flat)
    return tuple(shape), flat


def _collect(
    value: list[Any], shape: tuple[int, ...], level: int, path: tuple[int, ...], out: list[Any]
) -> None:
    if level == len(shape) - 1:
        out.extend(value)
        return
    want = shape[level + 1]
    for i, item in enumerate(value):
        if not isinstance(item, list):
            raise _ValueError(
                f"JSON Value: {show(item)} found at incorrect level: {level + 2} in the JSON "
                f"DOM. Expected at level: {len(shape)} (ragged: a list of {want} expected there, "
                f"shape from the first elements {list(shape)})",
                (*path, i),
            )
        if len(item) != want:
            raise _ValueError(
                f"Encountered list at unexpected size: {len(item)} at level: {level + 1} "
                f"expected size: {want} (ragged: every list at one depth must have the same "
                f"length, shape from the first elements {list(shape)})",
                (*path, i),
            )
        _collect(item, shape, level + 1, (*path, i), out)


def _first(flat: Sequence[Any], bad: Callable[[Any], bool]) -> int:
    return next(i for i, v in enumerate(flat) if bad(v))


def _floats(flat: list[Any], code: int) -> np.ndarray:
    types = set(map(type, flat))
    if not types <= {float, int}:
        i = _first(flat, lambda v: type(v) not in (float, int))
        raise _ValueError(_type_error(flat[i], code), (i,))
    try:
        wide = np.array(flat, dtype=np.float64)
    except OverflowError:
        i = _first(flat, lambda v: type(v) is int and abs(v) > 2**1023)
        raise _ValueError(_lossy(flat[i], code), (i,)) from None
    limit = 2 ** (24 if code == dtypes.DT_FLOAT else 53) - 1
    if int in types:  # integers beyond the float's mantissa lose precision
        for i in np.flatnonzero(np.abs(wide) > limit).tolist():
            if type(flat[i]) is int:
                raise _ValueError(_lossy(flat[i], code), (i,))
    if code == dtypes.DT_FLOAT:
        finite = np.isfinite(wide)
        too_big = np.flatnonzero(finite & (np.abs(wide) > _FLOAT32_MAX))
        if too_big.size:
            i = int(too_big[0])
            raise _ValueError(_lossy(flat[i], code), (i,))
        return wide.astype(np.float32)
    return wide


def _lossy(value: Any, code: int) -> str:
    return (
        f"Cannot convert JSON value: {show(value)} to {_tf_name(code)} without loss of precision."
    )


def _integers(flat: list[Any], code: int) -> np.ndarray:
    target = dtypes.numpy_dtype(code)
    assert target is not None
    if not set(map(type, flat)) <= {int}:
        i = _first(flat, lambda v: type(v) is not int)
        raise _ValueError(_type_error(flat[i], code), (i,))
    info = np.iinfo(target)
    if flat and (min(flat) < info.min or max(flat) > info.max):
        i = _first(flat, lambda v: v < info.min or v > info.max)
        raise _ValueError(_type_error(flat[i], code), (i,))
    return np.array(flat, dtype=target)


def _bools(flat: list[Any], code: int) -> np.ndarray:
    if not set(map(type, flat)) <= {bool}:
        i = _first(flat, lambda v: type(v) is not bool)
        raise _ValueError(_type_error(flat[i], code), (i,))
    return np.array(flat, dtype=np.bool_)


def _b64_object(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(B64), str)


def b64_decode(value: dict[str, Any]) -> bytes:
    """The bytes of a `{"b64": "..."}` object (padding optional, as TF Serving's decoder)."""
    text = value[B64]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _ValueError(f"Unable to base64 decode: {show(value)}") from None


def _strings(flat: list[Any], code: int) -> np.ndarray:
    values: list[bytes] = []
    for i, v in enumerate(flat):
        if type(v) is str:
            values.append(_utf8(v))
        elif isinstance(v, dict):
            if not _b64_object(v):
                raise _ValueError(
                    f"JSON Value: {show(v)} not formatted correctly for base64 data", (i,)
                )
            try:
                values.append(b64_decode(v))
            except _ValueError as exc:
                raise _ValueError(exc.message, (i,)) from None
        else:
            raise _ValueError(_type_error(v, code), (i,))
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


_CONVERTERS: dict[int, Callable[[list[Any], int], np.ndarray]] = {
    dtypes.DT_FLOAT: _floats,
    dtypes.DT_DOUBLE: _floats,
    dtypes.DT_INT32: _integers,
    dtypes.DT_INT16: _integers,
    dtypes.DT_INT8: _integers,
    dtypes.DT_UINT8: _integers,
    dtypes.DT_INT64: _integers,
    dtypes.DT_UINT32: _integers,
    dtypes.DT_UINT64: _integers,
    dtypes.DT_BOOL: _bools,
    dtypes.DT_STRING: _strings,
}
"""The input dtypes TF Serving's REST API converts JSON to (no half, uint16, complex)."""


class _Budget:
    """A request's `DecodeLimits` and the running element total of its tensors."""

    def __init__(self, limits: DecodeLimits) -> None:
        self.limits = limits
        self.elements = 0

    def take(self, alias: str, shape: tuple[int, ...]) -> None:
        """Check one more tensor's shape: its element count, then the request's total."""
        self.elements += self.limits.element_count(alias, shape)
        self.limits.request_elements(self.elements, alias)


def _tensor(value: Any, spec: TensorSpec, alias: str, budget: _Budget) -> np.ndarray:
    """One JSON value (scalar or nested list) as an array of the input's dtype;
    `_ValueError` with the index path of the offending value, the limits' errors (naming
    `alias`) for a rank, element count or string over them. The element counts are
    checked once the list is known to be dense (a ragged list is reported as ragged),
    before the array is allocated (the flat list of JSON values is bounded by the body)."""
    convert = _CONVERTERS.get(spec.dtype)
    if convert is None:
        raise Unimplemented(
            f"Conversion of JSON Value: {show(value)} to type: {_tf_name(spec.dtype)} "
            "is not supported by the REST API (use gRPC)"
        )
    shape, flat = _dense(value, alias, budget.limits)
    budget.take(alias, shape)
    if list in set(map(type, flat)):
        i = _first(flat, lambda v: type(v) is list)
        raise _ValueError(
            f"Encountered list at unexpected level: {len(shape)} expected < {len(shape)} "
            f"(ragged: a value expected there, shape from the first elements {list(shape)})",
            _unravel(i, shape),
        )
    try:
        array = convert(flat, spec.dtype)
    except _ValueError as exc:
        raise _ValueError(exc.message, _unravel(exc.path[0], shape) if exc.path else ()) from None
    if array.dtype == object and array.size:
        budget.limits.string_bytes(alias, max(map(len, array)))
    return array.reshape(shape)


def _unravel(index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    if not shape:
        return ()
    return tuple(int(i) for i in np.unravel_index(index, shape))


def _where(path: tuple[int, ...]) -> str:
    return "".join(f"[{i}]" for i in path)


def predict_inputs(
    doc: Mapping[str, Any],
    specs: Mapping[str, TensorSpec],
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> tuple[Arrays, Format]:
    """The named input tensors of a Predict request and the format it used; `specs` are the
    signature's inputs (their dtypes decide how JSON values convert); every tensor, and
    the request's running element total, is checked against `limits` before the next
    one is converted."""
    if not specs:
        raise InvalidInput("Failed to get input map for signature: it has no inputs")
    has_rows, has_columns = "instances" in doc, "inputs" in doc
    if has_rows and has_columns:
        raise InvalidInput(
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"
        )
    if has_rows:
        return _rows(doc["instances"], specs, _Budget(limits)), Format.ROW
    if has_columns:
        return _columns(doc["inputs"], specs, _Budget(limits)), Format.COLUMNAR
    raise InvalidInput("Missing 'inputs' or 'instances' key")


def _named_object(value: Any) -> bool:
    return isinstance(value, dict) and not _b64_object(value)


def _rows(instances: Any, specs: Mapping[str, TensorSpec], budget: _Budget) -> Arrays:
    """The row format: the items of `instances` stacked along a new batch dimension."""
    if not isinstance(instances, list):
        raise InvalidInput(f"Expecting 'instances' to be an list/array, got {show(instances)}")
    if not instances:
        raise InvalidInput("No values in 'instances' array")
    names = sorted(specs)
    if not _named_object(instances[0]):
        if len(specs) > 1:
            raise InvalidInput(
                "instances is a plain list, but expecting list of objects as multiple input "
                f"tensors required as per tensorinfo_map (inputs: {', '.join(names)})"
            )
        for i, item in enumerate(instances):
            if _named_object(item):
                raise InvalidInput(f"Expecting value/list but got object at item {i} of input list")
        (name,) = names
        return {name: _row_tensor(instances, name, specs[name], budget, keyed=False)}
    for i, item in enumerate(instances):
        if not _named_object(item):
            raise InvalidInput(f"Expecting object but got list at item {i} of input list")
        unknown = sorted(set(item) - set(specs))
        if unknown:
            raise InvalidInput(
                f"Failed to process element: {i} key: {unknown[0]} of 'instances' list. Error: "
                f"JSON object: does not have named input: {unknown[0]} (inputs: "
                f"{', '.join(names)})"
            )
        if len(item) != len(specs):
            raise InvalidInput(
                f"Failed to process element: {i} of 'instances' list. JSON object: "
                f"{show(item)} keys must be equal to: {','.join(names)} (missing: "
                f"{', '.join(sorted(set(specs) - set(item)))})"
            )
    return {
        name: _row_tensor([item[name] for item in instances], name, specs[name], budget, True)
        for name in names
    }


def _row_tensor(
    column: list[Any], name: str, spec: TensorSpec, budget: _Budget, keyed: bool
) -> np.ndarray:
    try:
        return _tensor(column, spec, name, budget)
    except _ValueError as exc:
        element, *rest = exc.path or (0,)
        key = f" key: {name}" if keyed else ""
        at = f"instances[{element}]" + (f"[{name!r}]" if keyed else "") + _where(tuple(rest))
        raise InvalidInput(
            f"Failed to process element: {element}{key} of 'instances' list. Error: "
            f"input '{name}': {exc.message} (at {at})"
        ) from None


def _columns(inputs: Any, specs: Mapping[str, TensorSpec], budget: _Budget) -> Arrays:
    """The columnar format: one value (a single input) or an object of named inputs;
    keys the signature does not have are ignored, as TF Serving ignores them."""
    if not _named_object(inputs):
        if len(specs) > 1:
            raise InvalidInput(
                "inputs is a plain value/list, but expecting an object as multiple input "
                f"tensors required as per tensorinfo_map (inputs: {', '.join(sorted(specs))})"
            )
        (name,) = specs
        return {name: _column_tensor(inputs, name, specs[name], budget, "inputs")}
    out: Arrays = {}
    for name in sorted(specs):
        if name not in inputs:
            raise InvalidInput(f"Missing named input: {name} in 'inputs' object.")
        out[name] = _column_tensor(inputs[name], name, specs[name], budget, f"inputs[{name!r}]")
    return out


def _column_tensor(
    value: Any, name: str, spec: TensorSpec, budget: _Budget, where: str
) -> np.ndarray:
    try:
        return _tensor(value, spec, name, budget)
    except _ValueError as exc:
        at = f" at {where}{_where(exc.path)}" if exc.path else ""
        raise InvalidInput(f"input '{name}': {exc.message}{at}") from None


# -- tensors -> JSON -----------------------------------------------------------------------

_WRITABLE = frozenset(
    {
        dtypes.DT_FLOAT,
        dtypes.DT_DOUBLE,
        dtypes.DT_INT32,
        dtypes.DT_INT16,
        dtypes.DT_INT8,
        dtypes.DT_UINT8,
        dtypes.DT_HALF,
        dtypes.DT_STRING,
        dtypes.DT_INT64,
        dtypes.DT_BOOL,
        dtypes.DT_UINT32,
        dtypes.DT_UINT64,
    }
)
"""The output dtypes TF Serving's REST API writes (no uint16, no complex)."""


class _Doc:
    """A response document being built, and whether it holds a non-finite float."""

    def __init__(self) -> None:
        self.nonfinite = False

    def value(self, alias: str, array: np.ndarray) -> Any:
        """An output as something orjson writes: a native numeric array (or numpy scalar),
        or nested lists of str / `{"b64": ...}` for strings."""
        code = dtypes.dtype_code(array)
        if code not in _WRITABLE:
            raise InvalidInput(
                f"Failed to write JSON value for tensor type: "
                f"{_tf_name(code) if code is not None else array.dtype.name} (output '{alias}')"
            )
        if code == dtypes.DT_STRING:
            return _strings_out(alias, array)
        if array.dtype.kind == "f" and not bool(np.isfinite(array).all()):
            self.nonfinite = True
        native = array.astype(array.dtype.newbyteorder("="), copy=False)
        if native.ndim == 0:
            return native[()]  # a numpy scalar (ascontiguousarray would make it 1-D)
        return np.ascontiguousarray(native)

    def dumps(self, doc: Any) -> bytes:
        """The document as JSON bytes; with NaN or infinities, TF Serving's tokens."""
        if not self.nonfinite:
            return orjson.dumps(doc, option=_NUMPY)
        return json.dumps(doc, default=_plain, allow_nan=True, separators=(",", ":")).encode()


def _strings_out(alias: str, array: np.ndarray) -> Any:
    flat = array.reshape(-1).tolist()
    encoded: list[Any] | None = None
    if not alias.endswith(BYTES_SUFFIX):
        try:
            encoded = [v.decode() if isinstance(v, bytes) else str(v) for v in flat]
        except UnicodeDecodeError:
            encoded = None  # not text: the whole tensor as base64, never invalid JSON
    if encoded is None:
        encoded = [
            {B64: base64.b64encode(v if isinstance(v, bytes) else str(v).encode()).decode()}
            for v in flat
        ]
    return _nest(encoded, array.shape)


def _nest(flat: list[Any], shape: tuple[int, ...]) -> Any:
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return flat
    step = math.prod(shape[1:])
    return [_nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def _plain(obj: Any) -> Any:
    """`json.dumps` default for numpy values: floats in their shortest form (orjson's),
    NaN and infinities kept for `allow_nan`."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind != "f":
            return obj.tolist()
        finite = np.isfinite(obj)
        values = orjson.loads(orjson.dumps(np.where(finite, obj, 0), option=_NUMPY))
        for index in zip(*np.nonzero(~finite), strict=True):
            target = values
            for i in index[:-1]:
                target = target[i]
            target[index[-1]] = float(obj[index])
        return values
    if isinstance(obj, np.floating):
        return float(str(obj)) if math.isfinite(obj) else float(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def predict_body(outputs: Arrays, fmt: Format) -> bytes:
    """A Predict response: `{"predictions": ...}` (rows: the single output's rows, or one
    object of named outputs per row) or `{"outputs": ...}` (the single output, or an
    object of named outputs)."""
    if not outputs:
        raise InvalidInput("Cannot convert empty tensor map to JSON")
    doc = _Doc()
    if fmt is Format.COLUMNAR:
        if len(outputs) == 1:
            ((alias, array),) = outputs.items()
            body: Any = doc.value(alias, array)
        else:
            body = {alias: doc.value(alias, array) for alias, array in outputs.items()}
        return doc.dumps({fmt.response_key: body})
    batch: int | None = None
    for alias, array in outputs.items():
        if array.ndim == 0:
            raise InvalidInput(f"Tensor name: {alias} has no shape information ")
        if batch is not None and array.shape[0] != batch:
            raise InvalidInput(
                f"Tensor name: {alias} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch}"
            )
        batch = array.shape[0]
    if len(outputs) == 1:
        ((alias, array),) = outputs.items()
        return doc.dumps({fmt.response_key: doc.value(alias, array)})
    columns = {alias: doc.value(alias, array) for alias, array in outputs.items()}
    rows = [{alias: column[i] for alias, column in columns.items()} for i in range(batch or 0)]
    return doc.dumps({fmt.response_key: rows})


def classify_body(result: Any) -> bytes:
    """`{"results": [[[label, score], ...], ...]}` of a ClassificationResult."""
    if not result.classifications:
        raise InvalidInput("Cannot convert empty ClassificationResults to JSON")
    doc = _Doc()
    rows = []
    for classifications in result.classifications:
        row = []
        for c in classifications.classes:
            if not math.isfinite(c.score):
                doc.nonfinite = True
            row.append([c.label, np.float32(c.score)])
        rows.append(row)
    return doc.dumps({"results": rows})


def regress_body(result: Any) -> bytes:
    """`{"results": [value, ...]}` of a RegressionResult."""
    if not result.regressions:
        raise InvalidInput("Cannot convert empty RegressionResults to JSON")
    doc = _Doc()
    values = np.array([r.value for r in result.regressions], dtype=np.float32)
    return doc.dumps({"results": doc.value("results", values)})


def error_body(message: str) -> bytes:
    """TF Serving's error document `{"error": "<message>"}`."""
    return orjson.dumps({"error": message})


# -- examples -> tf.Example ----------------------------------------------------------------


def examples_input(doc: Mapping[str, Any], method: str) -> Any:
    """The `tensorflow.serving.Input` of a Classify/Regress request: `examples` (a list of
    objects, feature -> value or list of values), with `context` merged into each when
    given (`example_list_with_context`)."""
    inp = input_pb2.Input()
    has_context = "context" in doc
    if has_context:
        _fill_example(doc["context"], inp.example_list_with_context.context, "context")
    if "examples" not in doc:
        raise InvalidInput(f"When method is {method}, key 'examples' is expected and was not found")
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise InvalidInput(f"Expecting 'examples' value to be an list/array, got {show(examples)}")
    if not examples:
        raise InvalidInput("'examples' value is an empty array")
    target = inp.example_list_with_context.examples if has_context else inp.example_list.examples
    for i, value in enumerate(examples):
        _fill_example(value, target.add(), f"examples[{i}]")
    return inp


def _fill_example(value: Any, example: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: Example must be JSON object but got JSON {_json_type(value)}")
    features = example.features.feature
    for name, content in value.items():
        values = content if isinstance(content, list) else [content]
        try:
            _fill_feature(features[name], name, values)
        except _ValueError as exc:
            raise InvalidInput(f"{where}: {exc.message}") from None


_KIND_WORDS = {"float_list": "float", "int64_list": "int64", "bytes_list": "bytes"}
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1


def _fill_feature(feature: Any, name: str, values: list[Any]) -> None:
    """One feature's values, TF Serving's rules: integers (and booleans, as 1/0) are
    int64, decimals float (within float's range), strings and `{"b64": ...}` bytes; every
    value of a feature of one kind."""
    types = set(map(type, values))
    if types == {float}:
        kind, converted = "float_list", values
    elif types == {int} and min(values) >= -_INT64_MAX - 1 and max(values) <= _INT64_MAX:
        kind, converted = "int64_list", values
    elif types == {str}:
        kind, converted = "bytes_list", [_utf8(v) for v in values]
    else:
        kind, converted = "", []
        for v in values:
            this, item = _feature_value(name, v)
            if kind and this != kind:
                raise _ValueError(
                    f"Unexpected element type in feature: {name} expecting type: "
                    f"{_KIND_WORDS[kind]} (got {show(v)})"
                )
            kind = this
            converted.append(item)
    if kind == "float_list":
        for v in converted:
            if math.isfinite(v) and abs(v) > _FLOAT32_MAX:
                raise _ValueError(f"Feature: {name}: " + _lossy(v, dtypes.DT_FLOAT))
    if kind:
        getattr(feature, kind).value.extend(converted)


def _feature_value(name: str, value: Any) -> tuple[str, Any]:
    if (
        value is None
        or isinstance(value, list)
        or (isinstance(value, dict) and not _b64_object(value))
    ):
        raise _ValueError(
            f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}"
        )
    if isinstance(value, bool):
        return "int64_list", int(value)
    if isinstance(value, dict):
        try:
            return "bytes_list", b64_decode(value)
        except _ValueError as exc:
            raise _ValueError(f"Feature: {name}: {exc.message}") from None
    if isinstance(value, str):
        return "bytes_list", _utf8(value)
    if isinstance(value, float):
        return "float_list", value
    if value > _UINT64_MAX or value < -_INT64_MAX - 1:
        return "float_list", float(value)  # beyond 64 bits JSON parsers read a double
    if value > _INT64_MAX:
        raise _ValueError(f"Feature: {name} has uint64 element. Only int64 is supported.")
    return "int64_list", value


__all__ = [
    "Format",
    "classify_body",
    "error_body",
    "examples_input",
    "loads",
    "predict_body",
    "predict_inputs",
    "regress_body",
    "signature_name",
]
