"""``pioneer bench adaptft``: AdaptFT-Bench, noisy production logs in three stages, agent vs. naive retraining.

Protocol (paper §3 and appendix B.3, DESIGN.md §1):
    1. A benchmark is split into a clean training pool and an inference pool. The clean pool trains
       checkpoint C1 (a cold start, promoted as revision 1 of the agent's DeployedModel); both systems
       start from it.
    2. The inference pool is perturbed into three stages at 15%, 25% and 40% poison (every Table-12 type
       rolled independently per input, see :mod:`pioneer.bench.perturbations`), about 500 inputs each,
       split 70/30 by input. The held-out set is the union of the three test splits, scored against the
       right answer for each perturbed input (out-of-scope for inputs the poison destroyed; conll2003 has no
       out-of-scope tagging, so a destroyed sentence is poison in the logs and is not scored). Scenarios:
       clinc150 (accuracy), sms_spam (spam F1), conll2003 (entity F1 over tagged sentences).
    3. Each stage's train split is served by each system's deployed model and judged by exact match
       against the log's reference (the benchmark label of the original input, as in B.1.3). The agent's
       traces go into one trace store that accumulates over the stages, as a deployment's log does.
       * Agent: production mode (the same LocalRunner as ``pioneer run``) on that stage's judged traces:
         triage, taxonomy, curriculum, at most two train -> evaluate iterations, gate, rollback, on every
         judged log so far (what an earlier stage curated is re-derived, so a rollback loses no data). It never
         reads the ground-truth columns (``meta``) of the traces. Then the protocol's evaluate step
         (appendix B.3): a retrain the gate promoted stays deployed only if it does not score lower than the
         deployed checkpoint on the benchmark's evaluation set (the held-out set); otherwise the
         DeployedModel is rolled back to the previous revision, with both scores as the reason. This is
         what makes the deployed curve monotone "by design" in the paper, and it is model selection on the
         held-out set: the result records every candidate's score next to the deployed one, and
         ``--deploy-check gate`` turns the step off (the production gate alone decides).
       * Naive: the realistic baseline of the paper (§4.3): no filtering; 30% of noisy failures keep the
         model's own wrong output as label; of poisoned examples ~50% get a wrong correction (the logged
         reference), ~20% the right one, the rest the model's output; clean examples their right label.
         One training run per stage, from the base model, on the clean pool plus every stage so far;
         it always deploys.
    4. Every checkpoint C1-C4 of both systems is scored on the same held-out set.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pioneer.bench.common import cpu_seconds, fresh_workdir, predict_outputs, train_as_attempt
from pioneer.bench.perturbations import BY_NAME, NO_ANSWER, TABLE_12, PerturbedSample, perturb, perturb_tagged, rates_for

STAGE_POISON = (0.15, 0.25, 0.40)
NAIVE_UNCORRECTED = 0.30  # noisy failures left with the model's own output
NAIVE_POISON_WRONG, NAIVE_POISON_RIGHT = 0.50, 0.20  # poisoned examples: wrong / right correction (rest: model output)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    labels: list[str]
    out_of_scope: str | None  # the right answer for inputs the poison destroyed; None: such inputs are not scored
    metric: str  # "accuracy", "f1" (of ``positive``) or "entityF1"
    positive: str | None
    load: Callable[[Path, random.Random], tuple[list[tuple[str, str]], list[tuple[str, str]]]]  # clean pool, inference pool
    max_length: int = 48
    task_type: str = "classification"  # or "ner": inputs are space-joined words, labels space-joined BIO tags
    hyperparameters: dict[str, Any] = field(default_factory=lambda: {"learningRate": 2e-4, "epochs": 8, "batchSize": 16})

    def perturb(self, labels: list[str]) -> Callable[[str, str, random.Random, dict[str, float]], list[PerturbedSample]]:
        """The perturbation of one (input, label) pair: tagged sentences keep words and tags aligned."""
        if self.task_type == "ner":
            return lambda text, tags, rng, rates: perturb_tagged(text, tags, labels, rng, rates)
        return lambda text, label, rng, rates: perturb(text, label, labels, rng, rates)

    def predict(self, model_uri: str, texts: list[str]) -> list[str]:
        return predict_outputs(model_uri, texts)

    def trainable(self, text: str, label: str | None, labels: list[str]) -> bool:
        """Can a training pipeline use this pair at all? (a known label; for NER a tagging of the input's words)"""
        if label is None:
            return False
        if self.task_type == "ner":
            from pioneer.data.bio import alignment_problem

            return alignment_problem(text.split(" "), label.split(" "), labels) is None
        return label in labels


def _load_clinc(data_dir: Path, rng: random.Random) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    from pioneer.bench.repair_clinc import INTENTS

    path = data_dir / "clinc150" / "data_full.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; pass --data-dir pointing at the shared datasets folder")
    data = json.loads(path.read_text())
    keep = set(INTENTS)
    pool = [(t, y) for t, y in data["train"] + data["val"] if y in keep]
    oos = [(t, "oos") for t, _ in data["oos_train"] + data["oos_val"]]
    rng.shuffle(pool)
    rng.shuffle(oos)
    clean, rest, seen = [], [], Counter()
    for t, y in pool:
        (clean if seen[y] < CLINC_CLEAN_PER_INTENT else rest).append((t, y))
        seen[y] += 1
    clean += oos[:CLINC_CLEAN_OOS]
    rest += oos[CLINC_CLEAN_OOS:]
    rng.shuffle(rest)
    return clean, rest


