"""gRPC prediction-serving gateway for TensorFlow SavedModels.

Speaks TensorFlow Serving's gRPC API; loads versions safely (verify, load,
self test, warm up, then swap); applies each version's training preprocessing
to raw requests and checks them against its training statistics.

The training-side API is `gateway.export_version(...)`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "export_version"]


def __getattr__(name: str) -> Any:
    # Lazy: `import gateway` stays light (no TensorFlow) for CLI tools.
    if name == "export_version":
        from gateway.bundle.export import export_version

        return export_version
    raise AttributeError(f"module 'gateway' has no attribute {name!r}")
