"""``pioneer bench repair-conll``: production repair of an entity tagger that over-predicts.

Scenario (paper §4.4, the CoNLL-2003 case, scaled to a CPU): the deployed tagger was trained on a small
slice of CoNLL-2003 train and shipped at a recall-favouring decision threshold, so it tags too much
(the paper's diagnosis found false positives outnumbering false negatives 6:1). It serves ~3,000 other
train sentences; an exact-match judge against the gold tags marks each trace pass/fail and records the
correction. Production mode diagnoses the span errors, builds the curriculum (gold corrections, a hard
negative per failure, replay), retrains from the base model and gates the result. The CoNLL-2003 test
file, never seen by the deployed model or the repair, measures entity F1 before and after.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from pioneer.bench.coldstart_conll import conll_folder, read_split, tag_sentences, test_scores
from pioneer.bench.common import cpu_seconds, deploy_first_revision, fresh_workdir, repair_summary

TASK = {"description": "Extract person, organisation, location and miscellaneous entity names from news sentences.", "type": "ner"}
HYPERPARAMETERS = {"learningRate": 2e-4, "maxLength": 128, "batchSize": 32}


def deploy_spec(threshold: float, epochs: float) -> dict:
    return {
        "apiVersion": "pioneer.dev/v1alpha1", "kind": "ModelAdaptation", "metadata": {"name": "conll-v1"},
        "spec": {
            "task": TASK,
            "data": {"sources": [{"path": "deployed-train.conll", "format": "conll"}], "evaluation": {"size": 150}},
            "hyperparameters": {**HYPERPARAMETERS, "epochs": epochs, "decisionThreshold": threshold},
            "gate": {"tau": 0.01}, "search": {"maxAttempts": 1, "parallelism": 1, "configurationsPerIteration": 1},
            "artifacts": {"uri": "artifacts"}, "deployedModel": "conll-tagger",
        },
    }


def repair_spec(args: argparse.Namespace) -> dict:
    return {
        "apiVersion": "pioneer.dev/v1alpha1", "kind": "ModelAdaptation", "metadata": {"name": "conll-repair"},
        "spec": {
            "mode": "production", "task": TASK,
            "data": {"sources": [{"traces": "traces.db"}], "curation": {"replayShare": 0.5}},
            "hyperparameters": {**HYPERPARAMETERS, "epochs": args.epochs},
            "gate": {"tau": args.tau, "epsilon": args.epsilon},
            "search": {"maxAttempts": args.max_attempts, "parallelism": 2, "seed": args.seed},
            "artifacts": {"uri": "artifacts"}, "deployedModel": "conll-tagger",
        },
    }


def _conll(sentences: list[tuple[list[str], list[str]]]) -> str:
    return "\n\n".join("\n".join(f"{w} {t}" for w, t in zip(words, tags)) for words, tags in sentences) + "\n"


def run(args: argparse.Namespace) -> int:
    from pioneer.api.validation import parse_resource
    from pioneer.runner.display import Display
    from pioneer.runner.local import LocalRunner
    from pioneer.traces.judges import exact_match
    from pioneer.traces.store import add, connect
    from pioneer.trainer.ner_metrics import error_counts

    folder = conll_folder(args.data_dir, "repair-conll")
    if folder is None:
        return 2
    out = Path(args.out).resolve()
    work = fresh_workdir(args, out)
    started, cpu0 = time.monotonic(), cpu_seconds()
    train, fresh = read_split(folder, "train"), read_split(folder, "test")
    random.Random(args.seed).shuffle(train)
    deployed_train, inferences = train[:args.deployed_sentences], train[args.deployed_sentences:args.deployed_sentences + args.inferences]
    (work / "deployed-train.conll").write_text(_conll(deployed_train))

    display = Display()
    # 1. the deployed tagger: a small cold start shipped at a low threshold, promoted as revision 1
    registry, parent = deploy_first_revision(deploy_spec(args.deployed_threshold, args.deployed_epochs), work, display)
    if parent is None:
        print("repair-conll: the deployed tagger was not promoted", file=sys.stderr)
        return 1

    # 2. production traffic, judged by exact match against the gold tags
    preds, _ = tag_sentences(parent.model_uri, inferences)
    rows = []
    for i, ((words, tags), pred) in enumerate(zip(inferences, preds)):
        gold = " ".join(tags)
        j = exact_match(pred, gold)
        rows.append({"id": f"t{i:05d}", "input": " ".join(words), "prediction": pred, "corrected": gold, "verdict": j.verdict,
                     "judge_reasoning": j.reasoning, "judge_meta": j.meta, "model_id": "conll-tagger@1"})
    add(connect(work / "traces.db"), rows)
    failures_before = sum(r["verdict"] == "fail" for r in rows)
    traffic_errors = error_counts([t for _, t in inferences], [p.split(" ") for p in preds])
    before = test_scores(parent.model_uri, fresh)

    # 3. production mode: diagnose, curriculum, retrain from the base model, gate
    repair = LocalRunner(parse_resource(repair_spec(args)), base_dir=work, on_event=display.event)
    status = repair.run(on_tick=display.tick)
    display.close()
    summary, after = repair_summary(repair, status, registry, "conll-tagger", failures_before, len(rows))
    deployed_after = test_scores(after.model_uri, fresh) if summary["promoted"] else before
    candidate = test_scores(summary["best_model"], fresh) if summary["best_model"] and not summary["promoted"] else deployed_after
    result = {
        "benchmark": "repair-conll", "deployed_train_sentences": len(deployed_train), "deployed_threshold": args.deployed_threshold,
        "traffic_false_positives": traffic_errors["false_positives"], "traffic_false_negatives": traffic_errors["false_negatives"],
        "traffic_fp_fn_ratio": round(traffic_errors["false_positives"] / max(1, traffic_errors["false_negatives"]), 2),
        **summary,
        "heldout_sentences": len(fresh), "entity_f1_before": round(before["score"], 4), "entity_f1_after": round(deployed_after["score"], 4),
        "candidate_entity_f1": round(candidate["score"], 4),
        "heldout_before": before, "heldout_after": deployed_after,
    }
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    result["cpu_seconds"] = round(cpu_seconds() - cpu0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: result[k] for k in ("inferences", "failures_before", "traffic_fp_fn_ratio", "fixable_failures", "failures_fixed",
                                             "fixed_rate", "regression_set_size", "regressions", "cross_checkpoint_regressions",
                                             "promoted", "entity_f1_before", "entity_f1_after", "candidate_entity_f1", "wall_seconds")}))
    return 0