def _load_sms(data_dir: Path, rng: random.Random) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    import csv

    path = data_dir / "sms_spam" / "SMSSpamCollection.tsv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; pass --data-dir pointing at the shared datasets folder")
    with path.open(newline="", encoding="utf-8") as fh:
        rows = [(r["SMS"], r["Label"]) for r in csv.DictReader(fh, delimiter="\t")]
    rng.shuffle(rows)
    return rows[:SMS_CLEAN], rows[SMS_CLEAN:]


def _load_conll(data_dir: Path, rng: random.Random) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    from pioneer.bench.coldstart_conll import read_split

    folder = data_dir / "conll2003"
    if not (folder / "train.txt").is_file():
        raise FileNotFoundError(f"{folder / 'train.txt'} not found; pass --data-dir pointing at the shared datasets folder")
    sentences = [(" ".join(w), " ".join(t)) for w, t in read_split(folder, "train") if w]
    rng.shuffle(sentences)
    return sentences[:CONLL_CLEAN], sentences[CONLL_CLEAN:]


CLINC_CLEAN_PER_INTENT, CLINC_CLEAN_OOS, SMS_CLEAN, CONLL_CLEAN = 20, 40, 600, 1000
SCENARIOS: dict[str, Scenario] = {
    "clinc150": Scenario("clinc150", "Route a banking/travel assistant request to its intent, or to oos when it is out of scope.",
                         [], "oos", "accuracy", None, _load_clinc),
    "sms_spam": Scenario("sms_spam", "Flag SMS messages that are spam.", ["ham", "spam"], None, "f1", "spam", _load_sms, 64),
    # a destroyed sentence has no right tagging to score (out_of_scope None): it is only poison in the logs
    "conll2003": Scenario("conll2003", "Extract person, organisation, location and miscellaneous entity names from news sentences.",
                          ["LOC", "MISC", "ORG", "PER"], None, "entityF1", None, _load_conll, 128, "ner",
                          {"learningRate": 2e-4, "epochs": 3, "batchSize": 32}),
}


# ------------------------------------------------------------------------------------------- stage data

