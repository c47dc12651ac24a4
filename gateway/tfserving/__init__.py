"""TF Serving compatibility: its command line and its config files.

- `cli`: the serve command line shared by `gateway serve` and the `tensorflow_model_server`
  entry point (TF Serving's flags, `--config` optional);
- `flags`: TF Serving's flags, which are mapped onto the config, accepted with a warning or
  refused;
- `protos`, `files`: TF Serving's text-format config files read with its own protos
  (`ModelServerConfig`, `BatchingParameters`, `MonitoringConfig`);
- `source`: those flags and files as the gateway's config source (start, `gateway reload`,
  polling of `--model_config_file`).
"""
