"""Import adapted Keras 3 preprocessing layers as serializable transforms.

Supported: ``Normalization``, ``Discretization``, ``StringLookup``,
``IntegerLookup``, ``Hashing`` and ``CategoryEncoding``.  The resulting transform
chain gives the same values as calling the layer on a [batch, ...] input (see the
per-class notes in :mod:`gateway.preprocessing.transforms` for dtype and rank-1
differences).  Any configuration we cannot reproduce exactly raises a
``ValueError`` naming the layer and the setting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gateway.preprocessing.pipeline import FeaturePreprocessing, Preprocessing, RawFeatureSpec
from gateway.preprocessing.transforms import (
    Bucketize,
    CategoryEncoding,
    EncodingMode,
    Hashing,
    Standardize,
    Transform,
    Vocabulary,
)

__all__ = ["from_keras_layer", "preprocessing_from_keras"]

_KERAS_EPSILON = 1e-7  # keras.config.epsilon() default, used by Normalization


def _describe(layer: Any) -> str:
    return f"{type(layer).__name__} layer {getattr(layer, 'name', '?')!r}"


def _unsupported(layer: Any, setting: str) -> ValueError:
    return ValueError(f"{_describe(layer)}: unsupported setting {setting}")


def _encoding(layer: Any, mode: str, depth: int) -> list[Transform]:
    if mode == "int":
        return []
    if mode not in ("one_hot", "multi_hot", "count"):
        raise _unsupported(layer, f"output_mode={mode!r}")
    m: EncodingMode = mode  # type: ignore[assignment]
    return [CategoryEncoding(m, depth)]


def _check_not_sparse(layer: Any) -> None:
    if getattr(layer, "sparse", False):
        raise _unsupported(layer, "sparse=True")


def _normalization(layer: Any) -> list[Transform]:
    if getattr(layer, "mean", None) is None:
        raise ValueError(f"{_describe(layer)}: not adapted/built (no mean and variance yet)")
    if layer.compute_dtype != "float32":
        raise _unsupported(layer, f"dtype={layer.compute_dtype!r} (only float32)")
    keep = tuple(getattr(layer, "_keep_axis", ()))
    if 0 in keep:
        raise _unsupported(layer, f"axis={layer.axis!r} (normalizes along the batch axis)")
    mean = np.asarray(layer.mean, dtype=np.float32)
    var = np.asarray(layer.variance, dtype=np.float32)
    # Keras: (x - mean) / max(sqrt(var), epsilon), broadcast against the full input shape.
    std = np.maximum(np.sqrt(var), np.float32(_KERAS_EPSILON))
    shape = mean.shape[1:] if mean.ndim else ()
    while shape and shape[0] == 1:
        shape = shape[1:]
    return [Standardize.of(mean.reshape(shape), std.reshape(shape), invert=bool(layer.invert))]


def _discretization(layer: Any) -> list[Transform]:
    _check_not_sparse(layer)
    if layer.bin_boundaries is None:
        raise ValueError(f"{_describe(layer)}: not adapted (no bin_boundaries)")
    bounds = tuple(float(b) for b in layer.bin_boundaries)
    return [Bucketize(bounds), *_encoding(layer, layer.output_mode, len(bounds) + 1)]


def _lookup(layer: Any, *, strings: bool) -> list[Transform]:
    _check_not_sparse(layer)
    if layer.invert:
        raise _unsupported(layer, "invert=True")
    mode = layer.output_mode
    if mode == "tf_idf":
        raise _unsupported(layer, "output_mode='tf_idf'")
    if strings and getattr(layer, "encoding", "utf-8").lower().replace("_", "-") != "utf-8":
        raise _unsupported(layer, f"encoding={layer.encoding!r}")
    vocab = layer.get_vocabulary(include_special_tokens=False)
    if not vocab:
        raise ValueError(f"{_describe(layer)}: empty vocabulary (not adapted?)")
    tokens: tuple[str, ...] | tuple[int, ...]
    mask = layer.mask_token
    if strings:
        tokens = tuple(str(t) for t in vocab)
        mask = None if mask is None else str(mask)
        oov_hash = "farmhash"
    else:
        tokens = tuple(int(t) for t in vocab)
        mask = None if mask is None else int(mask)
        oov_hash = "farmhash" if layer.oov_method == "farmhash" else "floormod"
    salt = None if layer.salt is None else (int(layer.salt[0]), int(layer.salt[1]))
    if salt is not None and layer.num_oov_indices <= 1:
        salt = None  # only used to hash into several OOV buckets
    lookup = Vocabulary(
        tokens,
        num_oov_buckets=int(layer.num_oov_indices),
        mask_token=mask,
        drop_mask=mode != "int",
        oov_hash=oov_hash,  # type: ignore[arg-type]
        salt=salt,
    )
    if mode == "int":
        return [lookup]
    depth = layer.max_tokens if layer.pad_to_max_tokens else layer.vocabulary_size()
    return [lookup, *_encoding(layer, mode, int(depth))]


def _hashing(layer: Any) -> list[Transform]:
    _check_not_sparse(layer)
    mask = layer.mask_value
    if mask is not None and not isinstance(mask, str | int):
        raise _unsupported(layer, f"mask_value={mask!r} (only str or int)")
    salt = None if layer.salt is None else (int(layer.salt[0]), int(layer.salt[1]))
    return [
        Hashing(int(layer.num_bins), mask, salt),
        *_encoding(layer, layer.output_mode, int(layer.num_bins)),
    ]


def _category_encoding(layer: Any) -> list[Transform]:
    _check_not_sparse(layer)
    return _encoding(layer, layer.output_mode, int(layer.num_tokens))


def from_keras_layer(layer: Any) -> list[Transform]:
    """Transforms equivalent to an adapted Keras 3 preprocessing layer (applied in order).

    Raises ``ValueError`` naming the layer and setting for unsupported layers or
    configurations (sparse outputs, inverted lookups, tf_idf, non-float32
    Normalization, not-yet-adapted layers).
    """
    from keras import layers

    if isinstance(layer, layers.Normalization):
        return _normalization(layer)
    if isinstance(layer, layers.Discretization):
        return _discretization(layer)
    if isinstance(layer, layers.StringLookup):
        return _lookup(layer, strings=True)
    if isinstance(layer, layers.IntegerLookup):
        return _lookup(layer, strings=False)
    if isinstance(layer, layers.Hashing):
        return _hashing(layer)
    if isinstance(layer, layers.CategoryEncoding):
        return _category_encoding(layer)
    raise ValueError(
        f"{_describe(layer)}: unsupported layer type (supported: Normalization, "
        "Discretization, StringLookup, IntegerLookup, Hashing, CategoryEncoding)"
    )


def preprocessing_from_keras(
    layers: Mapping[str, Any | Sequence[Any]],
    raw: Mapping[str, RawFeatureSpec],
) -> Preprocessing:
    """Build a :class:`Preprocessing` from per-feature Keras layers (one or a chain each).

    ``raw`` gives every feature's raw signature; features in ``raw`` without
    layers are listed as pass-through.
    """
    missing = set(layers) - set(raw)
    if missing:
        raise ValueError(f"no raw signature for feature(s) {sorted(missing)}")
    features: dict[str, FeaturePreprocessing] = {}
    for name, spec in raw.items():
        chain = layers.get(name, ())
        if not isinstance(chain, Sequence):
            chain = [chain]
        transforms = [t for layer in chain for t in from_keras_layer(layer)]
        features[name] = FeaturePreprocessing(spec, tuple(transforms))
    return Preprocessing(features)
