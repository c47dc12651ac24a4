"""Per-model-version preprocessing: raw feature name -> chain of transforms.

A :class:`Preprocessing` is built by the exporter (fitted from training data with
:meth:`Preprocessing.fit`, or imported from Keras layers with
:func:`gateway.preprocessing.keras_import.preprocessing_from_keras`), serialized as
the ``gateway.v1.Preprocessing`` message by :mod:`gateway.bundle.preprocessing_codec`,
and applied by serving to each concatenated batch with :meth:`Preprocessing.apply`.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gateway.preprocessing.transforms import Transform, TransformSpec, fit_chain
from gateway.preprocessing.values import PreprocessingError, ValueKind, value_kind

__all__ = ["FeaturePreprocessing", "Preprocessing", "PreprocessingError", "RawFeatureSpec"]


@dataclass(frozen=True)
class RawFeatureSpec:
    """What a client must send for a feature: value kind, shape after the batch (-1 = any)."""

    kind: ValueKind
    shape: tuple[int, ...] = ()

    @classmethod
    def of(cls, values: np.ndarray) -> RawFeatureSpec:
        """Spec of a [batch, ...] example array (kind from dtype, shape without the batch dim)."""
        arr = np.asarray(values)
        return cls(value_kind(arr), tuple(int(d) for d in arr.shape[1:]))


@dataclass(frozen=True)
class FeaturePreprocessing:
    """One feature's raw signature and the transforms applied to it, in order."""

    raw: RawFeatureSpec
    transforms: tuple[Transform, ...] = ()


class Preprocessing:
    """Mapping raw feature name -> transform chain, applied to whole batches.

    Features of a request that have no entry (or an empty chain) pass through
    unchanged; the output has the same keys as the input (the model's input
    aliases).
    """

    def __init__(self, features: Mapping[str, FeaturePreprocessing]) -> None:
        """Wrap per-feature preprocessing (copied; immutable afterwards)."""
        self._features = types.MappingProxyType(dict(sorted(features.items())))
        self._chains = {name: fp.transforms for name, fp in self._features.items() if fp.transforms}

    @property
    def features(self) -> Mapping[str, FeaturePreprocessing]:
        """Read-only per-feature preprocessing, sorted by name."""
        return self._features

    @classmethod
    def fit(
        cls,
        train_features: Mapping[str, np.ndarray],
        specs: Mapping[str, TransformSpec | Sequence[TransformSpec]],
    ) -> Preprocessing:
        """Fit each feature's chain of named specs on its raw training values.

        Every training feature gets a raw signature from its array (dtype kind,
        shape after the batch); those without specs are listed as pass-through.
        """
        unknown = set(specs) - set(train_features)
        if unknown:
            raise ValueError(f"no training values for feature(s) {sorted(unknown)}")
        features = {}
        for name, values in train_features.items():
            arr = np.asarray(values)
            chain = fit_chain(specs[name], arr) if name in specs else ()
            features[name] = FeaturePreprocessing(RawFeatureSpec.of(arr), chain)
        return cls(features)

    def apply(self, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Apply every feature's chain to its whole batch; unknown features pass through.

        Raises :class:`PreprocessingError` naming the feature when a value cannot be
        transformed (e.g. a string sent for a numeric feature).
        """
        out: dict[str, np.ndarray] = {}
        chains = self._chains
        for name, values in features.items():
            chain = chains.get(name)
            if chain is None:
                out[name] = values
                continue
            x = values
            try:
                for t in chain:
                    x = t.apply(x)
            except PreprocessingError as e:
                raise PreprocessingError(f"feature {name!r}: {e}") from None
            except (TypeError, ValueError) as e:
                raise PreprocessingError(f"feature {name!r}: {t.kind}: {e}") from None
            out[name] = x
        return out

    def raw_signature(self) -> dict[str, RawFeatureSpec]:
        """What a client must send per feature: kind (float/int/string), shape after the batch."""
        return {name: fp.raw for name, fp in self._features.items()}

    def __eq__(self, other: object) -> bool:
        """Equal when every feature's raw spec and transform chain are equal."""
        if not isinstance(other, Preprocessing):
            return NotImplemented
        return dict(self._features) == dict(other._features)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        """Feature names and chain kinds."""
        parts = ", ".join(
            f"{n}: [{', '.join(t.kind for t in fp.transforms)}]" for n, fp in self._features.items()
        )
        return f"Preprocessing({parts})"
