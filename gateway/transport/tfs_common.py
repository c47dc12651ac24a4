"""What TF Serving's two APIs here share: its gRPC servicers (`prediction.py`,
`model_service.py`) and its REST API (`tfs_rest.py`).

The data-plane request of a model (a version, a label or neither, and a signature), the
ClassificationResult / RegressionResult of a classify / regress answer, and the
GetModelStatus / GetModelMetadata responses are each built once, as TF Serving's
protobuf messages; gRPC sends them as they are, REST prints them as TF Serving's REST
API does. So both APIs answer the same request the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, status_pb2

from gateway.core.errors import InvalidInput, NotFound
from gateway.core.inference import InferenceRequest, InferenceResult, Method
from gateway.core.model_view import Servable
from gateway.core.protocols import ModelRegistry
from gateway.core.servable import LoadedVersion
from gateway.core.states import VersionState
from gateway.transport.calls import current_request_id

SIGNATURE_DEF = "signature_def"
"""The one GetModelMetadata field TF Serving (and the gateway) answers."""

TFS_STATE = {
    VersionState.START: get_model_status_pb2.ModelVersionStatus.START,
    VersionState.LOADING: get_model_status_pb2.ModelVersionStatus.LOADING,
    VersionState.AVAILABLE: get_model_status_pb2.ModelVersionStatus.AVAILABLE,
    VersionState.UNLOADING: get_model_status_pb2.ModelVersionStatus.UNLOADING,
    VersionState.END: get_model_status_pb2.ModelVersionStatus.END,
    VersionState.FAILED: get_model_status_pb2.ModelVersionStatus.END,
}
UNKNOWN_ERROR = 2  # tensorflow.error.Code.UNKNOWN, what TF Serving reports for failed loads


def tfs_request(
    model: str,
    method: Method,
    *,
    version: int | None,
    label: str | None,
    signature: str,
    headers: Mapping[str, str],
    protocol: str,
    **fields: Any,
) -> InferenceRequest:
    """The data-plane request of a TF Serving call (from a ModelSpec, or from a REST path
    and body): the request id bound by the transport, the caller's metadata or headers
    (lowercase keys: rollout routing keys), `fields` (the method's inputs, ...) on top."""
    return InferenceRequest(
        model=model,
        method=method,
        version=version,
        label=label or None,
        signature=signature,
        headers=headers,
        request_id=current_request_id(),
        protocol=protocol,
        **fields,
    )


def fill_classifications(out: Any, result: InferenceResult) -> None:
    """A ClassificationResult from a classify signature's `classes` and/or `scores`
    ([batch, num_classes] each), as TF Serving builds it."""
    classes = result.outputs.get("classes")
    scores = result.outputs.get("scores")
    if classes is None and scores is None:
        raise InvalidInput(f"signature '{result.signature}' has neither 'classes' nor 'scores'")
    rows = len(classes) if classes is not None else len(scores)  # type: ignore[arg-type]
    labels = classes.reshape(rows, -1).tolist() if classes is not None else None
    values = scores.reshape(rows, -1).tolist() if scores is not None else None
    width = len((values or labels)[0]) if rows else 0  # type: ignore[index]
    for i in range(rows):
        row = out.classifications.add()
        for j in range(width):
            c = row.classes.add()
            if labels is not None:
                label = labels[i][j]
                c.label = label.decode() if isinstance(label, bytes) else str(label)
            if values is not None:
                c.score = values[i][j]


def fill_regressions(out: Any, result: InferenceResult) -> None:
    """A RegressionResult from a regress signature's `outputs` (one value per example)."""
    values = result.outputs.get("outputs")
    if values is None:
        raise InvalidInput(f"signature '{result.signature}' has no 'outputs' output")
    for value in values.reshape(len(values), -1)[:, 0].tolist():
        out.regressions.add(value=float(value))


def fill_spec(spec: Any, result: InferenceResult) -> None:
    """Say in the response which version and signature answered."""
    spec.name = result.model
    spec.version.value = result.version
    spec.signature_name = result.signature


def model_status(
    registry: ModelRegistry[Servable], name: str, version: int | None, label: str | None
) -> Any:
    """GetModelStatusResponse: every known version of `name` (or the one `version` or
    `label` names), with TF Serving's states and a status on every entry (OK, or for a
    FAILED version END with UNKNOWN and the reason, as TF Serving reports failed loads)."""
    statuses = registry.statuses(name)
    if version is not None:
        statuses = [s for s in statuses if s.version == version]
        if not statuses:
            raise NotFound(f"model '{name}' has no version {version}")
    elif label:
        labelled = registry.labels(name).get(label)
        statuses = [s for s in statuses if s.version == labelled]
        if not statuses:
            raise NotFound(f"model '{name}' has no version label '{label}'")
    response = get_model_status_pb2.GetModelStatusResponse()
    for status in statuses:
        entry = response.model_version_status.add()
        entry.version = status.version
        entry.state = TFS_STATE[status.state]
        if status.state is VersionState.FAILED:
            entry.status.CopyFrom(
                status_pb2.StatusProto(error_code=UNKNOWN_ERROR, error_message=status.error)
            )
        else:
            entry.status.SetInParent()  # error_code OK, as TF Serving always sets it
    return response


def model_metadata(loaded: LoadedVersion) -> Any:
    """GetModelMetadataResponse with the `signature_def` of a version: the SavedModel's
    SignatureDefMap (less internal `__...` entries), or for a version that ships
    preprocessing the raw-feature signatures clients send."""
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = loaded.model
    response.model_spec.version.value = loaded.version
    sigmap = get_model_metadata_pb2.SignatureDefMap()
    advertised = loaded.extensions.get("advertised_signature_defs")
    source = advertised if advertised is not None else loaded.signature_defs
    for name, sdef in source.items():
        if not name.startswith("__"):
            sigmap.signature_def[name].CopyFrom(sdef)
    response.metadata[SIGNATURE_DEF].Pack(sigmap)
    return response


__all__ = [
    "SIGNATURE_DEF",
    "fill_classifications",
    "fill_regressions",
    "fill_spec",
    "model_metadata",
    "model_status",
    "tfs_request",
]
