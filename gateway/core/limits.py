"""The limits every request decoder checks before it allocates anything.

One `DecodeLimits` is built from the server config (`DecodeLimits.from_server`) and
handed to every protocol's decoder (TF Serving gRPC TensorProtos, REST JSON, the Open
Inference Protocol's typed and raw contents, tf.Example batches), so the same request
is refused the same way whatever protocol it came in on. A shape is checked before its
element count is trusted: rank first, then each dimension, then the product with an
overflow-safe running bound (Python ints never overflow, but a product of 10^30 must
not reach numpy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.core.errors import InvalidInput, ResourceExhausted

EMPTY_SHAPE_CAP = 2**48
"""The largest product of the non-zero dimensions of an empty tensor (numpy's own bound
is the index range divided by the item size)."""

TF_MAX_RANK = 254
"""TensorFlow's own rank limit (`TensorShape::MaxDimensions`)."""


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds on one request's decoded size.

    `max_tensor_elements`: elements of one tensor, whatever its wire form (the broadcast
    form of a single repeated value included); `max_request_elements`: summed over a
    request's tensors; `max_string_bytes`: one string element; `max_rank`: dimensions of
    one tensor; `max_examples` and `max_features` bound a tf.Example batch (examples in
    a request; features named in one example, or the context).
    """

    max_rank: int = 32
    max_tensor_elements: int = 4 * 1024 * 1024
    max_request_elements: int = 16 * 1024 * 1024
    max_string_bytes: int = 4 * 1024 * 1024
    max_examples: int = 1024 * 1024
    max_features: int = 4096

    def rank(self, alias: str, ndim: int) -> None:
        """InvalidInput for a tensor of more than `max_rank` dimensions."""
        if ndim > self.max_rank:
            raise InvalidInput(
                f"input '{alias}': tensor has {ndim} dimensions; at most "
                f"{self.max_rank} are accepted (server.max_tensor_rank)"
            )

    def element_count(self, alias: str, shape: Sequence[int]) -> int:
        """The element count of `shape`, validated: InvalidInput for a rank over
        `max_rank` or a negative dimension, ResourceExhausted for more elements than
        `max_tensor_elements`; each message names the input and the limit. O(rank), and
        the product never grows past the limit (a zero dimension anywhere makes 0)."""
        self.rank(alias, len(shape))
        if min(shape, default=0) < 0:
            d = min(shape)
            raise InvalidInput(
                f"input '{alias}': negative dimension in shape {_show(shape)} (dimension "
                f"{d}); a request tensor needs sizes >= 0"
            )
        empty = 0 in shape
        # An empty tensor's other dimensions are bounded too: numpy refuses a shape whose
        # non-zero dimensions multiply past its index range, empty or not.
        cap = EMPTY_SHAPE_CAP if empty else self.max_tensor_elements
        count = 1
        for d in shape:
            count *= d or 1
            if count > cap:
                if empty:
                    raise ResourceExhausted(
                        f"input '{alias}': shape {_show(shape)}: its non-zero dimensions "
                        f"multiply past {EMPTY_SHAPE_CAP}, more than an array can index"
                    )
                raise ResourceExhausted(
                    f"input '{alias}': shape {_show(shape)} has more than "
                    f"{self.max_tensor_elements} elements, the limit of one tensor "
                    "(server.max_tensor_elements)"
                )
        return 0 if empty else count

    def request_elements(self, total: int, alias: str | None = None) -> None:
        """ResourceExhausted when a request's tensors hold more than
        `max_request_elements` elements in all (`alias`: the input that went over)."""
        if total > self.max_request_elements:
            upto = f" (up to input '{alias}')" if alias is not None else ""
            raise ResourceExhausted(
                f"request tensors hold {total} elements{upto}; at most "
                f"{self.max_request_elements} are accepted in one request "
                "(server.max_request_elements)"
            )

    def string_bytes(self, alias: str, size: int) -> None:
        """ResourceExhausted for a string element longer than `max_string_bytes`."""
        if size > self.max_string_bytes:
            raise ResourceExhausted(
                f"input '{alias}': a string element of {size} bytes; at most "
                f"{self.max_string_bytes} are accepted (server.max_string_bytes)"
            )

    def examples(self, count: int) -> None:
        """ResourceExhausted for a tf.Example batch over `max_examples`."""
        if count > self.max_examples:
            raise ResourceExhausted(
                f"input has {count} examples; at most {self.max_examples} are accepted "
                "in one request (server.max_examples)"
            )

    def features(self, where: str, count: int) -> None:
        """ResourceExhausted for an example (or context) naming over `max_features`."""
        if count > self.max_features:
            raise ResourceExhausted(
                f"{where} has {count} features; at most {self.max_features} are accepted "
                "(server.max_features)"
            )


def _show(shape: Sequence[int]) -> str:
    if len(shape) > 8:
        return f"[{', '.join(str(d) for d in shape[:8])}, ... ({len(shape)} dims)]"
    return str(list(shape))


DEFAULT_LIMITS = DecodeLimits()
"""The limits of the default server config (4 MiB gRPC messages)."""
