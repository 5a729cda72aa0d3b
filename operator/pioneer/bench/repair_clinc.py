"""``pioneer bench repair-clinc150``: production repair of a deliberately under-trained intent model.

Scenario (paper §4.4.1, scaled to a CPU): 30 CLINC150 intents including confusable families (banking,
cards, restaurants, travel, time). A deployed model trained on a few examples per intent serves ~3,000
held-out utterances; an exact-match judge against the true intent marks each trace pass/fail and
records the correction. Production mode then diagnoses, builds the curriculum, retrains from the base
model and gates the result. Fresh traffic (the CLINC test split of the same intents), never seen by
the deployed model or the repair, measures whether the repair generalises.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from pioneer.bench.common import cpu_seconds, deploy_first_revision, fresh_workdir, predict_outputs, repair_summary

INTENTS = [
    "balance", "bill_balance", "bill_due", "pay_bill", "transfer", "transactions", "freeze_account", "report_fraud",
    "card_declined", "replacement_card_duration", "new_card", "credit_limit", "credit_limit_change", "interest_rate", "apr",
    "restaurant_reservation", "restaurant_reviews", "restaurant_suggestion", "confirm_reservation", "cancel_reservation",
    "accept_reservations", "book_flight", "book_hotel", "car_rental", "flight_status", "travel_alert", "travel_suggestion",
    "timezone", "time", "date",
]
DEPLOYED_PER_INTENT = 30
INFERENCES = 3000

DEPLOY_SPEC = {
    "apiVersion": "pioneer.dev/v1alpha1", "kind": "ModelAdaptation", "metadata": {"name": "clinc30-v1"},
    "spec": {
        "task": {"description": "Route a banking/travel assistant request to its intent.", "metric": "accuracy", "labels": INTENTS},
        "data": {"sources": [{"path": "deployed-train.jsonl"}], "evaluation": {"size": 60, "boundaryShare": 0.3}},
        "hyperparameters": {"learningRate": 1e-4, "epochs": 3, "maxLength": 32},
        "gate": {"tau": 0.01}, "search": {"maxAttempts": 1, "parallelism": 1, "configurationsPerIteration": 1},
        "artifacts": {"uri": "artifacts"}, "deployedModel": "clinc30",
    },
}
REPAIR_SPEC = {
    "apiVersion": "pioneer.dev/v1alpha1", "kind": "ModelAdaptation", "metadata": {"name": "clinc30-repair"},
    "spec": {
        "mode": "production",
        "task": {"description": "Route a banking/travel assistant request to its intent.", "metric": "accuracy", "labels": INTENTS},
        "data": {"sources": [{"traces": "traces.db"}], "curation": {"replayShare": 0.5}},
        "hyperparameters": {"learningRate": 2e-4, "epochs": 8, "maxLength": 32, "batchSize": 32},
        "gate": {"tau": 0.96, "epsilon": 2},
        "search": {"maxAttempts": 4, "parallelism": 2},
        "artifacts": {"uri": "artifacts"}, "deployedModel": "clinc30",
    },
}


def _accuracy(model_uri: str, rows: list[tuple[str, str]]) -> tuple[float, list[str]]:
    preds = predict_outputs(model_uri, [t for t, _ in rows])
    return sum(p == y for p, (_, y) in zip(preds, rows)) / len(rows), preds


def run(args: argparse.Namespace) -> int:
    from pioneer.api.validation import parse_resource
    from pioneer.runner.display import Display
    from pioneer.runner.local import LocalRunner
    from pioneer.traces.judges import exact_match
    from pioneer.traces.store import add, connect

    data_file = Path(args.data_dir) / "clinc150" / "data_full.json"
    if not data_file.is_file():
        print(f"repair-clinc150: {data_file} not found; pass --data-dir pointing at the shared datasets folder", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    work = fresh_workdir(args, out)
    started, cpu0 = time.monotonic(), cpu_seconds()
    rng = random.Random(args.seed)
    data = json.loads(data_file.read_text())
    keep = set(INTENTS)
    pool = [(t, y) for t, y in data["train"] + data["val"] if y in keep]
    fresh = [(t, y) for t, y in data["test"] if y in keep]
    rng.shuffle(pool)
    deployed_train, seen = [], {}
    rest = []
    for t, y in pool:
        if seen.get(y, 0) < DEPLOYED_PER_INTENT:
            deployed_train.append((t, y))
            seen[y] = seen.get(y, 0) + 1
        else:
            rest.append((t, y))
    inferences = rest[:INFERENCES]
    (work / "deployed-train.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in deployed_train))

    display = Display()
    # 1. the deployed model: a deliberately small cold start, promoted as revision 1
    registry, parent = deploy_first_revision(DEPLOY_SPEC, work, display)
    if parent is None:
        print("repair-clinc150: the deployed model was not promoted", file=sys.stderr)
        return 1

    # 2. production traffic, judged by exact match against the true intent
    _, preds = _accuracy(parent.model_uri, inferences)
    db = connect(work / "traces.db")
    rows = []
    for i, ((text, truth), pred) in enumerate(zip(inferences, preds)):
        j = exact_match(pred, truth)
        rows.append({"id": f"t{i:05d}", "input": text, "prediction": pred, "corrected": truth, "verdict": j.verdict,
                     "judge_reasoning": j.reasoning, "judge_meta": j.meta, "model_id": "clinc30@1"})
    add(db, rows)
    failures_before = sum(r["verdict"] == "fail" for r in rows)
    heldout_before, _ = _accuracy(parent.model_uri, fresh)

    # 3. production mode: diagnose, curriculum, retrain from the base model, gate
    repair = LocalRunner(parse_resource(REPAIR_SPEC), base_dir=work, on_event=display.event)
    status = repair.run(on_tick=display.tick)
    display.close()
    summary, after = repair_summary(repair, status, registry, "clinc30", failures_before, len(rows))
    heldout_after, _ = _accuracy(after.model_uri, fresh)
    result = {
        "benchmark": "repair-clinc150", "intents": len(INTENTS), "deployed_train_per_intent": DEPLOYED_PER_INTENT, **summary,
        "heldout_size": len(fresh), "heldout_accuracy_before": round(heldout_before, 4), "heldout_accuracy_after": round(heldout_after, 4),
    }
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    result["cpu_seconds"] = round(cpu_seconds() - cpu0, 1)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: result[k] for k in ("inferences", "failures_before", "pass_rate_before", "failures_fixed", "fixed_rate",
                                             "regression_set_size", "regressions", "cross_checkpoint_regressions", "promoted",
                                             "heldout_accuracy_before", "heldout_accuracy_after", "wall_seconds")}))
    return 0
