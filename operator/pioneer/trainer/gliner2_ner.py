"""NER with a GLiNER2 span extractor (``hyperparameters.backend: gliner2``).

Examples stay what every NER backend reads and writes: words joined by single spaces with one BIO tag per
word. Training turns each sentence into gliner2's own format (entity type -> mentions; every type is listed,
so a type with no mention trains as a negative). At inference the extractor proposes scored character spans;
a span is kept when its confidence reaches the decision threshold, overlapping spans of any type are resolved
by gliner2's own resolver (the more confident wins), and the kept spans become BIO tags on the words they
cover. The threshold is swept on the evaluation set and saved with the model (``pioneer_ner.json``), exactly
as for the token-classification backend, so the gate, triage and serving read one format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pioneer.data.bio import OUTSIDE
from pioneer.trainer import gliner2_model as g2
from pioneer.trainer.base_models import resolve
from pioneer.trainer.ner import THRESHOLDS, save_threshold, saved_threshold, validate_row, words_and_tags

__all__ = ["validate_row", "train_attempt", "evaluate_attempt", "predict_rows", "agrees", "save"]

INFERENCE_BATCH = 32
Span = tuple[int, int, str, float]  # (start character, end character, entity type, confidence)


def mentions(text: str, label: str, entity_types: list[str]) -> dict[str, list[str]]:
    """gliner2's training target of one sentence: each entity type's mentions, in order (every type listed)."""
    words, tags = words_and_tags(text, label)
    out: dict[str, list[str]] = {t: [] for t in entity_types}
    current: list[str] | None = None
    current_type = None
    for word, tag in zip(words, tags):
        if tag == OUTSIDE:
            current = None
            continue
        kind, entity = tag[:2], tag[2:]
        if kind == "B-" or current is None or entity != current_type:
            current, current_type = [word], entity
            out.setdefault(entity, []).append(current)  # type: ignore[arg-type]
        else:
            current.append(word)
    return {t: [" ".join(m) for m in ms] for t, ms in out.items()}  # type: ignore[misc]


def word_starts(text: str) -> list[tuple[int, int]]:
    """Character (start, end) of each space-separated word."""
    spans, pos = [], 0
    for word in text.split(" "):
        spans.append((pos, pos + len(word)))
        pos += len(word) + 1
    return spans


def tags_from_spans(text: str, spans: list[Span], threshold: float) -> tuple[list[str], float]:
    """(BIO tags of the words, the answer's confidence) from scored spans at ``threshold``.

    Confidence is the least certain decision: the lowest confidence of a kept span, or one minus the highest
    confidence of a span left out; 1.0 when there were no candidates."""
    from gliner2.inference.overlap import resolve_overlaps

    kept = resolve_overlaps([s for s in spans if s[3] >= threshold], "disallow", score=lambda s: s[3],
                            start=lambda s: s[0], end=lambda s: s[1])
    words = word_starts(text)
    tags = [OUTSIDE] * len(words)
    for start, end, entity, _ in sorted(kept, key=lambda s: s[0]):
        covered = [i for i, (ws, we) in enumerate(words) if ws < end and we > start and tags[i] == OUTSIDE]
        for n, i in enumerate(covered):
            tags[i] = ("B-" if n == 0 else "I-") + entity
    rejected = [s[3] for s in spans if s[3] < threshold]
    confidence = min([s[3] for s in kept] + [1.0 - c for c in rejected] + [1.0])
    return tags, float(confidence)


def candidate_spans(model, texts: list[str], entity_types: list[str], max_length: int, floor: float) -> list[list[Span]]:
    """Every span the extractor scores at or above ``floor``, per text (one pass; thresholds are applied after).

    The texts go to the extractor shortest first, so a batch pads to a length close to its own texts' (it scores
    every span up to its longest text), and the answers come back in the caller's order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    results = model.batch_extract_entities([texts[i] for i in order], entity_types, batch_size=INFERENCE_BATCH,
                                           threshold=floor, include_confidence=True, include_spans=True,
                                           max_len=max_length, overlap_policy="allow")
    in_order: list[Any] = [None] * len(texts)
    for i, res in zip(order, results):
        in_order[i] = res
    out = []
    for res in in_order:
        spans: list[Span] = []
        for entity, found in (res.get("entities") or {}).items():
            for item in found or []:
                spans.append((int(item["start"]), int(item["end"]), entity, float(item["confidence"])))
        out.append(spans)
    return out


