"""Encoder sequence classification with transformers: full fine-tune or LoRA (peft)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Preserve:
    """Per-example preservation inputs (trainer.preservation): the parent's distribution (at its temperature) on every row, which
    rows are distilled toward it, and each row's loss weight."""

    teacher: np.ndarray | None = None
    distill: np.ndarray | None = None
    weight: np.ndarray | None = None
    distillation: float = 0.0


def train(
    texts: list[str],
    labels: list[str],
    label_names: list[str],
    hp: Hyperparameters,
    seed: int,
    workdir: Path,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    preserve: Preserve | None = None,
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
    preserve = preserve or Preserve()
    for name in ("teacher", "distill", "weight"):
        values = getattr(preserve, name)
        if values is not None:
            for item, v in zip(items, values):
                item[name] = v.tolist() if isinstance(v, np.ndarray) else float(v)
    model, trained = fit(model, ListDataset(items), DataCollatorWithPadding(tokenizer), hp, seed, workdir, on_progress,
                         distillation=preserve.distillation)
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


def train_attempt(rows: list[dict[str, Any]], spec, workdir: Path, on_progress=None, eval_rows: list[dict[str, Any]] | None = None):
    """Train on ``rows``; with a deployed parent in the inputs and preservation objectives in the strategy, train with them
    (and mix weights with the parent, choosing the mix on ``eval_rows``, the failure set, and a held-out validation slice)."""
    from pioneer.trainer import preservation as pv

    hp, strategy = spec.pipeline.hyperparameters, spec.pipeline.strategy
    on = strategy.preserving()
    facts_extra: dict[str, Any] = {}
    parent = pv.load_parent(spec.inputs) if spec.inputs.parent_model_uri and on else None
    if on and parent is None:
        raise ValueError(f"strategy {on} needs the deployed parent (inputs.parentModelUri): only production repairs have one")
    validation: list[dict[str, Any]] = []
    if strategy.interpolation:
        rows, validation = pv.validation_split(rows, spec.pipeline.data.seed)
        facts_extra["interpolation_validation"] = len(validation)
    preserve = None
    if parent is not None and (strategy.distillation > 0 or strategy.confidence_replay > 0):
        raw = parent_probs(parent, [r["text"] for r in rows], spec.labels, hp.max_length)
        roles = [r.get("role", "gold") for r in rows]
        label_id = {lab: i for i, lab in enumerate(spec.labels)}
        ids = [label_id[r["label"]] for r in rows]
        distill = np.array([role in pv.DISTILLED_ROLES for role in roles], dtype=np.float32)
        known = [i for i, role in enumerate(roles) if role in pv.DISTILLED_ROLES]  # verified labels: the parent should get them
        temperature, rule = pv.parent_temperature(strategy.distillation_temperature, raw[known], [ids[i] for i in known])
        probs = pv.tempered(raw, temperature)
        margins = pv.label_margin(probs, ids)
        weight = pv.replay_weights(roles, margins, strategy.confidence_replay) if strategy.confidence_replay > 0 else None
        preserve = Preserve(teacher=probs if strategy.distillation > 0 else None,
                            distill=distill if strategy.distillation > 0 else None, weight=weight, distillation=strategy.distillation)
        facts_extra["preservation"] = {"parent_temperature": round(temperature, 4),
                                       "temperature_rule": rule,
                                       "parent_margin_median": round(float(np.median(margins[known])), 4) if known else None,
                                       "distilled_rows": int(distill.sum()) if strategy.distillation > 0 else 0,
                                       "replay_weight_mean": round(float(weight[[r in pv.REPLAY_ROLES for r in roles]].mean()), 4)
                                       if weight is not None and any(r in pv.REPLAY_ROLES for r in roles) else None}
    tokenizer, model, facts = train([r["text"] for r in rows], [r["label"] for r in rows], spec.labels, hp,
                                    spec.pipeline.data.seed, workdir, on_progress=on_progress, preserve=preserve)
    facts.update(facts_extra, objectives=on)
    if strategy.interpolation and parent is not None:
        facts["interpolation"] = _interpolate(model, tokenizer, parent, eval_rows or [], validation, spec)
    return (tokenizer, model), facts


def parent_probs(parent, texts: list[str], labels: list[str], max_length: int) -> np.ndarray:
    """The parent's class probabilities on ``texts``, in the order of ``labels``."""
    from pioneer.trainer.preservation import aligned_probs, label_order

    tokenizer, model = parent
    _, probs = predict(model, tokenizer, texts, max_length)
    return aligned_probs(probs, label_order(model), labels)


def _interpolate(model, tokenizer, parent, failures: list[dict[str, Any]], validation: list[dict[str, Any]], spec) -> dict[str, Any]:
    """WiSE-FT: score each mix of the parent's and the trained weights on the failure set and on the validation slice
    (churn: answers that differ from the parent's verified one); load the chosen mix into ``model``. Returns the record."""
    from pioneer import defaults as d
    from pioneer.trainer import preservation as pv

    _, parent_model = parent
    names = pv.label_order(parent_model)
    if names != list(spec.labels):
        return {"skipped": f"the parent's label order {names[:5]}... differs from the candidate's: its head cannot be mixed"}
    candidate_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    parent_state = {k: v.to(next(model.parameters()).device) for k, v in parent_model.state_dict().items()}
    problem = pv.compatible(parent_state, candidate_state)
    if problem:
        return {"skipped": problem}
    from pioneer.trainer.metrics import classification_metrics

    tau = spec.gate.tau if spec.gate is not None else None
    results = []
    max_length = spec.pipeline.hyperparameters.max_length
    for alpha in d.INTERPOLATION_GRID:
        model.load_state_dict(pv.mix(parent_state, candidate_state, alpha))
        fail_pred = predict(model, tokenizer, [r["text"] for r in failures], max_length)[0] if failures else []
        val_pred = predict(model, tokenizer, [r["text"] for r in validation], max_length)[0] if validation else []
        score = classification_metrics([r["label"] for r in failures], fail_pred, spec.labels, spec.task.metric,
                                       spec.task.positive_label)["score"] if failures else 0.0
        results.append({"alpha": alpha, "failure_score": round(float(score), 4),  # the gate's own metric on the failure set
                        "validation_churn": sum(p != r["label"] for p, r in zip(val_pred, validation))})
    chosen, rule = pv.choose_alpha(results, tau)
    model.load_state_dict(pv.mix(parent_state, candidate_state, chosen["alpha"]))
    return {"alpha": chosen["alpha"], "rule": rule, "validation_size": len(validation), "grid": results}


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


def profile_regressions(trained, spec, regressed: list[dict[str, Any]], regression_rows: list[dict[str, Any]],
                        eval_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The regression profile (trainer.preservation.regression_profile), with the deployed parent's margins."""
    from pioneer.trainer import preservation as pv

    parent = pv.load_parent(spec.inputs)
    label_id = {lab: i for i, lab in enumerate(spec.labels)}
    rows = [r for r in regression_rows if r["label"] in label_id]
    margins = pv.label_margin(parent_probs(parent, [r["text"] for r in rows], spec.labels, spec.pipeline.hyperparameters.max_length),
                              [label_id[r["label"]] for r in rows])
    by_text = dict(zip((r["text"] for r in rows), margins))
    flipped = np.array([by_text[r["text"]] for r in regressed if r["text"] in by_text])
    return pv.regression_profile(regressed, margins, flipped, eval_rows)


def predict_rows(trained, rows: list[dict[str, Any]], spec) -> list[str]:
    tokenizer, model = trained
    return predict(model, tokenizer, [r["text"] for r in rows], spec.pipeline.hyperparameters.max_length)[0]


def agrees(prediction: str, label: str, spec) -> bool:
    return prediction == label


def save(trained, folder: Path) -> None:
    tokenizer, model = trained
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
