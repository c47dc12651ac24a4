# syntax=docker/dockerfile:1
# Multi-stage: build a virtualenv with the gateway installed, copy only it into a
# slim runtime image that runs as a non-root user.
# BASE_IMAGE: any image with Python 3.11 as `python` (and `python -m venv`) and useradd;
# both stages use it, so the virtualenv's interpreter is the runtime's.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The versions the test suite ran against (scripts/freeze_constraints.py writes the file:
# the dependency closure of what is installed below). Installed first, in a layer of its
# own, so a change to the source alone does not download TensorFlow again.
COPY deploy/docker/constraints.txt ./deploy/docker/constraints.txt
RUN pip install -r deploy/docker/constraints.txt
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY loadtest ./loadtest
RUN pip install -c deploy/docker/constraints.txt ".[analysis]"

FROM ${BASE_IMAGE}
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway \
    && mkdir -p /models /etc/gateway /var/lib/gateway /var/log/gateway \
    && chown gateway /var/lib/gateway /var/log/gateway
COPY --from=build /opt/venv /opt/venv
COPY deploy/docker/entrypoint.sh /usr/local/bin/gateway-entrypoint
# TF Serving's image contract: MODEL_NAME, MODEL_BASE_PATH (/models/${MODEL_NAME}), ports
# 8500 (gRPC) and 8501 (REST); 8502 serves the gateway's Prometheus metrics.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MODEL_NAME=model \
    MODEL_BASE_PATH=/models \
    GATEWAY_CONFIG=/etc/gateway/gateway.yaml \
    GATEWAY_HEALTH_TARGET=127.0.0.1:8500
USER 10001
WORKDIR /var/lib/gateway
EXPOSE 8500 8501 8502
# The gRPC health service, asked by the gateway's own CLI (no extra binary needed); sh
# expands GATEWAY_HEALTH_TARGET, any failure is "unhealthy" (1).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["sh", "-c", "gateway health --target \"$GATEWAY_HEALTH_TARGET\" || exit 1"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/gateway-entrypoint"]
