"""Prometheus metrics, on a registry owned by one gateway instance.

Every request metric is labelled by model *and* version; label children are
cached so the request path does a dict lookup and an increment, nothing more.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from gateway.core.states import VersionState, VersionStatus

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


UNKNOWN_MODEL = "(unknown)"
"""The `model` label of requests naming a model this gateway never served."""
UNEXPECTED_FEATURE = "(unexpected)"
"""The `feature` label of mismatches on features a version was not trained on."""

ROLLOUT_STATUSES = ("pending", "running", "paused", "promoted", "rolled_back")
"""The `status` label values of `gateway_rollout_status` (`routing.rollout.Status`)."""


class Metrics:
    """The gateway's metric families and cached label children."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gateway_requests_total",
            "Requests handled, by protocol, method, model, version and gRPC status code.",
            ["protocol", "method", "model", "version", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "gateway_request_latency_seconds",
            "Server-side request latency by protocol, method, model and version.",
            ["protocol", "method", "model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.decode_errors = Counter(
            "gateway_request_decode_errors_total",
            "Requests refused because their bytes did not parse as the RPC's message.",
            ["protocol", "method"],
            registry=r,
        )
        self.internal_errors = Counter(
            "gateway_internal_errors_total",
            "Unexpected exceptions that escaped a handler (answered INTERNAL with a request "
            "id); a client mistake must never land here.",
            ["protocol", "method"],
            registry=r,
        )
        self.shed = Counter(
            "gateway_requests_shed_total",
            "Requests refused with RESOURCE_EXHAUSTED by the in-flight limits, by the limit "
            "(requests, bytes).",
            ["limit"],
            registry=r,
        )
        self.inflight = Gauge(
            "gateway_inflight_requests",
            "Requests being worked on in this process (admitted by the in-flight limits).",
            registry=r,
        )
        self.inflight_bytes = Gauge(
            "gateway_inflight_bytes",
            "Bytes of decoded request inputs held by admitted requests in this process.",
            registry=r,
        )
        self.batch_rows = Histogram(
            "gateway_batch_size",
            "Rows per model call after dynamic batching.",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "gateway_batch_requests",
            "Requests merged into one model call.",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.load_failures = Counter(
            "gateway_version_load_failures_total",
            "Failed version loads (verify, load, self test or warmup).",
            ["model", "version"],
            registry=r,
        )
        self.version_state = Gauge(
            "gateway_version_state",
            "1 for the state each version is in, 0 for the others.",
            ["model", "version", "state"],
            registry=r,
        )
        self.feature_mismatches = Counter(
            "gateway_feature_mismatches_total",
            "Requests with a feature check mismatch, by feature, kind and action.",
            ["model", "version", "feature", "kind", "action"],
            registry=r,
        )
        self.feature_skew = Gauge(
            "gateway_feature_skew",
            "Current skew of a feature's serving window against training (js, linf, psi).",
            ["model", "version", "feature", "metric"],
            registry=r,
        )
        self.feature_drift = Gauge(
            "gateway_feature_drifted",
            "1 while a feature's serving distribution crosses a skew threshold.",
            ["model", "version", "feature"],
            registry=r,
        )
        cmp_labels = ["model", "comparison", "primary_version", "shadow_version"]
        self.shadow_requests = Counter(
            "gateway_shadow_requests_total",
            "Mirrored requests by outcome: compared, error, timeout, dropped (queue full).",
            ["model", "comparison", "primary_version", "shadow", "outcome"],
            registry=r,
        )
        self.compared = Counter(
            "gateway_divergence_compared_total",
            "Primary answers compared with a shadow (or noise replay, or canary) answer.",
            cmp_labels,
            registry=r,
        )
        self.diverged = Counter(
            "gateway_divergence_diverged_total",
            "Compared answers judged diverged by the model's divergence rules.",
            cmp_labels,
            registry=r,
        )
        self.label_flips = Counter(
            "gateway_divergence_label_flips_total",
            "Compared answers whose top-1 label differs.",
            cmp_labels,
            registry=r,
        )
        self.divergence_max_abs = Histogram(
            "gateway_divergence_max_abs",
            "Largest absolute output difference per compared request, by output alias.",
            [*cmp_labels, "output"],
            buckets=(0, 1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 10.0),
            registry=r,
        )
        self.shadow_latency = Histogram(
            "gateway_shadow_latency_seconds",
            "Mirrored call latency (shadow version, including its queueing in the batcher).",
            ["model", "comparison", "shadow_version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.noise_deterministic = Gauge(
            "gateway_noise_floor_deterministic",
            "1 while the primary's replayed answers are identical, 0 once they are not.",
            ["model", "version"],
            registry=r,
        )
        self.log_drops = Counter(
            "gateway_divergence_log_dropped_total",
            "Divergence log records dropped (queue full, I/O error, closed).",
            ["reason"],
            registry=r,
        )
        self.arm_requests = Counter(
            "gateway_arm_requests_total",
            "Requests split by a rollout, by arm (primary/canary), version and gRPC status.",
            ["model", "arm", "version", "code"],
            registry=r,
        )
        self.arm_latency = Histogram(
            "gateway_arm_latency_seconds",
            "Server-side latency of requests split by a rollout (successful ones), by arm.",
            ["model", "arm", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rollout_weight = Gauge(
            "gateway_rollout_weight_percent",
            "Percent of split traffic the rollout sends to the canary.",
            ["model", "primary_version", "candidate_version"],
            registry=r,
        )
        self.rollout_status = Gauge(
            "gateway_rollout_status",
            "1 for the status the model's rollout is in, 0 for the others.",
            ["model", "status"],
            registry=r,
        )
        self.rollout_store_up = Gauge(
            "gateway_rollout_store_up",
            "1 when the rollout state store's last call succeeded, 0 while it is unreachable "
            "(rollouts hold).",
            ["store"],
            registry=r,
        )
        self.rollout_decisions = Counter(
            "gateway_rollout_decisions_total",
            "Rollout decisions taken (start, advance, pause, rollback, promote, ...).",
            ["model", "action", "actor"],
            registry=r,
        )
        self._server: Any = None
        self._children: dict[tuple[Any, ...], Any] = {}
        self._known_models: set[str] = set()
        self._known: set[tuple[str, str]] = set()
        """(model, version label) pairs the serving table has had (from `on_state`)."""

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, cached: the request path does one dict lookup
        instead of prometheus_client's validation and locking per call."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def arm_request(self, model: str, arm: str, version: int, code: str, seconds: float) -> None:
        """Record one request split by a rollout."""
        self.child(self.arm_requests, model, arm, str(version), code).inc()
        if code == "OK":
            self.child(self.arm_latency, model, arm, str(version)).observe(seconds)

    def rollout_store(self, kind: str, up: bool) -> None:
        """Export the state store's reachability."""
        self.child(self.rollout_store_up, kind).set(1.0 if up else 0.0)

    def rollout_decision(self, model: str, action: str, actor: str) -> None:
        """Count one rollout decision."""
        self.rollout_decisions.labels(model, action, actor).inc()

    def rollout_state(
        self, model: str, primary: int, candidate: int, weight: float, status: str
    ) -> None:
        """Export a rollout's weight (0 unless active) and which status it is in."""
        self.rollout_weight.labels(model, str(primary), str(candidate)).set(weight)
        for known in ROLLOUT_STATUSES:
            self.rollout_status.labels(model, known).set(1.0 if known == status else 0.0)

    def shadow_outcome(
        self, model: str, primary: int, shadow: Any, comparison: str, outcome: str
    ) -> None:
        """Count one mirrored request's outcome (`shadow` is a version or a label)."""
        self.child(
            self.shadow_requests,
            model,
            comparison,
            str(primary),
            "" if shadow is None else str(shadow),
            outcome,
        ).inc()

    def divergence(
        self,
        model: str,
        comparison: str,
        primary: int,
        shadow: int,
        result: Any,
        latency_ms: float,
    ) -> None:
        """Record one comparison."""
        labels = (model, comparison, str(primary), str(shadow))
        child = self.child
        child(self.shadow_requests, *labels, "compared").inc()
        child(self.compared, *labels).inc()
        if result.diverged:
            child(self.diverged, *labels).inc()
        if any(m.label_flip for m in result.outputs.values()):
            child(self.label_flips, *labels).inc()
        for alias, m in result.outputs.items():
            if m.max_abs is not None and m.max_abs == m.max_abs:
                child(self.divergence_max_abs, *labels, alias).observe(min(m.max_abs, 1e9))
        child(self.shadow_latency, model, comparison, str(shadow)).observe(latency_ms / 1e3)

    def noise_floor(self, model: str, version: int, floor: Any) -> None:
        """Export whether the primary is deterministic."""
        self.noise_deterministic.labels(model, str(version)).set(
            1.0 if floor.deterministic else 0.0
        )

    def on_mismatches(self, model: str, version: int, mismatches: Any) -> None:
        """Count a request's feature-check mismatches (a feature the version was not
        trained on is labelled `(unexpected)`: its name is the client's choice)."""
        for m in mismatches:
            kind = str(m.kind)
            feature = UNEXPECTED_FEATURE if kind == "unexpected_feature" else m.feature
            self.child(
                self.feature_mismatches, model, str(version), feature, kind, str(m.action)
            ).inc()

    def observe_request(
        self, method: str, model: str, version: str, code: str, seconds: float, protocol: str
    ) -> None:
        """Record one finished request. The labels a client chose are bounded: a model
        this gateway has never had a version of is labelled `(unknown)`, a version it
        never had is labelled ""; otherwise every random name a client (or a fuzzer)
        sends would be a new time series held forever."""
        if (model, version) not in self._known:
            if model not in self._known_models:
                model, version = (UNKNOWN_MODEL if model else ""), ""
            else:
                version = ""
        self.child(self.latency, protocol, method, model, version).observe(seconds)
        self.child(self.requests, protocol, method, model, version, code).inc()

    def watch_admission(self, admission: Any) -> None:
        """Export an `Admission`'s counters: in-flight gauges read at scrape time (nothing
        per request) and its refusals."""
        self.inflight.set_function(lambda: admission.requests)
        self.inflight_bytes.set_function(lambda: admission.bytes)

    def on_shed(self, limit: str) -> None:
        """Count a request refused by an in-flight limit."""
        self.child(self.shed, limit).inc()

    def on_decode_error(self, protocol: str, method: str) -> None:
        """Count a request whose bytes did not parse."""
        self.child(self.decode_errors, protocol, method).inc()

    def on_internal_error(self, protocol: str, method: str) -> None:
        """Count an unexpected exception answered INTERNAL."""
        self.child(self.internal_errors, protocol, method).inc()

    def batch_observer(self, model: str, version: int) -> Any:
        """A `BatchObserver` bound to one version's label children."""
        rows = self.batch_rows.labels(model, str(version))
        requests = self.batch_requests.labels(model, str(version))

        def observe(n_rows: int, n_requests: int) -> None:
            rows.observe(n_rows)
            requests.observe(n_requests)

        return observe

    def on_state(self, status: VersionStatus) -> None:
        """Monitor listener: keep the state gauge current (and learn the model and
        version names the request metrics may carry)."""
        self._known_models.add(status.model)
        self._known.add((status.model, str(status.version)))
        self._known.add((status.model, ""))
        for state in VersionState:
            self.version_state.labels(status.model, str(status.version), state.value).set(
                1.0 if state is status.state else 0.0
            )

    def on_load_failure(self, model: str, version: int, _reason: str) -> None:
        """Count a failed load."""
        self.load_failures.labels(model, str(version)).inc()

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        """Expose /metrics over HTTP; returns the bound port (port 0 picks one)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return int(server.server_port)

    def close(self) -> None:
        """Stop the HTTP exporters."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._server = None
