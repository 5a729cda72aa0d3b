"""Prometheus metrics of the operator, served on /metrics (prometheus-client)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry()

ATTEMPTS = Gauge("pioneer_attempts", "TrainingAttempts by adaptation and phase", ["namespace", "adaptation", "phase"], registry=REGISTRY)
BEST_SCORE = Gauge("pioneer_best_score", "Best evaluation score of an adaptation", ["namespace", "adaptation"], registry=REGISTRY)
BASELINE_SCORE = Gauge("pioneer_baseline_score", "Score of the untrained base model", ["namespace", "adaptation"], registry=REGISTRY)
GATE_VERDICTS = Counter("pioneer_gate_verdicts", "Regression-gate verdicts by result (passed | failed)",
                        ["namespace", "deployed_model", "result"], registry=REGISTRY)
TRAINING_SECONDS = Histogram("pioneer_training_duration_seconds", "Wall time of finished training attempts",
                             ["namespace", "adaptation", "result"], registry=REGISTRY,
                             buckets=(30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800))
RECONCILE_ERRORS = Counter("pioneer_reconcile_errors", "Reconcile errors by kind", ["kind"], registry=REGISTRY)
ADAPTATION_STARTED = Gauge("pioneer_adaptation_start_time_seconds", "Unix time an adaptation started",
                           ["namespace", "adaptation"], registry=REGISTRY)
ADAPTATION_DEADLINE = Gauge("pioneer_adaptation_deadline_seconds", "Seconds an adaptation may run before it counts as stuck",
                            ["namespace", "adaptation"], registry=REGISTRY)
ADAPTATION_DONE = Gauge("pioneer_adaptation_completed", "1 when an adaptation has finished (succeeded or failed)",
                        ["namespace", "adaptation"], registry=REGISTRY)

PENDING_APPROVAL_SINCE = Gauge("pioneer_pending_approval_since_seconds",
                               "Unix time a passing candidate started waiting for an approval (manual promotion); absent when none waits",
                               ["namespace", "deployed_model"], registry=REGISTRY)
REPAIRS_STARTED = Counter("pioneer_repairs_started", "Repairs the continual-improvement trigger started",
                          ["namespace", "deployed_model"], registry=REGISTRY)


_serving: set[int] = set()


def serve(port: int) -> None:
    """Serve /metrics on ``port`` (once per process: an operator restarted in-process keeps the server)."""
    if port not in _serving:
        start_http_server(port, registry=REGISTRY)
        _serving.add(port)