def make_stages(inference: list[tuple[str, str]], labels: list[str], out_of_scope: str | None, per_stage: int,
                seed: int, poison: tuple[float, ...] = STAGE_POISON,
                perturb_one: Callable[[str, str, random.Random, dict[str, float]], list[PerturbedSample]] | None = None,
                ) -> list[list[dict[str, Any]]]:
    """Perturbed log records per stage: {id, source, stage, split, text, reference, answer, applied, poisoned}.

    ``perturb_one`` perturbs one (input, label) pair (default: classification, :func:`perturb` over ``labels``)."""
    perturb_one = perturb_one or (lambda text, label, rng, rates: perturb(text, label, labels, rng, rates))
    if len(inference) < per_stage * len(poison):
        raise ValueError(f"inference pool has {len(inference)} inputs; {len(poison)} stages of {per_stage} need more")
    stages = []
    for k, rate in enumerate(poison, start=1):
        rng = random.Random(f"{seed}-stage{k}")
        rates = rates_for(rate)
        sources = inference[(k - 1) * per_stage: k * per_stage]
        test = set(rng.sample(range(len(sources)), round(0.3 * len(sources))))
        rows = []
        for i, (text, label) in enumerate(sources):
            for c, s in enumerate(perturb_one(text, label, rng, rates)):
                answer = out_of_scope if s.answer is NO_ANSWER else s.answer
                rows.append({"id": f"s{k}-{i:04d}-{c}", "source": i, "stage": k, "split": "test" if i in test else "train",
                             "text": s.text, "original": text, "reference": s.reference, "answer": answer,
                             "applied": s.applied, "poisoned": s.poisoned})
        stages.append(rows)
    return stages


def naive_labels(rows: list[dict[str, Any]], predictions: list[str], seed: int) -> list[tuple[str, str] | None]:
    """What a pipeline without curation trains on (paper §4.3, realistic naive retrain); None = row dropped."""
    rng = random.Random(f"{seed}-naive")
    out: list[tuple[str, str] | None] = []
    for row, pred in zip(rows, predictions):
        if row["poisoned"]:
            u = rng.random()
            label = row["reference"] if u < NAIVE_POISON_WRONG else row["answer"] if u < NAIVE_POISON_WRONG + NAIVE_POISON_RIGHT else pred
        elif row["applied"] and pred != row["answer"]:
            label = pred if rng.random() < NAIVE_UNCORRECTED else row["answer"]
        else:
            label = row["answer"]
        out.append((row["text"], label) if label is not None else None)
    return out


# ------------------------------------------------------------------------------------------- scoring

def score(predictions: list[str], answers: list[str], metric: str, positive: str | None) -> float:
    if metric == "entityF1":
        from pioneer.trainer.ner_metrics import ner_metrics

        return float(ner_metrics([a.split(" ") for a in answers], [p.split(" ") for p in predictions])["score"])
    if metric == "f1":
        from sklearn.metrics import f1_score

        return float(f1_score(answers, predictions, pos_label=positive, average="binary", zero_division=0))
    return sum(p == a for p, a in zip(predictions, answers)) / max(1, len(answers))


def heldout_check(candidate: float, deployed: float, candidate_revision: int, deployed_revision: int) -> tuple[bool, str]:
    """The protocol's evaluate step: does a promoted retrain stay deployed? (kept, reason with both scores)"""
    if candidate >= deployed:
        return True, (f"held-out check: revision {candidate_revision} scored {candidate:.4f} >= revision {deployed_revision}'s "
                      f"{deployed:.4f}; kept")
    return False, (f"held-out check: revision {candidate_revision} scored {candidate:.4f} < revision {deployed_revision}'s "
                   f"{deployed:.4f}; rolled back to revision {deployed_revision}")


def filter_quality(rows: list[dict[str, Any]], excluded: set[str], verdicts: dict[str, str]) -> dict[str, Any]:
    """Poison-filter precision and recall of the agent's exclusions against the ground-truth flags, and its false
    positives on clean traffic: clean traces set aside, over all clean traces and over the clean failing ones."""
    poisoned = {r["id"] for r in rows if r["poisoned"]}
    hit = len(poisoned & excluded)
    clean = {r["id"] for r in rows if not r["poisoned"]}
    clean_failing = {i for i in clean if verdicts.get(i) == "fail"}
    return {"excluded": len(excluded), "poisoned": len(poisoned), "true_positives": hit,
            "precision": round(hit / len(excluded), 4) if excluded else None,
            "recall": round(hit / len(poisoned), 4) if poisoned else None,
            "clean_set_aside": len(clean & excluded), "clean": len(clean),
            "clean_failures_set_aside": len(clean_failing & excluded), "clean_failures": len(clean_failing),
            "clean_failures_set_aside_rate": round(len(clean_failing & excluded) / len(clean_failing), 4) if clean_failing else None}


