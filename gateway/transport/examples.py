"""tf.Example inputs of Classify/Regress requests, as the batch of serialized strings
the SavedModel's classify/regress signature expects."""

from __future__ import annotations

import numpy as np
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import input_pb2

from gateway.errors import InvalidInput


def serialized_examples(inp: input_pb2.Input) -> np.ndarray:
    """Return a 1-D object array of serialized tf.Example (context merged into each example)."""
    kind = inp.WhichOneof("kind")
    if kind == "example_list":
        examples = list(inp.example_list.examples)
        if not examples:
            raise InvalidInput("input.example_list: expected at least one example, got none")
        out = np.empty(len(examples), dtype=object)
        out[:] = [e.SerializeToString() for e in examples]
        return out
    if kind == "example_list_with_context":
        ctx = inp.example_list_with_context.context
        examples = list(inp.example_list_with_context.examples)
        if not examples:
            raise InvalidInput(
                "input.example_list_with_context: expected at least one example, got none"
            )
        merged = []
        for example in examples:
            full = example_pb2.Example()
            full.CopyFrom(ctx)
            full.MergeFrom(example)
            merged.append(full.SerializeToString())
        out = np.empty(len(merged), dtype=object)
        out[:] = merged
        return out
    raise InvalidInput("input: expected example_list or example_list_with_context, got neither")
