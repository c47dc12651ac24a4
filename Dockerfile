# syntax=docker/dockerfile:1
# Multi-stage: build a virtualenv with the gateway installed, copy only it into a
# slim runtime image that runs as a non-root user.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY loadtest ./loadtest
RUN pip install ".[analysis]"

FROM python:3.11-slim
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
# The gRPC health service, asked by the gateway's own CLI (no extra binary needed).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD gateway health --target "$GATEWAY_HEALTH_TARGET" || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/gateway-entrypoint"]
