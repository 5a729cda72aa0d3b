"""``pioneer bench coldstart-sms``: cold start on the UCI SMS Spam Collection.

A fixed, seeded, stratified 80/20 split; the agent sees only the 80% (it builds its own frozen
evaluation set from it); the 20% is the held-out test, scored once at the end for the untrained
baseline and for the best attempt. Paper anchor: spam F1 0.9834 -> 0.9967.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from pioneer.bench.common import cpu_seconds, run_adaptation, search_summary

SPEC = """
apiVersion: pioneer.dev/v1alpha1
kind: ModelAdaptation
metadata:
  name: coldstart-sms
spec:
  mode: coldStart
  task:
    description: Flag SMS messages that are spam.
    type: classification
    metric: f1
    positiveLabel: spam
    negativeLabel: ham
  data:
    sources:
      - path: {train}
        format: tsv
        textField: SMS
        labelField: Label
    evaluation: {{size: 400}}
    curation: {{maxTrainExamples: 2000}}
  hyperparameters: {{backend: {backend}, learningRate: 1.0e-4, epochs: 2, maxLength: 64, batchSize: 16{backend_extra}}}
  gate: {{tau: 0.99}}
  search: {{maxAttempts: {max_attempts}, parallelism: 2, configurationsPerIteration: 2, seed: {seed}}}
  artifacts: {{uri: {artifacts}}}
"""




def load_split(path: Path, seed: int) -> tuple[list[dict], list[dict]]:
    from sklearn.model_selection import train_test_split

    with open(path, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t") if r.get("SMS") and r.get("Label")]
    train, test = train_test_split(rows, test_size=0.2, random_state=seed, stratify=[r["Label"] for r in rows])
    return train, test


def test_f1(model_dir: str, test: list[dict]) -> dict:
    """Spam F1 on the test split, answered as the model is served (its own backend and saved preprocessing)."""
    from pioneer.bench.common import predict_outputs

    return scored(test, predict_outputs(model_dir, [r["SMS"] for r in test]), {})


def scored(test: list[dict], predictions: list[str], facts: dict) -> dict:
    from pioneer.trainer.metrics import classification_metrics

    m = classification_metrics([r["Label"] for r in test], predictions, ["ham", "spam"], "f1", "spam")
    return {"f1": m["score"], "accuracy": m["accuracy"], "spam": m["per_label"]["spam"], "confusion_matrix": m["confusion_matrix"], **facts}


def baselines(train: list[dict], test: list[dict], work: Path, seed: int) -> dict:
    """The user's alternatives on the same split: TF-IDF + logistic regression, and a plain Trainer fine-tune of the
    spec's base model on all of the agent's training data (the 80%: more than the agent trains on after curation)."""
    from pioneer import defaults
    from pioneer.bench.baselines import plain_finetune, tfidf_logreg

    texts, labels, test_texts = [r["SMS"] for r in train], [r["Label"] for r in train], [r["SMS"] for r in test]
    out = {"tfidf_logreg": scored(test, *tfidf_logreg(texts, labels, test_texts, "f1", "spam", seed=seed))}
    print(f"coldstart-sms: baseline tfidf_logreg spam F1 {out['tfidf_logreg']['f1']:.4f}", file=sys.stderr)
    out["plain_finetune"] = scored(test, *plain_finetune(defaults.BASE_MODEL, texts, labels, test_texts, work / "plain-finetune",
                                                         seed=seed, scorer_labels=["ham", "spam"]))
    print(f"coldstart-sms: baseline plain_finetune spam F1 {out['plain_finetune']['f1']:.4f}", file=sys.stderr)
    return out


def run(args: argparse.Namespace) -> int:
    data = Path(args.data_dir) / "sms_spam" / "SMSSpamCollection.tsv"
    if not data.is_file():
        print(f"coldstart-sms: {data} not found; pass --data-dir pointing at the shared datasets folder", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    work = Path(args.workdir).resolve() if args.workdir else out.with_suffix("").parent / (out.stem + "-work")
    work.mkdir(parents=True, exist_ok=True)
    started, cpu0 = time.monotonic(), cpu_seconds()

    train, test = load_split(data, args.seed)
    train_file = work / "sms-train-80.tsv"
    with open(train_file, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["Label", "SMS"], delimiter="\t")
        writer.writeheader()
        writer.writerows({"Label": r["Label"], "SMS": r["SMS"]} for r in train)
    spec_text = SPEC.format(train=json.dumps(str(train_file)), artifacts=json.dumps(str(work / "artifacts")),
                            max_attempts=args.max_attempts, seed=args.seed, backend=args.backend,
                            backend_extra=(f", taskLearningRate: 3.0e-3, gliner2Architecture: {args.gliner2_architecture}"
                                           if args.backend == "gliner2" else ""))
    runner, status, baseline, best = run_adaptation(spec_text, work)
    result = {
        "benchmark": "coldstart-sms",
        "backend": args.backend, **({"gliner2_architecture": args.gliner2_architecture} if args.backend == "gliner2" else {}),
        "data": str(data),
        "split": {"seed": args.seed, "train": len(train), "test": len(test), "test_spam": sum(r["Label"] == "spam" for r in test)},
        "baseline_score": None,
        "best_score": None,
        "baseline_eval_score": status.baseline_score,
        **search_summary(runner, status),
    }
    if baseline.status and baseline.status.model_uri:
        result["baseline_test"] = test_f1(baseline.status.model_uri, test)
        result["baseline_score"] = result["baseline_test"]["f1"]
    if best is not None and best.status.model_uri:
        result["best_test"] = test_f1(best.status.model_uri, test)
        result["best_score"] = result["best_test"]["f1"]
    agent_wall = round(time.monotonic() - started, 1)
    result["agent_wall_seconds"] = agent_wall
    result["baselines"] = baselines(train, test, work, args.seed)
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    result["cpu_seconds"] = round(cpu_seconds() - cpu0, 1)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({**{k: result[k] for k in ("backend", "baseline_score", "best_score", "attempts", "iterations", "agent_wall_seconds",
                                                "wall_seconds", "cpu_seconds")},
                      **{f"{name}_f1": b["f1"] for name, b in result["baselines"].items()}}))
    return 0 if result["best_score"] is not None else 1
