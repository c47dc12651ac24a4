"""``gateway report``: review shadow / canary divergence logs.

Modules: `load` (files -> DuckDB tables), `summary` (the numbers), `gates`
(``--fail-if``), `terminal` (rich tables), `html` (self-contained page),
`cli` (``add_report_parser`` / ``run_report``).

The ``--json`` document (``schema: "gateway.report/v1"``)::

    {
      "schema": "gateway.report/v1",
      "generated_at": "2026-11-25T07:00:00Z",
      "inputs": {"files": [...], "unreadable_files": [...], "lines": int,
                 "invalid_lines": int, "incomplete_records": int, "duplicates": int,
                 "filtered_out": int, "records": int, "events": int,
                 "other_events": {"<event>": int}, "unattributed_events": int,
                 "filters": {"models": [...], "since": iso|null, "until": iso|null,
                             "protocols": [...]},
                 "warnings": [str]},
      "options": {"min_count", "top_slices", "value_buckets", "top_values", "worst"},
      "time_range": {"first": ts|null, "last": ts|null},
      "groups": [{
        "label": "fraud shadow v1->v2", "model", "comparison", "primary_version",
        "shadow_version", "requests", "diverged", "divergence_rate": float|null,
        "divergence_ci95": [lo, hi]|null, "label_flips", "label_flip_rate",
        "diverged_within_noise", "errors", "timeouts", "drops",
        "error_kinds": {"DEADLINE_EXCEEDED": int, ...}, "first_ts", "last_ts",
        "latency_ms": {"primary": {"p50", "p99"}|null, "shadow": {...}|null},
        "outputs": [{"output", "kind", "count", "diverged", "label_flips",
                     "schema_mismatches",
                     "metrics": {"max_abs": {"p50", "p90", "p99", "max"}, ...}}],
        "feature_checks": [{"feature", "kind", "requests", "diverged", "rate", "lift"}],
        "feature_values": [{"feature", "type": "numeric"|"categorical", "bucket",
                            "lo", "hi", "requests", "diverged", "rate", "lift"}],
        "feature_mismatch_counts": [{"feature", "kind", "primary", "shadow"}],
        "worst_requests": [{"request_id", "ts", "replica", "max_abs", "js_max",
                            "diverged", "label_flip", "diverged_outputs": [str]}],
        "histograms": {"max_abs": {"zero": int, "bins": [{"lo", "hi", "count"}]},
                       "js_max": {...}},
        "timeline": [{"minute": "2026-11-25T06:00:00Z", "requests", "diverged", "rate"}]
      }],
      "noise_floor": [{"model", "primary_version", "requests", "diverged",
                       "deterministic": bool, "max_abs",
                       "floor": {"<output>": {"<metric>": {"max", "p99"}}}}],
      "gates": {"expressions": [str], "failed": bool,
                "results": [{"group", "model", "comparison", "primary_version",
                             "shadow_version", "expr", "metric", "op", "threshold",
                             "value": float|null, "failed": bool}]}
    }

Timestamps are UTC ISO 8601 strings; rates are fractions (0..1); values that
cannot be computed are null. See `summary` for the exact definitions.
"""
