"""Entity-level NER metrics (seqeval conventions): P/R/F1 per type, false positives and false negatives."""

from __future__ import annotations

from collections import Counter
from typing import Any

from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities


def entity_spans(tags: list[str]) -> set[tuple[str, int, int]]:
    """(type, first word, last word) of each entity, seqeval's reading of BIO."""
    return set(get_entities(tags))


def error_counts(truth: list[list[str]], pred: list[list[str]]) -> dict[str, Any]:
    """True positives, false positives (predicted spans not in the truth) and false negatives, overall and per type."""
    tp, fp, fn = Counter(), Counter(), Counter()
    for t, p in zip(truth, pred):
        gold, got = entity_spans(t), entity_spans(p)
        for kind, counter in (("tp", gold & got), ("fp", got - gold), ("fn", gold - got)):
            for span in counter:
                {"tp": tp, "fp": fp, "fn": fn}[kind][span[0]] += 1
    types = sorted(set(tp) | set(fp) | set(fn))
    return {"true_positives": sum(tp.values()), "false_positives": sum(fp.values()), "false_negatives": sum(fn.values()),
            "per_type_errors": {t: {"tp": tp[t], "fp": fp[t], "fn": fn[t]} for t in types}}


def ner_metrics(truth: list[list[str]], pred: list[list[str]], slices: list[str] | None = None) -> dict[str, Any]:
    """metrics.json content for NER: ``score`` is entity-level micro F1."""
    counts = error_counts(truth, pred)
    per_type = {}
    for t, c in counts["per_type_errors"].items():
        p = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 0.0
        r = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 0.0
        per_type[t] = {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "support": c["tp"] + c["fn"]}
    out: dict[str, Any] = {
        "metric": "entityF1",
        "score": float(f1_score(truth, pred, zero_division=0)),
        "precision": float(precision_score(truth, pred, zero_division=0)),
        "recall": float(recall_score(truth, pred, zero_division=0)),
        "n": len(truth),
        "per_label": per_type,
        **counts,
        "fp_fn_ratio": round(counts["false_positives"] / counts["false_negatives"], 3) if counts["false_negatives"] else None,
        "exact_sentences": sum(t == p for t, p in zip(truth, pred)) / max(1, len(truth)),
        "failure_patterns": failure_patterns(truth, pred),
    }
    if slices:
        by: dict[str, list[int]] = {}
        for i, s in enumerate(slices):
            by.setdefault(s, []).append(i)
        out["slice_scores"] = {s: sum(truth[i] == pred[i] for i in idx) / len(idx) for s, idx in sorted(by.items())}
    return out


def failure_patterns(truth: list[list[str]], pred: list[list[str]]) -> list[dict[str, Any]]:
    """Most frequent span errors as (label -> prediction): a type confusion, a missed entity (-> O) or a spurious one (O ->)."""
    patterns = Counter()
    for t, p in zip(truth, pred):
        gold, got = entity_spans(t), entity_spans(p)
        got_at = {(s, e): k for k, s, e in got}
        gold_at = {(s, e): k for k, s, e in gold}
        for k, s, e in gold - got:
            patterns[(k, got_at.get((s, e), "O"))] += 1
        for k, s, e in got - gold:
            if (s, e) not in gold_at:
                patterns[("O", k)] += 1
    return [{"label": a, "prediction": b, "count": c} for (a, b), c in sorted(patterns.items(), key=lambda kv: (-kv[1], kv[0]))]


def threshold_curve(truth: list[list[str]], decode_at, thresholds: list[float]) -> list[dict[str, Any]]:
    """P/R/F1 and FP/FN at each threshold; ``decode_at(t)`` returns the predicted tag sequences."""
    curve = []
    for t in thresholds:
        pred = decode_at(t)
        c = error_counts(truth, pred)
        curve.append({"threshold": t, "f1": round(float(f1_score(truth, pred, zero_division=0)), 4),
                      "precision": round(float(precision_score(truth, pred, zero_division=0)), 4),
                      "recall": round(float(recall_score(truth, pred, zero_division=0)), 4),
                      "false_positives": c["false_positives"], "false_negatives": c["false_negatives"]})
    return curve
