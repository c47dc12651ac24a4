"""Version states, mirroring TF Serving's ServableState plus an explicit FAILED."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class VersionState(enum.Enum):
    """START -> LOADING -> AVAILABLE -> UNLOADING -> END; LOADING -> FAILED on error.

    TF Serving reports a failed version as END with an error status; the
    ModelService does the same, the admin service shows FAILED explicitly.
    """

    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"
    FAILED = "FAILED"


@dataclass(frozen=True)
class VersionStatus:
    """Public snapshot of one version's state, for status answers and monitors."""

    model: str
    version: int
    state: VersionState
    error: str = ""
    failures: int = 0
    warmup_records: int = 0
    runtime: str = ""
    """How the loaded version runs ("tf1_session" or "tf2_function"; "" until loaded)."""
