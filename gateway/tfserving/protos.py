"""TF Serving's config messages: `ModelServerConfig`, `BatchingParameters`, `MonitoringConfig`.

`ModelServerConfig` comes from the tensorflow-serving-api package
(`tensorflow_serving.config.model_server_config_pb2`). That package does not ship
`session_bundle_config_pb2` (`BatchingParameters`) nor `monitoring_config_pb2`
(`MonitoringConfig`); when a later version does, those modules are used. Until then the
two messages are declared here with TF Serving's package, message and field names, types
and numbers (`tensorflow_serving/servables/tensorflow/session_bundle_config.proto`,
`tensorflow_serving/config/monitoring_config.proto`), in a descriptor pool of their own,
so they can never clash with the real modules in the default pool. Text format only
needs the names: a file TF Serving reads is read the same way here, and a field unknown
to these declarations is an error naming it.
"""

from __future__ import annotations

import functools
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

PACKAGE = "tensorflow.serving"

_F = descriptor_pb2.FieldDescriptorProto
_INT64 = ".google.protobuf.Int64Value"
_STRING = ".google.protobuf.StringValue"
_BOOL = ".google.protobuf.BoolValue"

# (name, number, type, message type, repeated) of BatchingParameters.
_BATCHING_FIELDS: tuple[tuple[str, int, int, str, bool], ...] = (
    ("max_batch_size", 1, _F.TYPE_MESSAGE, _INT64, False),
    ("batch_timeout_micros", 2, _F.TYPE_MESSAGE, _INT64, False),
    ("max_enqueued_batches", 3, _F.TYPE_MESSAGE, _INT64, False),
    ("num_batch_threads", 4, _F.TYPE_MESSAGE, _INT64, False),
    ("thread_pool_name", 5, _F.TYPE_MESSAGE, _STRING, False),
    ("allowed_batch_sizes", 6, _F.TYPE_INT64, "", True),
    ("pad_variable_length_inputs", 7, _F.TYPE_BOOL, "", False),
    ("enable_large_batch_splitting", 8, _F.TYPE_MESSAGE, _BOOL, False),
    ("max_execution_batch_size", 9, _F.TYPE_MESSAGE, _INT64, False),
)


def _add_fields(
    message: descriptor_pb2.DescriptorProto, fields: tuple[tuple[str, int, int, str, bool], ...]
) -> None:
    for name, number, kind, type_name, repeated in fields:
        field = message.field.add(name=name, number=number, type=kind)  # type: ignore[arg-type]
        field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
        if type_name:
            field.type_name = type_name


@functools.cache
def _declared() -> dict[str, Any]:
    """The two declared messages, by full name, from a private descriptor pool."""
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)

    batching = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package=PACKAGE,
        syntax="proto3",
        dependency=[wrappers.name],
    )
    _add_fields(batching.message_type.add(name="BatchingParameters"), _BATCHING_FIELDS)
    pool.Add(batching)

    monitoring = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto",
        package=PACKAGE,
        syntax="proto3",
    )
    _add_fields(
        monitoring.message_type.add(name="PrometheusConfig"),
        (("enable", 1, _F.TYPE_BOOL, "", False), ("path", 2, _F.TYPE_STRING, "", False)),
    )
    _add_fields(
        monitoring.message_type.add(name="MonitoringConfig"),
        (("prometheus_config", 1, _F.TYPE_MESSAGE, f".{PACKAGE}.PrometheusConfig", False),),
    )
    pool.Add(monitoring)
    names = ("BatchingParameters", "MonitoringConfig")
    return {
        f"{PACKAGE}.{n}": message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"{PACKAGE}.{n}")
        )
        for n in names
    }


def model_server_config() -> Any:
    """The `tensorflow.serving.ModelServerConfig` class."""
    from tensorflow_serving.config import model_server_config_pb2

    return model_server_config_pb2.ModelServerConfig


def batching_parameters() -> Any:
    """The `tensorflow.serving.BatchingParameters` class."""
    try:
        from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2
    except ImportError:
        return _declared()[f"{PACKAGE}.BatchingParameters"]
    return session_bundle_config_pb2.BatchingParameters


def monitoring_config() -> Any:
    """The `tensorflow.serving.MonitoringConfig` class."""
    try:
        from tensorflow_serving.config import monitoring_config_pb2
    except ImportError:
        return _declared()[f"{PACKAGE}.MonitoringConfig"]
    return monitoring_config_pb2.MonitoringConfig
