"""A saved model as a predictor, with the preprocessing it was trained and scored with.

The trainer writes ``pioneer-model.json`` into every model folder it saves: the task type, the label order,
the maximum sequence length and the backend that trained it (and, for NER, the decision threshold lies beside it in
``pioneer_ner.json``).
``pioneer serve``, production preparation's live probes and the benchmarks read the model through
:func:`load`, never through a default of their own, so a served answer is the answer the gate scored
(train/serve parity).

A folder without the file (a model trained elsewhere, or before the file existed) is read with the
defaults of :mod:`pioneer.defaults` and says so in ``Preprocessing.source``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pioneer import defaults as d

PREPROCESSING_FILE = "pioneer-model.json"
SERVABLE = ("classification", "ner")


@dataclass(frozen=True)
class Preprocessing:
    """How inputs become model inputs, as the trainer used it."""

    task_type: str
    max_length: int
    labels: list[str] = field(default_factory=list)
    backend: str = d.BACKEND  # transformers or gliner2: which loader reads the folder
    source: str = PREPROCESSING_FILE  # or "defaults" when the folder has no preprocessing file


def write(model_dir: str | Path, pre: Preprocessing) -> None:
    body = {k: v for k, v in asdict(pre).items() if k != "source"}
    (Path(model_dir) / PREPROCESSING_FILE).write_text(json.dumps(body, indent=2) + "\n")


def read(model_dir: str | Path) -> Preprocessing:
    folder = Path(model_dir)
    saved = folder / PREPROCESSING_FILE
    if saved.is_file():
        body = json.loads(saved.read_text())
        return Preprocessing(task_type=body["task_type"], max_length=int(body["max_length"]), labels=list(body.get("labels") or []),
                             backend=body.get("backend", d.BACKEND))
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    if config.get("model_type") == "extractor":  # a GLiNER2 checkpoint: its tasks and labels are not in its config
        raise ValueError(f"{model_dir}: a GLiNER2 model without {PREPROCESSING_FILE} (task type and labels) cannot be served; "
                         "train or repair it with Pioneer first (backend gliner2), which writes the file")
    archs = " ".join(config.get("architectures") or [])
    task = "ner" if "TokenClassification" in archs else "classification"
    labels = [config["id2label"][k] for k in sorted(config.get("id2label") or {}, key=int)]
    return Preprocessing(task_type=task, max_length=d.MAX_LENGTH, labels=labels, source="defaults")


@dataclass(frozen=True)
class Answer:
    """One prediction: the output text (a label, or one BIO tag per word) and the model's confidence in it."""

    output: str
    confidence: float
    ranked: tuple[str, ...] = ()  # classification: every label, most probable first (the triage's second look reads it)

    @property
    def runner_up(self) -> str | None:
        """Classification: the label the model ranked second."""
        return self.ranked[1] if len(self.ranked) > 1 else None


def _classified(label: str, probs, names: list[str]) -> Answer:
    """A classification answer from the label chosen and every label's probability."""
    return Answer(label, float(probs.max()), tuple(names[int(j)] for j in probs.argsort()[::-1]))


class Predictor:
    """A loaded model folder: ``predict(texts)`` answers exactly as the trainer's evaluation does."""

    def __init__(self, model_dir: str | Path):
        self.model_dir = str(model_dir)
        self.preprocessing = read(model_dir)
        task = self.preprocessing.task_type
        if task not in SERVABLE:
            raise ValueError(f"{model_dir}: a {task} model cannot be served (servable: {', '.join(SERVABLE)})")
        self.threshold = None
        if self.preprocessing.backend == "gliner2":
            from pioneer.trainer.gliner2_model import load_trained
            from pioneer.trainer.ner import saved_threshold

            self.tokenizer, self.model = None, load_trained(model_dir)
            if task == "ner":
                saved = saved_threshold(model_dir)
                self.threshold = 0.5 if saved is None else saved
        elif task == "ner":
            from pioneer.trainer.ner import load_trained

            self.tokenizer, self.model, self.threshold = load_trained(model_dir)
        else:
            from pioneer.trainer.classification import load_trained

            self.tokenizer, self.model = load_trained(model_dir)

    def predict(self, texts: list[str]) -> list[Answer]:
        n = self.preprocessing.max_length
        if self.preprocessing.backend == "gliner2":
            return self._predict_gliner2(texts, n)
        if self.preprocessing.task_type == "ner":
            from pioneer.trainer.ner import decode, word_probabilities

            tags = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
            out = []
            for probs in word_probabilities(self.model, self.tokenizer, texts, n):
                chosen = decode(probs, tags, self.threshold)
                conf = float(min((probs[i, tags.index(t)] for i, t in enumerate(chosen)), default=1.0))
                out.append(Answer(" ".join(chosen), conf))
            return out
        from pioneer.trainer.classification import predict

        labels, probs = predict(self.model, self.tokenizer, texts, n)
        names = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        return [_classified(lab, p, names) for lab, p in zip(labels, probs)]

    def _predict_gliner2(self, texts: list[str], n: int) -> list[Answer]:
        labels = self.preprocessing.labels
        if self.preprocessing.task_type == "ner":
            from pioneer.trainer.gliner2_ner import entity_types_of, predict

            return [Answer(tags, conf) for tags, conf in predict(self.model, texts, entity_types_of(labels), n, self.threshold)]
        from pioneer.trainer.gliner2_classification import predict

        chosen, probs = predict(self.model, texts, labels, n)
        return [_classified(lab, p, labels) for lab, p in zip(chosen, probs)]

    def describe(self) -> dict[str, Any]:
        return {"task_type": self.preprocessing.task_type, "backend": self.preprocessing.backend, "max_length": self.preprocessing.max_length,
                "labels": self.preprocessing.labels, "threshold": self.threshold, "preprocessing": self.preprocessing.source}


def load(model_dir: str | Path) -> Predictor:
    return Predictor(model_dir)
