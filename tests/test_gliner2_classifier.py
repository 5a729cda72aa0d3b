"""GLiNER2 (``hyperparameters.backend: gliner2``): a classifier trained through the span extractor's classification head, saved and served. In its own file so that the slow GLiNER2 trainings run on
both pytest workers (``--dist loadfile``); the helpers are ``test_gliner2``'s."""

from __future__ import annotations

import json
import random

import pytest

from test_gliner2 import GLINER2_HP, _served

pytest.importorskip("gliner2.training", reason="the 'gliner' extra (gliner2[train]) is not installed")


@pytest.mark.slow
def test_a_gliner2_classifier_trains_through_its_classification_head(write_spec, tmp_path, python):
    from pioneer.cli import main

    rng = random.Random(0)
    spam = ["WIN a free prize now", "Claim your cash reward", "Free entry to win a car", "URGENT you won a holiday"]
    ham = ["see you at lunch", "running late, sorry", "can you call mum", "dinner at eight?"]
    rows = [{"text": f"{rng.choice(spam)} {i}", "label": "spam"} if i % 2 else {"text": f"{rng.choice(ham)} {i}", "label": "ham"}
            for i in range(120)]
    (tmp_path / "sms.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc = {"apiVersion": "pioneer.dev/v1alpha1", "kind": "ModelAdaptation", "metadata": {"name": "sms"},
           "spec": {"task": {"description": "flag spam", "type": "classification", "labels": ["ham", "spam"], "metric": "f1",
                             "positiveLabel": "spam"},
                    "data": {"sources": [{"path": "sms.jsonl"}], "evaluation": {"size": 30}},
                    "hyperparameters": {**GLINER2_HP, "epochs": 8},
                    "search": {"maxAttempts": 1, "parallelism": 1, "configurationsPerIteration": 1},
                    "gate": {"tau": 0.05}, "deployedModel": "sms", "artifacts": {"uri": str(tmp_path / "art")}}}
    assert main(["run", str(write_spec(doc)), "--quiet"]) == 0
    attempt = tmp_path / "art" / "sms" / "attempts" / "sms-i1-a"
    metrics = json.loads((attempt / "output" / "metrics.json").read_text())
    assert metrics["training"]["backend"] == "gliner2" and metrics["training"]["method"] == "full"
    assert metrics["score"] > 0.9 and "confusion_matrix" in metrics
    # a plain GLiNER2 checkpoint (LoRA runs are merged before saving, so they look the same)
    model_dir = attempt / "output" / "model"
    assert not list(model_dir.glob("adapter_*")) and (model_dir / "model.safetensors").is_file()
    scored = [json.loads(x) for x in (attempt / "output" / "predictions.jsonl").read_text().splitlines()]
    served = _served(python, tmp_path, tmp_path / "art", "sms", [r["text"] for r in scored])
    assert [s["prediction"] for s in served] == [r["prediction"] for r in scored]
    assert [s["confidence"] for s in served] == pytest.approx([r["confidence"] for r in scored], abs=1e-3)