def coverage_table(rows: list[dict[str, Any]], verdicts: dict[str, str], excluded: dict[str, str],
                   failure_set: set[str]) -> list[dict[str, Any]]:
    """Failure coverage like the paper's Table 7: per perturbation type, the failing traces and what the agent did.

    ``excluded``: trace id -> "<action>: <reason>" for every trace whose logged answer the agent did not train on.
    """
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if verdicts.get(r["id"]) == "fail":
            # a fixable type is credited only where no poison co-occurs (the poison decides what happens to the trace)
            for name in [n for n in r["applied"] if not r["poisoned"] or not BY_NAME[n].fixable] or ["(none: clean input)"]:
                by_type[name].append(r)
    fixable = {p.name: p.fixable for p in TABLE_12}
    out = []
    for name, members in sorted(by_type.items(), key=lambda kv: -len(kv[1])):
        actions = Counter(excluded[m["id"]] if m["id"] in excluded
                          else "trained on (gold correction)" if m["id"] in failure_set else "not used" for m in members)
        out.append({"perturbation": name, "failures": len(members), "fixable": fixable.get(name, True),
                    "action": actions.most_common(1)[0][0], "actions": dict(actions)})
    return out


# ------------------------------------------------------------------------------------------- the run

def _spec(name: str, scenario: Scenario, labels: list[str], mode: str, source: dict[str, str], **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "mode": mode,
        "task": {"description": scenario.description, "type": scenario.task_type, "metric": scenario.metric, "labels": labels,
                 **({"positiveLabel": scenario.positive} if scenario.positive else {}),
                 **({"outOfScopeLabel": scenario.out_of_scope} if scenario.out_of_scope else {})},
        "data": {"sources": [source]},
        "hyperparameters": {**scenario.hyperparameters, "maxLength": scenario.max_length},
        "artifacts": {"uri": "artifacts"}, "deployedModel": "adaptft-agent",
    }
    for key, value in extra.items():  # each a section of the spec, merged into the defaults above
        spec.setdefault(key, {}).update(value)
    return {"apiVersion": "pioneer.dev/v1alpha1", "kind": "ModelAdaptation", "metadata": {"name": name}, "spec": spec}


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _train_naive(work: Path, k: int, labels: list[str], c1_attempt: Path, rows: list[tuple[str, str]],
                 eval_rows: list[tuple[str, str]]) -> str:
    """One plain training run with the trainer program and C1's exact pipeline; returns the model location."""
    from pioneer.api.models import TrainingAttemptSpec

    c1 = TrainingAttemptSpec.model_validate(json.loads(c1_attempt.read_text())).model_copy(update={"labels": labels})
    folder = work / "naive" / f"stage{k}"
    train_as_attempt(c1, folder, [{"text": t, "label": y} for t, y in rows], [{"text": t, "label": y} for t, y in eval_rows],
                     f"naive retrain after stage {k}", "train once on everything logged so far, no filtering")
    return str(folder / "attempt" / "output" / "model")


