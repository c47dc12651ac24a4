"""gRPC prediction-serving gateway for TensorFlow SavedModels.

Speaks TensorFlow Serving's gRPC API; loads versions safely (verify, load,
warm up, then swap); batches concurrent requests.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
