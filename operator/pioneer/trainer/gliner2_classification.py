"""Text classification with a GLiNER2 extractor's classification head (``hyperparameters.backend: gliner2``).

Each example becomes one gliner2 classification task (``label``, the task's labels, the true label). At
inference the head's softmax over the labels is read whole (a multi-label schema with a 0 cut-off returns
every label's probability), so the answer, its confidence and the runner-up label mean what they mean for
the transformers backend. The preservation strategies (distillation, confidence replay, interpolation) read
a transformers parent's logits and weights: with this backend an attempt that asks for them fails naming
the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pioneer.trainer import gliner2_model as g2
from pioneer.trainer.classification import validate_row

__all__ = ["validate_row", "train_attempt", "evaluate_attempt", "predict_rows", "agrees", "save"]

TASK = "label"  # the gliner2 classification task's name
# gliner2 trains its classifier for zero-shot use: it shuffles, drops and renames ("label 1") the labels of
# every example. A task with a fixed label set keeps them as they are, in the order inference asks for them:
# measured on 90 toy spam/ham texts (full fine-tune, 4 epochs), accuracy 0.50 with gliner2's augmentation
# (the loss never left chance) and 1.00 without it.
FIXED_LABELS = {"shuffle_classification_labels": False, "synthetic_label_prob": 0.0, "remove_classification_label_prob": 0.0}
INFERENCE_BATCH = 32


def _schema(labels: list[str]) -> dict[str, Any]:
    return {TASK: {"labels": list(labels), "multi_label": True, "cls_threshold": 0.0, "class_act": "softmax"}}


def probabilities(model, texts: list[str], labels: list[str], max_length: int) -> np.ndarray:
    """(texts x labels) class probabilities, in the order of ``labels``."""
    if not texts:
        return np.zeros((0, len(labels)), dtype=np.float32)
    results = model.batch_classify_text(texts, _schema(labels), batch_size=INFERENCE_BATCH, include_confidence=True,
                                        max_len=max_length)
    index = {lab: i for i, lab in enumerate(labels)}
    probs = np.zeros((len(texts), len(labels)), dtype=np.float32)
    for row, res in enumerate(results):
        for item in res.get(TASK) or []:
            probs[row, index[item["label"]]] = float(item["confidence"])
    return probs


def predict(model, texts: list[str], labels: list[str], max_length: int) -> tuple[list[str], np.ndarray]:
    probs = probabilities(model, texts, labels, max_length)
    return [labels[int(i)] for i in probs.argmax(axis=1)] if len(texts) else [], probs


def train_attempt(rows: list[dict[str, Any]], spec, workdir: Path, on_progress=None, eval_rows=None):
    from gliner2.training import Classification, InputExample

    hp, strategy = spec.pipeline.hyperparameters, spec.pipeline.strategy
    if strategy.preserving():
        raise ValueError(f"strategy {strategy.preserving()} needs the transformers backend (it reads a sequence-classification "
                         "parent's logits and weights); backend gliner2 trains gold, hard negatives and replay only")
    g2.require()
    model, origin = g2.load(hp.base_model, spec.pipeline.data.seed, hp.gliner2_architecture)
    facts: dict[str, Any] = {"backend": "gliner2", "initialised": origin, "n_train": len(rows), "method": hp.method}
    if hp.epochs == 0 or not rows:
        facts.update(device=g2.device_of(model), steps=0, train_seconds=0.0, final_loss=None)
        model.eval()
        return model, facts
    examples = [InputExample(text=r["text"], classifications=[Classification(task=TASK, labels=list(spec.labels), true_label=r["label"])])
                for r in rows]
    model, trained = g2.train(model, examples, hp, spec.pipeline.data.seed, workdir, on_progress, sampling=FIXED_LABELS)
    facts.update(trained)
    return model, facts


def evaluate_attempt(model, rows: list[dict[str, Any]], spec) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from pioneer.trainer.metrics import classification_metrics

    preds, probs = predict(model, [r["text"] for r in rows], list(spec.labels), spec.pipeline.hyperparameters.max_length)
    metrics = classification_metrics([r["label"] for r in rows], preds, spec.labels, spec.task.metric, spec.task.positive_label,
                                     slices=[r.get("role", "positive") for r in rows])
    predictions = [{"id": r.get("id"), "text": r["text"], "label": r["label"], "prediction": pred,
                    "confidence": round(float(p.max()), 5), "correct": pred == r["label"], "slice": r.get("role")}
                   for r, pred, p in zip(rows, preds, probs)]
    return metrics, predictions


def predict_rows(model, rows: list[dict[str, Any]], spec) -> list[str]:
    return predict(model, [r["text"] for r in rows], list(spec.labels), spec.pipeline.hyperparameters.max_length)[0]


def agrees(prediction: str, label: str, spec) -> bool:
    return prediction == label


def save(model, folder: Path) -> None:
    g2.save(model, folder)
