"""Classification metrics (scikit-learn), in the shape metrics.json carries."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def score(y_true: list[str], y_pred: list[str], metric: str, labels: list[str], positive_label: str | None = None) -> float:
    if not y_true:
        return 0.0
    if metric == "accuracy":
        return float(accuracy_score(y_true, y_pred))
    if metric == "macroF1":
        return float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))
    if metric == "f1":
        return float(f1_score(y_true, y_pred, labels=[positive_label], average="micro", zero_division=0))
    raise ValueError(f"unknown metric {metric!r}")


def classification_metrics(
    y_true: list[str],
    y_pred: list[str],
    labels: list[str],
    metric: str,
    positive_label: str | None = None,
    slices: list[str] | None = None,
) -> dict[str, Any]:
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out: dict[str, Any] = {
        "metric": metric,
        "score": score(y_true, y_pred, metric, labels, positive_label),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "n": len(y_true),
        "per_label": {
            lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, lab in enumerate(labels)
        },
        "confusion_matrix": {"labels": labels, "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()},
        "failure_patterns": [
            {"label": t, "prediction": q, "count": c}
            for (t, q), c in sorted(Counter((t, q) for t, q in zip(y_true, y_pred) if t != q).items(), key=lambda kv: (-kv[1], kv[0]))
        ],
    }
    if slices:
        by_slice: dict[str, list[int]] = {}
        for i, sl in enumerate(slices):
            by_slice.setdefault(sl, []).append(i)
        out["slice_scores"] = {
            sl: float(accuracy_score([y_true[i] for i in idx], [y_pred[i] for i in idx])) for sl, idx in sorted(by_slice.items())
        }
    return out
