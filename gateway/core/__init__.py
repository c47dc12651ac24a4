"""The gateway's shared vocabulary: the bottom layer, importing nothing else of the project.

- `servable`: `LoadedVersion`, `Signature`, `TensorSpec` (what a loaded version offers);
- `model_view`: `ModelView` (one model's versions, labels and primary) and `VersionTable`;
- `inference`: `InferenceRequest`, `InferenceResult`, `Method`, `ExampleBatch`
  (protocol-independent requests, what every transport converts to);
- `protocols`: the seams between layers (`ServingControls`, `ModelRegistry`, metric,
  divergence and capture sinks);
- `dtypes`: TensorFlow's DataType values, their numpy dtypes and names;
- `states`: the version lifecycle states; `errors`: our error kinds.
"""