def run(args: argparse.Namespace) -> int:
    from pioneer import deploy
    from pioneer.api.validation import parse_resource
    from pioneer.engine import now
    from pioneer.layout import EXCLUDED_KEY, FAILURES_KEY
    from pioneer.runner.display import Display
    from pioneer.runner.local import LocalRunner
    from pioneer.store import LocalStore, read_jsonl
    from pioneer.traces.judges import exact_match
    from pioneer.traces.store import add, connect

    scenario = SCENARIOS.get(args.scenario)
    if scenario is None:
        print(f"adaptft: unknown scenario {args.scenario!r}; known: {sorted(SCENARIOS)}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    work = fresh_workdir(args, out)
    started, cpu0 = time.monotonic(), cpu_seconds()
    rng = random.Random(args.seed)
    try:
        clean, inference = scenario.load(Path(args.data_dir), rng)
    except FileNotFoundError as exc:
        print(f"adaptft: {exc}", file=sys.stderr)
        return 2
    labels = scenario.labels or sorted({y for _, y in clean})
    stages = make_stages(inference, labels, scenario.out_of_scope, args.per_stage, args.seed, perturb_one=scenario.perturb(labels))
    heldout = [r for rows in stages for r in rows if r["split"] == "test" and r["answer"] is not None]
    _write_jsonl(work / "clean.jsonl", [{"text": t, "label": y} for t, y in clean])
    for k, rows in enumerate(stages, start=1):
        _write_jsonl(work / f"stage{k}.jsonl", rows)
    display = Display()
    log = lambda msg: print(f"[adaptft {time.monotonic() - started:7.0f}s] {msg}", flush=True)  # noqa: E731

    # C1: the clean checkpoint, promoted as revision 1 of the agent's DeployedModel; naive starts from it too
    log(f"C1: cold start on the clean pool ({len(clean)} examples, {len(labels)} labels)")
    c1 = LocalRunner(parse_resource(_spec("adaptft-c1", scenario, labels, "coldStart", {"path": "clean.jsonl"},
                                          data={"evaluation": {"size": 60, "boundaryShare": 0.3}},
                                          gate={"tau": 0.01}, search={"maxAttempts": 1, "parallelism": 1, "configurationsPerIteration": 1,
                                                                      "seed": args.seed})), base_dir=work, on_event=display.event)
    c1.run(on_tick=display.tick)
    display.close()
    registry = LocalStore(work / "artifacts")
    agent_model = deploy.load(registry, "adaptft-agent").model_uri
    if not agent_model:
        print("adaptft: C1 was not promoted", file=sys.stderr)
        return 1
    c1_attempt = next(Path(work / "artifacts").glob("adaptft-c1/attempts/*-i1-*/attempt.json"))
    agent_ckpts, naive_ckpts, candidates = [agent_model], [agent_model], [None]
    texts_heldout, answers = [r["text"] for r in heldout], [r["answer"] for r in heldout]
    cache: dict[str, float] = {}

    def held(uri: str) -> float:
        if uri not in cache:
            cache[uri] = round(score(scenario.predict(uri, texts_heldout), answers, scenario.metric, scenario.positive), 4)
        return cache[uri]

    naive_model, naive_data = agent_model, [(t, y) for t, y in clean]
    stage_results = []
    all_train: list[dict[str, Any]] = []
    verdicts: dict[str, str] = {}
    excluded: dict[str, str] = {}
    failure_set: set[str] = set()
    db = connect(work / "traces.db")  # one log for the whole deployment: each stage's traces are added to it

    for k, rows in enumerate(stages, start=1):
        train = [r for r in rows if r["split"] == "train"]
        all_train += train
        texts = [r["text"] for r in train]
        # the agent's deployed model serves the stage; an exact-match judge against the log's reference
        preds = scenario.predict(agent_model, texts)
        traces = []
        for r, p in zip(train, preds):
            j = exact_match(p, r["reference"])
            verdicts[r["id"]] = j.verdict
            traces.append({"id": r["id"], "input": r["text"], "prediction": p, "corrected": r["reference"], "verdict": j.verdict,
                           "judge_reasoning": j.reasoning, "judge_meta": j.meta, "model_id": f"adaptft-agent@stage{k}",
                           # ground truth for the benchmark's own scoring; production mode never reads ``meta``
                           "meta": {"applied": r["applied"], "poisoned": r["poisoned"], "answer": r["answer"]}})
        add(db, traces)
        failing = sum(t["verdict"] == "fail" for t in traces)
        log(f"stage {k} ({STAGE_POISON[k - 1]:.0%} poison): {len(train)} train logs ({failing} failing), "
            f"{sum(r['split'] == 'test' for r in rows)} test logs; agent production mode")
        name = f"adaptft-stage{k}"
        runner = LocalRunner(parse_resource(_spec(
            name, scenario, labels, "production", {"traces": "traces.db"},
            data={"curation": {"replayShare": args.replay_share}}, gate={"tau": args.tau, "epsilon": args.epsilon},
            search={"maxAttempts": 2, "parallelism": 1, "configurationsPerIteration": 1, "seed": args.seed})),
            base_dir=work, on_event=display.event)
        status = runner.run(on_tick=display.tick)
        display.close()
        stage_store = runner.store
        # the stage's triage covers every log so far; its decisions replace the earlier ones
        excluded = {r["id"]: f"{r.get('action', 'excluded')}: {r['reason']}" for r in read_jsonl(stage_store, EXCLUDED_KEY)}
        stage_excluded = {i for i in excluded if i.startswith(f"s{k}-")}
        failure_set |= {r["meta"]["trace"] for r in read_jsonl(stage_store, FAILURES_KEY)}
        dm = deploy.load(registry, "adaptft-agent")
        promoted = dm.model_uri != agent_model
        gate_reason = dm.last_verdict.reason if dm.last_verdict else None
        check = None
        if promoted and args.deploy_check == "heldout":
            before = next(r.revision for r in dm.revisions if r.model_uri == agent_model)
            kept, check = heldout_check(held(dm.model_uri), held(agent_model), dm.current_revision, before)
            log(check)
            if not kept:
                dm = deploy.rollback(registry, "adaptft-agent", before, now(), reason=check)
        candidates.append(dm.revisions[-1].model_uri if promoted else None)
        agent_model = dm.model_uri
        agent_ckpts.append(agent_model)

        # naive: labels as a review-less pipeline would give them, one training run, always deployed
        naive_preds = scenario.predict(naive_model, texts)
        # what its trainer can load: a known label (NER: a tagging of the input's words; a log whose tags belong to another input is dropped)
        naive_data += [x for x in naive_labels(train, naive_preds, args.seed + k) if x is not None and scenario.trainable(*x, labels)]
        eval_rows = [(r["text"], r["reference"]) for r in rows if r["split"] == "test" and scenario.trainable(r["text"], r["reference"], labels)]
        log(f"stage {k}: naive retrain on {len(naive_data)} examples")
        naive_model = _train_naive(work, k, labels, c1_attempt, naive_data, eval_rows)
        naive_ckpts.append(naive_model)
        stage_results.append({"stage": k, "poison_rate": STAGE_POISON[k - 1], "train_logs": len(train), "failing": failing,
                              "agent_promoted": promoted, "agent_gate": gate_reason, "agent_heldout_check": check,
                              "agent_deployed": agent_model != agent_ckpts[-2],
                              "agent_attempts": status.attempts.total, "report": status.report_uri,
                              "poison_filter": filter_quality(train, stage_excluded, verdicts)})

    log(f"scoring {len(agent_ckpts)} checkpoints of each system on the held-out set ({len(heldout)} logs)")
    checkpoints = []
    for i, (a, n, c) in enumerate(zip(agent_ckpts, naive_ckpts, candidates), start=1):
        checkpoints.append({"checkpoint": f"C{i}", "poison_rate": 0.0 if i == 1 else STAGE_POISON[i - 2],
                            "agent": held(a), "agent_candidate": held(c) if c else None, "naive": held(n)})
    agent_scores = [c["agent"] for c in checkpoints]
    result = {
        "benchmark": "adaptft", "scenario": scenario.name, "metric": scenario.metric, "labels": len(labels),
        "deploy_check": args.deploy_check, "gate": {"tau": args.tau, "epsilon": args.epsilon}, "replay_share": args.replay_share,
        "clean_pool": len(clean), "per_stage": args.per_stage, "heldout_size": len(heldout),
        "checkpoints": checkpoints,
        "final_gap": round(100 * (checkpoints[-1]["agent"] - checkpoints[-1]["naive"]), 2),
        "agent_monotone": all(b >= a for a, b in zip(agent_scores, agent_scores[1:])),
        "naive_final_below_c1": checkpoints[-1]["naive"] < checkpoints[0]["naive"],
        "poison_filter": filter_quality(all_train, set(excluded), verdicts),
        "stages": stage_results,
        "failure_coverage": coverage_table(all_train, verdicts, excluded, failure_set),
    }
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    result["cpu_seconds"] = round(cpu_seconds() - cpu0, 1)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    report = write_report(result, out.with_suffix(".md"))
    print(json.dumps({"checkpoints": checkpoints, "final_gap": result["final_gap"], "agent_monotone": result["agent_monotone"],
                      "naive_final_below_c1": result["naive_final_below_c1"], "poison_filter": result["poison_filter"],
                      "wall_seconds": result["wall_seconds"], "report": str(report)}))
    return 0


def plot_trajectory(checkpoints: list[dict[str, Any]], title: str, metric: str) -> bytes:
    """Stage trajectories, agent vs. naive (the paper's Figure 7)."""
    from pioneer.report import _png, plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    xs = [c["checkpoint"] for c in checkpoints]
    ax.plot(xs, [c["agent"] for c in checkpoints], "o-", color="#2a9d55", label="Pioneer agent (deployed)")
    ax.plot(xs, [c["naive"] for c in checkpoints], "s--", color="#d1495b", label="naive retraining")
    rejected = [(x, c["agent_candidate"]) for x, c in zip(xs, checkpoints) if c.get("agent_candidate") not in (None, c["agent"])]
    if rejected:
        ax.plot(*zip(*rejected), "o", mfc="none", color="#2a9d55", label="agent retrain rolled back")
    for i, c in enumerate(checkpoints[1:], start=1):
        ax.annotate(f"{c['poison_rate']:.0%} poison", (i, min(c["agent"], c["naive"])), textcoords="offset points",
                    xytext=(0, -14), ha="center", fontsize=8, color="#555")
    ax.set_ylabel(f"held-out {metric}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _png(fig)


def write_report(result: dict[str, Any], path: Path) -> Path:
    """Markdown report next to the JSON, with the trajectory plot as a PNG."""
    from pioneer.report import _table

    png = path.with_suffix(".png")
    png.write_bytes(plot_trajectory(result["checkpoints"], f"AdaptFT-Bench {result['scenario']}", result["metric"]))
    pf = result["poison_filter"]
    md = [f"# AdaptFT-Bench: {result['scenario']}", "",
          f"Held-out set: {result['heldout_size']} logs (union of the stage test splits). Final gap agent - naive: "
          f"**{result['final_gap']:+.1f} points**. Agent curve monotone: {result['agent_monotone']}. "
          f"Naive final below its C1: {result['naive_final_below_c1']}.", "", f"![trajectory]({png.name})", "",
          _table(["checkpoint", "stage poison", "agent (deployed)", "agent's gate-promoted retrain", "naive"],
                 [[c["checkpoint"], f"{c['poison_rate']:.0%}", c["agent"], "" if c.get("agent_candidate") is None else c["agent_candidate"],
                   c["naive"]] for c in result["checkpoints"]]), "",
          f"Deploy check: `{result.get('deploy_check', 'gate')}`. "
          + ("A retrain the production gate promoted stays deployed only if it scores at least the deployed checkpoint on this "
             "held-out set (the protocol's evaluate step, appendix B.3); that is model selection on the held-out set, so the "
             "retrain's own score is listed next to the deployed one." if result.get("deploy_check") == "heldout"
             else "The production gate alone decides what is deployed; nothing is selected on the held-out set."), "",
          "## Poison filter", "",
          f"Precision {pf['precision']}, recall {pf['recall']} ({pf['true_positives']} of {pf['excluded']} excluded traces were poisoned; "
          f"{pf['poisoned']} poisoned traces in the stage train splits).", "",
          _table(["stage", "poison", "failing", "gate promoted", "gate", "held-out check", "filter P", "filter R",
                  "clean failures set aside"],
                 [[s["stage"], f"{s['poison_rate']:.0%}", s["failing"], s["agent_promoted"], s["agent_gate"], s.get("agent_heldout_check") or "",
                   s["poison_filter"]["precision"], s["poison_filter"]["recall"],
                   f"{s['poison_filter'].get('clean_failures_set_aside', '')} of {s['poison_filter'].get('clean_failures', '')}"]
                  for s in result["stages"]]), "",
          "## Failure coverage (paper Table 7)", "",
          _table(["perturbation", "failures", "fixable", "action taken", "all actions"],
                 [[c["perturbation"], c["failures"], "yes" if c["fixable"] else "no", c["action"],
                   "; ".join(f"{k}: {v}" for k, v in c["actions"].items())] for c in result["failure_coverage"]]), ""]
    path.write_text("\n".join(md))
    return path
