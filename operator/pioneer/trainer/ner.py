"""Named-entity recognition with a ``transformers`` token-classification encoder.

An example is a sentence as words with one BIO tag per word (``text`` = words joined by single spaces,
``label`` = tags joined by single spaces). Only a word's first sub-word token carries its tag in the
loss. At inference the tags are the most probable valid BIO sequence, with ``O`` weighted by the decision
``threshold``; the trainer sweeps it on the evaluation set and keeps the best one with the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pioneer.api.models import Hyperparameters
from pioneer.data.bio import OUTSIDE, alignment_problem, tag_set
from pioneer.trainer.base_models import resolve
from pioneer.trainer.casing import add_casing_feature, case_class, uses_casing
from pioneer.trainer.fit import ListDataset, fit, pick_device, with_lora

THRESHOLD_FILE = "pioneer_ner.json"
THRESHOLDS = [round(t, 2) for t in np.arange(0.1, 0.91, 0.05)]


def words_and_tags(text: str, label: str) -> tuple[list[str], list[str]]:
    return text.split(" "), label.split(" ")


def _encode(tokenizer, words: list[list[str]], max_length: int, casing: bool = False):
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    if casing:
        enc["token_type_ids"] = [[0 if w is None else case_class(ws[w]) for w in enc.word_ids(i)] for i, ws in enumerate(words)]
    return enc


def load_for_training(hp: Hyperparameters, tags: list[str], seed: int):
    from transformers import AutoModelForTokenClassification, AutoTokenizer, set_seed

    set_seed(seed)
    source = resolve(hp.base_model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForTokenClassification.from_pretrained(
        source, num_labels=len(tags), id2label=dict(enumerate(tags)), label2id={t: i for i, t in enumerate(tags)},
        ignore_mismatched_sizes=True,
    )
    add_casing_feature(model, tokenizer)
    return tokenizer, with_lora(model, hp, "TOKEN_CLS")


def train(texts: list[str], labels: list[str], entity_types: list[str], hp: Hyperparameters, seed: int, workdir: Path,
          on_progress=None):
    """Train and return (tokenizer, model, facts)."""
    from transformers import DataCollatorForTokenClassification

    tags = tag_set(entity_types)
    tokenizer, model = load_for_training(hp, tags, seed)
    casing = uses_casing(model)
    facts: dict[str, Any] = {"device": pick_device(), "n_train": len(texts), "method": hp.method, "casing_feature": casing}
    if hp.epochs == 0 or not texts:
        facts.update(steps=0, train_seconds=0.0, final_loss=None)
        return tokenizer, model, facts
    tag_id = {t: i for i, t in enumerate(tags)}
    pairs = [words_and_tags(t, lab) for t, lab in zip(texts, labels)]
    enc = _encode(tokenizer, [w for w, _ in pairs], hp.max_length, casing)
    items = []
    for i, (_, word_tags) in enumerate(pairs):
        previous, label_ids = None, []
        for w in enc.word_ids(i):
            label_ids.append(-100 if w is None or w == previous else tag_id[word_tags[w]])
            previous = w
        item = {"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "labels": label_ids}
        if casing:
            item["token_type_ids"] = enc["token_type_ids"][i]
        items.append(item)
    model, trained = fit(model, ListDataset(items), DataCollatorForTokenClassification(tokenizer), hp, seed, workdir, on_progress)
    facts.update(trained)
    return tokenizer, model, facts


@torch.no_grad()
def word_probabilities(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> list[np.ndarray]:
    """Per sentence, a (words x tags) array of tag probabilities at each word's first sub-word.

    Words cut off by ``max_length`` get probability 1 on ``O``.
    """
    device = next(model.parameters()).device
    model.eval()
    words = [t.split(" ") for t in texts]
    out: list[np.ndarray] = [None] * len(texts)  # type: ignore[list-item]
    order = np.argsort([len(w) for w in words], kind="stable")
    n_tags = model.config.num_labels
    casing = uses_casing(model)
    keys = ["input_ids", "attention_mask"] + (["token_type_ids"] if casing else [])
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        batch = _encode(tokenizer, [words[i] for i in idx], max_length, casing)
        padded = tokenizer.pad({k: batch[k] for k in keys}, return_tensors="pt")
        probs = torch.softmax(model(**{k: v.to(device) for k, v in padded.items()}).logits.float(), dim=-1).cpu().numpy()
        for row, i in enumerate(idx):
            p = np.zeros((len(words[i]), n_tags), dtype=np.float32)
            p[:, 0] = 1.0
            seen = set()
            for pos, w in enumerate(batch.word_ids(row)):
                if w is not None and w not in seen:
                    p[w] = probs[row, pos]
                    seen.add(w)
            out[i] = p
    return out


def _transitions(tags: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Log-scores (0 allowed, -inf forbidden) of starting with each tag and of each tag -> tag step under BIO:
    ``I-X`` only continues ``B-X`` or ``I-X``."""
    inside = np.array([t.startswith("I-") for t in tags])
    start = np.where(inside, -np.inf, 0.0)
    step = np.zeros((len(tags), len(tags)))
    for j, t in enumerate(tags):
        if inside[j]:
            step[:, j] = [0.0 if s != OUTSIDE and s[2:] == t[2:] else -np.inf for s in tags]
    return start, step


