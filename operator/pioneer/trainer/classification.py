"""Encoder sequence classification with transformers: full fine-tune or LoRA (peft)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pioneer.api.models import Hyperparameters
from pioneer.trainer.base_models import resolve
from pioneer.trainer.fit import ListDataset, fit, pick_device, with_lora


def load_for_training(hp: Hyperparameters, labels: list[str], seed: int):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    set_seed(seed)
    source = resolve(hp.base_model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(
        source,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={lab: i for i, lab in enumerate(labels)},
        ignore_mismatched_sizes=True,
    )
    return tokenizer, with_lora(model, hp, "SEQ_CLS")


def train(
    texts: list[str],
    labels: list[str],
    label_names: list[str],
    hp: Hyperparameters,
    seed: int,
    workdir: Path,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
):
    """Train and return (tokenizer, model ready for inference, training facts)."""
    from transformers import DataCollatorWithPadding

    tokenizer, model = load_for_training(hp, label_names, seed)
    facts: dict[str, Any] = {"device": pick_device(), "n_train": len(texts), "method": hp.method}
    if hp.epochs == 0 or not texts:
        facts.update(steps=0, train_seconds=0.0, final_loss=None)
        return tokenizer, model, facts
    label_id = {lab: i for i, lab in enumerate(label_names)}
    enc = tokenizer(texts, truncation=True, max_length=hp.max_length)
    items = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "labels": label_id[lab]}
             for i, lab in enumerate(labels)]
    model, trained = fit(model, ListDataset(items), DataCollatorWithPadding(tokenizer), hp, seed, workdir, on_progress)
    facts.update(trained)
    return tokenizer, model, facts


@torch.no_grad()
def predict(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> tuple[list[str], np.ndarray]:
    """Predicted labels and class probabilities, batched by length for speed."""
    device = next(model.parameters()).device
    model.eval()
    order = np.argsort([len(t) for t in texts], kind="stable")
    probs = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer([texts[i] for i in idx], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        probs[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    id2label = model.config.id2label
    return [id2label[int(i)] for i in probs.argmax(axis=1)], probs


def load_trained(model_dir: str | Path):
    """Load a model the trainer wrote (plain Hugging Face format)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).to(pick_device())
    return tokenizer, model


# --------------------------------------------------------------------------- the trainer program's interface


def validate_row(row: dict[str, Any], labels: list[str]) -> str | None:
    return None if row["label"] in labels else f"label {row['label']!r} is not one of {labels}"


def train_attempt(rows: list[dict[str, Any]], spec, workdir: Path, on_progress=None):
    hp = spec.pipeline.hyperparameters
    tokenizer, model, facts = train([r["text"] for r in rows], [r["label"] for r in rows], spec.labels, hp,
                                    spec.pipeline.data.seed, workdir, on_progress=on_progress)
    return (tokenizer, model), facts


def evaluate_attempt(trained, rows: list[dict[str, Any]], spec) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from pioneer.trainer.metrics import classification_metrics

    tokenizer, model = trained
    preds, probs = predict(model, tokenizer, [r["text"] for r in rows], spec.pipeline.hyperparameters.max_length)
    metrics = classification_metrics([r["label"] for r in rows], preds, spec.labels, spec.task.metric, spec.task.positive_label,
                                     slices=[r.get("role", "positive") for r in rows])
    predictions = [{"id": r.get("id"), "text": r["text"], "label": r["label"], "prediction": pred,
                    "confidence": round(float(p.max()), 5), "correct": pred == r["label"], "slice": r.get("role")}
                   for r, pred, p in zip(rows, preds, probs)]
    return metrics, predictions


def predict_rows(trained, rows: list[dict[str, Any]], spec) -> list[str]:
    tokenizer, model = trained
    return predict(model, tokenizer, [r["text"] for r in rows], spec.pipeline.hyperparameters.max_length)[0]


def agrees(prediction: str, label: str, spec) -> bool:
    return prediction == label


def save(trained, folder: Path) -> None:
    tokenizer, model = trained
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
