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
from collections import Counter
from pathlib import Path

from pioneer.bench.common import cpu_seconds, deploy_first_revision, fresh_workdir, predict_outputs, repair_summary

INTENTS = [
    "balance", "bill_balance", "bill_due", "pay_bill", "transfer", "transactions", "freeze_account", "report_fraud",
    "card_declined", "replacement_card_duration", "new_card", "credit_limit", "credit_limit_change", "interest_rate", "apr",
    "restaurant_reservation", "restaurant_reviews", "restaurant_suggestion", "confirm_reservation", "cancel_reservation",
    "accept_reservations", "book_flight", "book_hotel", "car_rental", "flight_status", "travel_alert", "travel_suggestion",
    "timezone", "time", "date",
]
# ``--intents confusable``: the 15 closest pairs of CLINC150 intents, taken greedily without reuse by the cosine similarity
# of their mean MiniLM (the offline base model) embedding over the train split: see :func:`confusable_intents`, which
# computed this list (user_name/what_is_your_name 0.928 ... shopping_list/shopping_list_update 0.807).
CONFUSABLE_INTENTS = [
    "user_name", "what_is_your_name", "todo_list", "todo_list_update", "pto_balance", "pto_used", "change_ai_name",
    "change_user_name", "meeting_schedule", "schedule_meeting", "play_music", "update_playlist", "calendar", "calendar_update",
    "time", "timezone", "damaged_card", "report_lost_card", "no", "yes", "confirm_reservation", "restaurant_reservation",
    "reminder", "reminder_update", "redeem_rewards", "rewards_balance", "credit_limit", "credit_limit_change", "shopping_list",
    "shopping_list_update",
]
INTENT_SETS = {"standard": INTENTS, "confusable": CONFUSABLE_INTENTS}
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


def confusable_intents(utterances: list[tuple[str, str]], embed, n: int = 30) -> list[tuple[float, str, str]]:
    """The closest intent pairs, greedily and without reuse, until ``n`` intents: cosine similarity of each intent's
    mean embedding (``embed``: texts -> L2-normalised rows). Returns (similarity, intent, intent) per pair."""
    import numpy as np

    labels = sorted({y for _, y in utterances})
    vectors = embed([t for t, _ in utterances])
    index = {lab: i for i, lab in enumerate(labels)}
    sums = np.zeros((len(labels), vectors.shape[1]))
    np.add.at(sums, [index[y] for _, y in utterances], vectors)
    centroids = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    sim = centroids @ centroids.T
    ranked = sorted(((float(sim[i, j]), labels[i], labels[j]) for i in range(len(labels)) for j in range(i + 1, len(labels))),
                    key=lambda p: (-p[0], p[1], p[2]))
    taken: set[str] = set()
    pairs = []
    for s, a, b in ranked:
        if len(taken) >= n:
            break
        if a not in taken and b not in taken:
            taken |= {a, b}
            pairs.append((round(s, 3), a, b))
    return pairs


def specs(intents: list[str]) -> tuple[dict, dict]:
    """The deployed model's cold-start spec and the repair's spec, over ``intents``."""
    deploy, repair = json.loads(json.dumps(DEPLOY_SPEC)), json.loads(json.dumps(REPAIR_SPEC))
    deploy["spec"]["task"]["labels"] = repair["spec"]["task"]["labels"] = list(intents)
    if intents != INTENTS:
        deploy["spec"]["task"]["description"] = repair["spec"]["task"]["description"] = "Route a personal-assistant request to its intent."
    return deploy, repair


def _accuracy(model_uri: str, rows: list[tuple[str, str]]) -> tuple[float, list[str]]:
    preds = predict_outputs(model_uri, [t for t, _ in rows])
    return sum(p == y for p, (_, y) in zip(preds, rows)) / len(rows), preds


def _poison(inferences: list[tuple[str, str]], rate: float, seed: int, intents: list[str]) -> list[tuple[str, str, str | None, list[str]]]:
    """Each inference as (text, the answer its log carries, the right answer or None when none exists, poisonous types
    applied): with ``rate`` > 0 the poisonous perturbations of Table 12 at their relative rates, scaled to that share,
    and no fixable noise (the clean scenario stays as it is otherwise)."""
    from pioneer.bench.perturbations import NO_ANSWER, TABLE_12, perturb, rates_for

    if not rate:
        return [(t, y, y, []) for t, y in inferences]
    rates = rates_for(rate, {p.name: 0.0 for p in TABLE_12 if p.fixable})
    rng = random.Random(f"poison-{seed}")
    out = []
    for text, truth in inferences:
        s = perturb(text, truth, intents, rng, rates)[0]
        out.append((s.text, s.reference, None if s.answer == NO_ANSWER else s.answer, s.applied))
    return out


