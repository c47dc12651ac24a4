"""Which arm (primary or canary) answers a request: deterministic, stateless, monotone.

Pure logic, no I/O. The routing decision for a keyed request depends only on
``(model, key, rollout_id)`` and the canary percentage, so every replica, and
the same replica after a restart, sends a given key to the same arm without
sharing any state beyond the rollout's id and weight.

* :func:`routing_hash` maps ``(model, key, rollout_id)`` to a float in [0, 1):
  the first 8 bytes of ``sha256`` over a length-prefixed encoding of the three
  values (so ``("ab", "c")`` and ``("a", "bc")`` never collide by construction),
  read as a big-endian uint64 and divided by 2**64. The uint64 is truncated to
  its top 53 bits first, because the float division of the largest uint64
  values would round up to exactly 1.0; the result is therefore
  ``floor(u / 2**11) / 2**53``, which is in [0, 1) and equal to ``u / 2**64``
  within 2**-53.
* A keyed request goes to the canary iff ``routing_hash(...) < percent / 100``:
  raising the percentage only adds keys to the canary (monotone), and a new
  ``rollout_id`` (a new rollout attempt) reshuffles which keys are first.
* A keyless request (``key`` is ``None`` or empty) is split uniformly at
  random with the injected ``random.Random``.
"""

from __future__ import annotations

import enum
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, Protocol

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "Arm",
    "RolloutView",
    "RouteDecision",
    "RouteReason",
    "choose_arm",
    "decide",
    "key_hash_hex",
    "routing_hash",
]

_ROUTE_DOMAIN: Final = b"tf-gateway/route/v1"
_KEY_DOMAIN: Final = b"tf-gateway/key/v1"
_TWO_POW_53: Final = float(2**53)
KEY_HASH_HEX_CHARS: Final = 16
"""Length of :func:`key_hash_hex` digests (64 bits)."""


def _encode(domain: bytes, *parts: str) -> bytes:
    """Unambiguous encoding: domain tag, then each part as 8-byte big-endian length + UTF-8."""
    out = bytearray(len(domain).to_bytes(8, "big"))
    out += domain
    for part in parts:
        raw = part.encode("utf-8", "surrogatepass")
        out += len(raw).to_bytes(8, "big")
        out += raw
    return bytes(out)


class Arm(enum.Enum):
    """The two arms of a rollout. The values are the ``arm`` metric label."""

    PRIMARY = "primary"
    CANARY = "canary"


def routing_hash(model: str, key: str, rollout_id: str) -> float:
    """A uniform, stable number in [0, 1) for ``(model, key, rollout_id)``.

    Same inputs give the same value in every process, on every machine, forever
    (no ``hash()``, no per-process salt). See the module doc for the encoding.
    """
    digest = hashlib.sha256(_encode(_ROUTE_DOMAIN, model, key, rollout_id)).digest()
    u = int.from_bytes(digest[:8], "big")
    return (u >> 11) / _TWO_POW_53


def key_hash_hex(model: str, key: str) -> str:
    """A short hex digest of a routing key for logs (16 hex chars, 64 bits).

    Salted with the model name (and a domain tag distinct from the routing
    hash), so it does not reveal the routing hash and the same key hashes
    differently per model. It is not reversible, but a key drawn from a small
    space (e.g. sequential user ids) can still be found by trying candidates;
    do not treat it as anonymisation for such keys.
    """
    digest = hashlib.sha256(_encode(_KEY_DOMAIN, model, key)).hexdigest()
    return digest[:KEY_HASH_HEX_CHARS]


def _check_percent(canary_percent: float) -> float:
    p = float(canary_percent)
    if not 0.0 <= p <= 100.0:  # also rejects NaN
        raise ValueError(f"canary_percent must be in [0, 100], got {canary_percent!r}")
    return p


def choose_arm(
    model: str,
    key: str | None,
    rollout_id: str,
    canary_percent: float,
    rng: random.Random,
) -> Arm:
    """Pick the arm for one request.

    Keyed (``key`` non-empty): CANARY iff ``routing_hash(model, key,
    rollout_id) < canary_percent / 100`` (``rng`` is not used). Keyless
    (``None`` or ``""``): CANARY iff ``rng.random() < canary_percent / 100``
    (exactly one ``rng.random()`` call). 0 % never and 100 % always picks the
    canary. Raises ValueError when ``canary_percent`` is outside [0, 100].
    """
    fraction = _check_percent(canary_percent) / 100.0
    draw = routing_hash(model, key, rollout_id) if key else rng.random()
    return Arm.CANARY if draw < fraction else Arm.PRIMARY