def decode(probs: np.ndarray, tags: list[str], threshold: float) -> list[str]:
    """Tags of one sentence: the most probable valid BIO sequence (Viterbi), with ``O`` weighted by the threshold.

    ``O`` gets the log-odds ``log(threshold / (1 - threshold))`` added, so with a single entity tag a word is
    an entity exactly when its entity probability reaches ``threshold``; higher thresholds trade false
    positives for false negatives. The BIO constraint keeps an uncertain first word with a confident
    continuation instead of emitting a stray ``I-`` tag.
    """
    t = min(max(threshold, 1e-6), 1 - 1e-6)
    scores = np.log(np.clip(probs, 1e-12, 1.0))
    scores[:, tags.index(OUTSIDE)] += np.log(t / (1 - t))
    start, step = _transitions(tags)
    best, back = start + scores[0], []
    for word in scores[1:]:
        candidates = best[:, None] + step
        back.append(candidates.argmax(axis=0))
        best = candidates.max(axis=0) + word
    path = [int(best.argmax())]
    for pointers in reversed(back):
        path.append(int(pointers[path[-1]]))
    return [tags[i] for i in reversed(path)]


def predict(model, tokenizer, texts: list[str], max_length: int, threshold: float) -> list[str]:
    tags = [model.config.id2label[i] for i in range(model.config.num_labels)]
    return [" ".join(decode(p, tags, threshold)) for p in word_probabilities(model, tokenizer, texts, max_length)]


def save_threshold(model_dir: Path, threshold: float, curve: list[dict[str, Any]]) -> None:
    (Path(model_dir) / THRESHOLD_FILE).write_text(json.dumps({"threshold": threshold, "curve": curve}, indent=2) + "\n")


def saved_threshold(model_dir: str | Path) -> float | None:
    """The decision threshold a model folder was saved with, if any."""
    meta = Path(model_dir) / THRESHOLD_FILE
    return json.loads(meta.read_text())["threshold"] if meta.is_file() else None


def load_trained(model_dir: str | Path):
    """(tokenizer, model, threshold) of a model the trainer wrote."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForTokenClassification.from_pretrained(model_dir).to(pick_device())
    threshold = saved_threshold(model_dir)
    return tokenizer, model, 0.5 if threshold is None else threshold


# --------------------------------------------------------------------------- the trainer program's interface


def validate_row(row: dict[str, Any], entity_types: list[str]) -> str | None:
    return alignment_problem(*words_and_tags(row["text"], row["label"]), entity_types)


@dataclass
class TrainedTagger:
    """A trained tagger and its decision threshold (set when ``evaluate_attempt`` sweeps it)."""

    tokenizer: Any
    model: Any
    threshold: float = 0.5
    curve: list[dict[str, Any]] = field(default_factory=list)
    fixed: bool = False  # the threshold was given (decisionThreshold, or the deployed model's own): report the curve, keep it


def train_attempt(rows: list[dict[str, Any]], spec, workdir: Path, on_progress=None, eval_rows=None):
    hp = spec.pipeline.hyperparameters
    tokenizer, model, facts = train([r["text"] for r in rows], [r["label"] for r in rows], spec.labels, hp,
                                    spec.pipeline.data.seed, workdir, on_progress=on_progress)
    threshold = hp.decision_threshold
    if threshold is None and not facts["steps"]:  # an untrained deployed model keeps its operating point
        threshold = saved_threshold(resolve(hp.base_model))
    facts["decision_threshold"] = "fixed" if threshold is not None else "swept"
    return TrainedTagger(tokenizer, model, threshold if threshold is not None else 0.5, fixed=threshold is not None), facts


def evaluate_attempt(trained, rows: list[dict[str, Any]], spec) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Sweep the decision threshold on the evaluation set, keep the best (unless it is fixed), score at it."""
    from pioneer.trainer.ner_metrics import ner_metrics, threshold_curve

    tokenizer, model = trained.tokenizer, trained.model
    tags = [model.config.id2label[i] for i in range(model.config.num_labels)]
    probs = word_probabilities(model, tokenizer, [r["text"] for r in rows], spec.pipeline.hyperparameters.max_length)
    truth = [r["label"].split(" ") for r in rows]
    curve = threshold_curve(truth, lambda t: [decode(p, tags, t) for p in probs], THRESHOLDS)
    if not trained.fixed:
        trained.threshold = max(curve, key=lambda c: (c["f1"], -abs(c["threshold"] - 0.5)))["threshold"]
    trained.curve = curve
    pred = [decode(p, tags, trained.threshold) for p in probs]
    metrics = ner_metrics(truth, pred, slices=[r.get("role", "positive") for r in rows])
    metrics.update(threshold=trained.threshold, threshold_fixed=trained.fixed, threshold_curve=curve)
    predictions = [{"id": r.get("id"), "text": r["text"], "label": r["label"], "prediction": " ".join(p),
                    "correct": t == p, "slice": r.get("role")} for r, t, p in zip(rows, truth, pred)]
    return metrics, predictions


def predict_rows(trained, rows: list[dict[str, Any]], spec) -> list[str]:
    return predict(trained.model, trained.tokenizer, [r["text"] for r in rows], spec.pipeline.hyperparameters.max_length,
                   trained.threshold)


def agrees(prediction: str, label: str, spec) -> bool:
    return prediction == label


def save(trained, folder: Path) -> None:
    trained.model.save_pretrained(folder)
    trained.tokenizer.save_pretrained(folder)
    save_threshold(folder, trained.threshold, trained.curve)