def filter_scores(repair, rows: list[dict], poisoned: list[tuple[str, str, str | None, list[str]]], model_uri: str | None) -> dict:
    """What the triage set aside, scored against the ground truth it never saw: the reasons, and with poison the
    filter's precision and recall over every trace (failing or passing) and the share of clean failures the
    repaired candidate now answers right (over all of them, set aside or not)."""
    from pioneer.layout import EXCLUDED_KEY
    from pioneer.store import read_jsonl

    excluded = read_jsonl(repair.store, EXCLUDED_KEY)
    failing = [e for e in excluded if e["verdict"] == "fail"]
    truth = {r["id"]: bool(applied) for r, (_, _, _, applied) in zip(rows, poisoned)}
    out: dict = {"poison_rate": round(sum(truth.values()) / len(truth), 4),
                 "set_aside": {"failing": len(failing), "passing": len(excluded) - len(failing),
                               "reasons": dict(Counter(e["reason"] for e in failing))}}
    clean_failures = [(r["input"], answer) for r, (_, _, answer, applied) in zip(rows, poisoned) if r["verdict"] == "fail" and not applied]
    out["clean_failures"] = len(clean_failures)
    out["clean_failures_set_aside"] = sum(1 for e in failing if not truth[e["id"]])
    if any(truth.values()):
        flagged = {e["id"] for e in excluded}
        caught = sum(truth[i] for i in flagged)
        out["filter_precision"] = round(caught / len(flagged), 4) if flagged else None
        out["filter_recall"] = round(caught / sum(truth.values()), 4)
        out["poisoned_traces"] = sum(truth.values())
        out["poison_missed_by_type"] = dict(Counter(t for r, (_, _, _, applied) in zip(rows, poisoned)
                                                    if applied and r["id"] not in flagged for t in applied))
        if model_uri and clean_failures:
            answers = predict_outputs(model_uri, [t for t, _ in clean_failures])
            out["clean_failures_fixed_rate"] = round(sum(a == y for a, (_, y) in zip(answers, clean_failures)) / len(clean_failures), 4)
    return out


