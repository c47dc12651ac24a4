#!/bin/sh
# The image's entry point, started like tensorflow/serving's:
#   docker run -e MODEL_NAME=m -v $PWD/models/m:/models/m IMAGE [TF Serving flags...]
# serves /models/${MODEL_NAME} with TF Serving's ports (gRPC 8500, REST 8501).
# - a first argument that is not a flag is a gateway command (`serve`, `health`, ...);
# - with a gateway config at $GATEWAY_CONFIG (default /etc/gateway/gateway.yaml) the
#   gateway serves it, TF Serving flags on the command line on top;
# - with --model_config_file, MODEL_NAME/MODEL_BASE_PATH are not added.
set -eu
case "${1:-}" in
  "" | -*) ;;
  *) exec gateway "$@" ;;
esac
config="${GATEWAY_CONFIG:-/etc/gateway/gateway.yaml}"
if [ -f "$config" ]; then
  exec gateway serve --config "$config" "$@"
fi
for arg in "$@"; do
  case "$arg" in
    --model_config_file=* | --model_config_file) exec tensorflow_model_server --port=8500 --rest_api_port=8501 "$@" ;;
  esac
done
exec tensorflow_model_server --port=8500 --rest_api_port=8501 \
  --model_name="${MODEL_NAME}" --model_base_path="${MODEL_BASE_PATH}/${MODEL_NAME}" "$@"