FeatureSource = Callable[[str], "np.ndarray | None"]
"""Raw feature `name` of a request (None when absent). A callable so that a tf.Example
request decodes only the routing feature, and only when a rollout needs it."""

RouteReason = Literal["explicit", "keyed", "random", "no_rollout", "fallback"]
"""Why a request got its arm: see :class:`RouteDecision`."""


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where one request goes.

    * ``arm``: the arm whose statistics the request belongs to.
    * ``version``: the model version to serve, or ``None`` for "the caller's
      default" (TF Serving's newest available version; only when there is no
      rollout state at all).
    * ``reason``: ``"explicit"`` (the client asked for a version; the split is
      bypassed), ``"keyed"`` (hash split), ``"random"`` (keyless split),
      ``"no_rollout"`` (no active rollout: the primary), ``"fallback"`` (the
      split chose the canary but it is not available: the primary answered).

    Only ``keyed`` and ``random`` decisions are part of the experiment (see
    :attr:`in_experiment`); explicit requests are biased (testers, pinned
    clients) and should not be recorded in the step statistics.
    """

    arm: Arm
    version: int | None
    reason: RouteReason
    key: str | None = field(default=None, compare=False)
    """The request's routing key (None: keyless or no rollout); context, not part of the
    decision's identity."""
    primary: int | None = field(default=None, compare=False)
    """The rollout's primary version (what a canary answer is compared with)."""

    @property
    def in_experiment(self) -> bool:
        """True when the request was assigned by the split (record it in `StepStats`)."""
        return self.reason in ("keyed", "random")


class RolloutView(Protocol):
    """What routing reads of a rollout's state (`rollout.RolloutState` is one)."""

    @property
    def model(self) -> str:
        """The model."""

    @property
    def rollout_id(self) -> str:
        """This rollout attempt's id (part of the routing hash)."""

    @property
    def weight(self) -> float:
        """The canary's percentage."""

    @property
    def primary(self) -> int:
        """The primary version."""

    @property
    def candidate(self) -> int:
        """The canary version."""

    @property
    def is_active(self) -> bool:
        """RUNNING or PAUSED."""


def decide(
    explicit_version: int | None,
    key: str | None,
    state: RolloutView | None,
    rng: random.Random,
) -> RouteDecision:
    """Route one request of ``state.model`` (the request path's single call).

    * ``explicit_version`` set (the client sent ``model_spec.version``, or a
      ``version_label`` the caller already resolved): that version, reason
      ``explicit``; the arm is CANARY iff it is the rollout's candidate while
      the rollout is active, else PRIMARY.
    * ``state`` is ``None``: PRIMARY, version ``None`` (caller's default).
    * ``state`` not active (PENDING, PROMOTED, ROLLED_BACK): PRIMARY,
      ``state.primary`` (after PROMOTED that is the former candidate; after
      ROLLED_BACK the candidate stays loaded but gets no traffic).
    * active (RUNNING or PAUSED; a pause freezes the weight, it does not stop
      the canary): :func:`choose_arm` at ``state.weight`` percent, version
      ``state.candidate`` or ``state.primary``.
    """
    active = state is not None and state.is_active
    if explicit_version is not None:
        is_canary = active and state is not None and explicit_version == state.candidate
        arm = Arm.CANARY if is_canary else Arm.PRIMARY
        primary = state.primary if state is not None else None
        return RouteDecision(arm, explicit_version, "explicit", key, primary)
    if state is None:
        return RouteDecision(Arm.PRIMARY, None, "no_rollout", key)
    if not active:
        return RouteDecision(Arm.PRIMARY, state.primary, "no_rollout", key, state.primary)
    arm = choose_arm(state.model, key, state.rollout_id, state.weight, rng)
    version = state.candidate if arm is Arm.CANARY else state.primary
    return RouteDecision(arm, version, "keyed" if key else "random", key, state.primary)