def naive_retrain(repair, work: Path, deployed_train: list[tuple[str, str]], rows: list[dict], fresh: list[tuple[str, str]]) -> dict:
    """The user's alternative: retrain from the base model on everything they have (the deployed model's training data
    and every trace with the answer its log carries), no triage, no curriculum, no gate; the repair's own starting
    configuration, scored on the repair's failure set and gate sets and on fresh traffic."""
    from pioneer.bench.common import train_as_attempt
    from pioneer.store import read_jsonl, split_uri

    # the spec's own configuration (i1-a), trained from the base model
    first = min((a for a in repair.attempts.values() if a.spec.iteration == 1), key=lambda a: a.metadata.name)
    inputs = first.spec.inputs
    failure_set = read_jsonl(*split_uri(inputs.eval_uri))
    train = [{"text": t, "label": y} for t, y in deployed_train] + [{"text": r["input"], "label": r["corrected"]} for r in rows]
    folder = work / "naive"
    metrics = train_as_attempt(first.spec, folder, train, failure_set, "naive retrain on every trace",
                               "what a user without triage or a gate would do", regression_uri=inputs.regression_uri,
                               cross_checkpoint_uri=inputs.cross_checkpoint_uri)
    model = str(folder / "attempt" / "output" / "model")
    fresh_accuracy, _ = _accuracy(model, fresh)
    failing = [r for r in rows if r["verdict"] == "fail"]
    answers = predict_outputs(model, [r["input"] for r in failing])
    gate = repair.spec.gate
    return {"n_train": len(train), "failure_set_score": metrics["score"], "regressions": metrics.get("regressions"),
            "cross_checkpoint_regressions": metrics.get("cross_checkpoint_regressions"),
            "failures_answered_as_logged": round(sum(a == r["corrected"] for a, r in zip(answers, failing)) / len(failing), 4) if failing else None,
            "heldout_accuracy": round(fresh_accuracy, 4),
            "within_tau_and_epsilon": bool(metrics["score"] >= gate.tau and (metrics.get("regressions") or 0) <= gate.epsilon
                                           and (metrics.get("cross_checkpoint_regressions") or 0) <= gate.epsilon),
            "train_seconds": metrics.get("training", {}).get("train_seconds")}


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
    intents = INTENT_SETS[args.intents]
    per_intent = args.train_per_intent
    deploy_spec, repair_spec = specs(intents)
    repair_spec["spec"]["production"] = {"triage": {"embeddings": args.triage_embeddings}}
    keep = set(intents)
    pool = [(t, y) for t, y in data["train"] + data["val"] if y in keep]
    fresh = [(t, y) for t, y in data["test"] if y in keep]
    rng.shuffle(pool)
    deployed_train, seen = [], {}
    rest = []
    for t, y in pool:
        if seen.get(y, 0) < per_intent:
            deployed_train.append((t, y))
            seen[y] = seen.get(y, 0) + 1
        else:
            rest.append((t, y))
    inferences = rest[:INFERENCES]
    poisoned = _poison(inferences, args.poison, args.seed, intents)  # (text, logged answer, right answer or None, applied types)
    (work / "deployed-train.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in deployed_train))

    display = Display()
    # 1. the deployed model: a deliberately small cold start, promoted as revision 1
    registry, parent = deploy_first_revision(deploy_spec, work, display)
    if parent is None:
        print("repair-clinc150: the deployed model was not promoted", file=sys.stderr)
        return 1

    # 2. production traffic, judged by exact match against the answer the log carries (poison: a wrong one)
    preds = predict_outputs(parent.model_uri, [text for text, *_ in poisoned])
    db = connect(work / "traces.db")
    rows = []
    for i, ((text, logged, _, _), pred) in enumerate(zip(poisoned, preds)):
        j = exact_match(pred, logged)
        rows.append({"id": f"t{i:05d}", "input": text, "prediction": pred, "corrected": logged, "verdict": j.verdict,
                     "judge_reasoning": j.reasoning, "judge_meta": j.meta, "model_id": "clinc30@1"})
    add(db, rows)  # the ground truth (poisoned or not) stays here, in the benchmark
    failures_before = sum(r["verdict"] == "fail" for r in rows)
    heldout_before, _ = _accuracy(parent.model_uri, fresh)

    # 3. production mode: diagnose, curriculum, retrain from the base model, gate
    repair = LocalRunner(parse_resource(repair_spec), base_dir=work, on_event=display.event)
    status = repair.run(on_tick=display.tick)
    display.close()
    summary, after = repair_summary(repair, status, registry, "clinc30", failures_before, len(rows))
    heldout_after, _ = _accuracy(after.model_uri, fresh)
    result = {
        "benchmark": "repair-clinc150", "intent_set": args.intents, "intents": len(intents), "triage_embeddings": args.triage_embeddings,
        "deployed_train_per_intent": per_intent, **summary,
        "heldout_size": len(fresh), "heldout_accuracy_before": round(heldout_before, 4), "heldout_accuracy_after": round(heldout_after, 4),
        **filter_scores(repair, rows, poisoned, summary["best_model"]),
    }
    result["baselines"] = ({"naive_retrain": naive_retrain(repair, work, deployed_train, rows, fresh)} if args.baselines
                           else {"skipped": "--no-baselines"})
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    result["cpu_seconds"] = round(cpu_seconds() - cpu0, 1)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({**{k: result[k] for k in ("inferences", "poison_rate", "failures_before", "pass_rate_before", "failures_fixed", "fixed_rate",
                                             "fixed_rate_of_all_failures", "set_aside", "regression_set_size", "regressions",
                                             "cross_checkpoint_regressions", "promoted", "heldout_accuracy_before", "heldout_accuracy_after",
                                             "filter_precision", "filter_recall", "clean_failures_fixed_rate", "wall_seconds") if k in result},
                      **({"naive_retrain": {k: result["baselines"]["naive_retrain"][k] for k in ("regressions", "heldout_accuracy", "within_tau_and_epsilon")}}
                         if "naive_retrain" in result["baselines"] else {})}))
    return 0