def entity_types_of(labels: list[str]) -> list[str]:
    """Entity types of a task's BIO tag set or label list (``B-PER``/``PER`` -> ``PER``), in first-seen order."""
    seen: list[str] = []
    for label in labels:
        t = label[2:] if label[:2] in ("B-", "I-") else label
        if t != OUTSIDE and t not in seen:
            seen.append(t)
    return seen


@dataclass
class TrainedExtractor:
    model: Any
    entity_types: list[str]
    threshold: float = 0.5
    curve: list[dict[str, Any]] = field(default_factory=list)
    fixed: bool = False


def train_attempt(rows: list[dict[str, Any]], spec, workdir: Path, on_progress=None, eval_rows=None):
    from gliner2.training import InputExample

    hp = spec.pipeline.hyperparameters
    g2.require()
    types = entity_types_of(spec.labels)
    model, origin = g2.load(hp.base_model, spec.pipeline.data.seed, hp.gliner2_architecture)
    facts: dict[str, Any] = {"backend": "gliner2", "initialised": origin, "n_train": len(rows), "method": hp.method}
    if hp.epochs == 0 or not rows:
        facts.update(device=g2.device_of(model), steps=0, train_seconds=0.0, final_loss=None)
        model.eval()
    else:
        examples = [InputExample(text=r["text"], entities=mentions(r["text"], r["label"], types)) for r in rows]
        model, trained = g2.train(model, examples, hp, spec.pipeline.data.seed, workdir, on_progress)
        facts.update(trained)
    threshold = hp.decision_threshold
    if threshold is None and not facts["steps"] and not g2._is_hub_id(hp.base_model):  # an untrained deployed model keeps its own
        threshold = saved_threshold(resolve(hp.base_model))
    facts["decision_threshold"] = "fixed" if threshold is not None else "swept"
    return TrainedExtractor(model, types, threshold if threshold is not None else 0.5, fixed=threshold is not None), facts


def _floor(trained: TrainedExtractor) -> float:
    return min(THRESHOLDS[0], trained.threshold)


def evaluate_attempt(trained: TrainedExtractor, rows: list[dict[str, Any]], spec) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Sweep the decision threshold on the evaluation set, keep the best (unless it is fixed), score at it."""
    from pioneer.trainer.ner_metrics import ner_metrics, threshold_curve

    texts = [r["text"] for r in rows]
    spans = candidate_spans(trained.model, texts, trained.entity_types, spec.pipeline.hyperparameters.max_length, _floor(trained))
    truth = [r["label"].split(" ") for r in rows]
    curve = threshold_curve(truth, lambda t: [tags_from_spans(x, s, t)[0] for x, s in zip(texts, spans)], THRESHOLDS)
    if not trained.fixed:
        trained.threshold = max(curve, key=lambda c: (c["f1"], -abs(c["threshold"] - 0.5)))["threshold"]
    trained.curve = curve
    pred = [tags_from_spans(x, s, trained.threshold)[0] for x, s in zip(texts, spans)]
    metrics = ner_metrics(truth, pred, slices=[r.get("role", "positive") for r in rows])
    metrics.update(threshold=trained.threshold, threshold_fixed=trained.fixed, threshold_curve=curve)
    predictions = [{"id": r.get("id"), "text": r["text"], "label": r["label"], "prediction": " ".join(p),
                    "correct": t == p, "slice": r.get("role")} for r, t, p in zip(rows, truth, pred)]
    return metrics, predictions


def predict(model, texts: list[str], entity_types: list[str], max_length: int, threshold: float) -> list[tuple[str, float]]:
    """(space-joined BIO tags, confidence) per text: what serving answers and the gate scores."""
    spans = candidate_spans(model, texts, entity_types, max_length, min(THRESHOLDS[0], threshold))
    out = []
    for text, s in zip(texts, spans):
        tags, confidence = tags_from_spans(text, s, threshold)
        out.append((" ".join(tags), confidence))
    return out


def predict_rows(trained: TrainedExtractor, rows: list[dict[str, Any]], spec) -> list[str]:
    return [p for p, _ in predict(trained.model, [r["text"] for r in rows], trained.entity_types,
                                  spec.pipeline.hyperparameters.max_length, trained.threshold)]


def agrees(prediction: str, label: str, spec) -> bool:
    return prediction == label


def save(trained: TrainedExtractor, folder: Path) -> None:
    g2.save(trained.model, folder)
    save_threshold(folder, trained.threshold, trained.curve)
