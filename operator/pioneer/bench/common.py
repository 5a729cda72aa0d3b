"""Pieces every benchmark uses: a fresh working folder, CPU time, predictions of a trained model."""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def fresh_workdir(args: argparse.Namespace, out: Path) -> Path:
    """``--workdir`` or a folder next to ``--out``, emptied: a benchmark never resumes a half run."""
    work = Path(args.workdir).resolve() if args.workdir else out.parent / (out.stem + "-work")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    return work


def predict_outputs(model_uri: str, texts: list[str]) -> list[str]:
    """A trained model's answers (labels, or space-joined BIO tags of space-joined sentences), with the preprocessing
    and decision threshold it was trained with (:mod:`pioneer.inference`)."""
    from pioneer import inference

    return [a.output for a in inference.load(model_uri).predict(texts)]


def run_adaptation(spec_text: str, work: Path):
    """Validate a benchmark's spec, keep it beside the artifacts, run it on the embedded default with
    the live display; return (runner, final status, the untrained baseline attempt, the best attempt)."""
    import yaml

    from pioneer.api.models import ModelAdaptation
    from pioneer.runner.display import Display
    from pioneer.runner.local import LocalRunner

    (work / "spec.yaml").write_text(spec_text)
    display = Display()
    runner = LocalRunner(ModelAdaptation.model_validate(yaml.safe_load(spec_text)), base_dir=work, on_event=display.event)
    status = runner.run(on_tick=display.tick)
    display.close()
    baseline = next(a for a in runner.attempts.values() if a.spec.iteration == 0)
    return runner, status, baseline, runner.attempts.get(status.best_attempt or "")


def search_summary(runner, status) -> dict:
    """What every cold-start benchmark reports about the search itself."""
    return {
        "best_attempt": status.best_attempt, "best_eval_score": status.best_score, "attempts": status.attempts.total,
        "iterations": status.iteration, "outcome": (runner.state().get("completion") or {}).get("reason"),
        "per_attempt_eval": {a.metadata.name: a.status.score for a in runner.attempts.values() if a.status},
        "report": status.report_uri,
    }


def repair_summary(repair, status, registry, deployed_model: str, failures_before: int, inferences: int) -> tuple[dict, object]:
    """What every production-repair benchmark reports: the diagnosis, the gate's sets and verdict, the fix rate.

    Returns (summary, the DeployedModel after the repair)."""
    from pioneer import deploy
    from pioneer.store import read_json

    after = deploy.load(registry, deployed_model)
    promoted = after.current_revision == 2
    chosen = after.revisions[-1].attempt if promoted else status.best_attempt
    best = repair.attempts.get(chosen or "")
    metrics = read_json(repair.store, f"attempts/{best.metadata.name}/output/metrics.json") if best else {}
    prep = repair.prepared.record
    eval_n = metrics.get("n", 0)
    fixed = round(metrics.get("exact_sentences", metrics.get("accuracy", 0)) * eval_n)
    summary = {
        "inferences": inferences, "failures_before": failures_before, "pass_rate_before": round(1 - failures_before / inferences, 4),
        "fixable_failures": prep["fixable"], "external_failures": prep["external"],
        "failures_fixed": fixed, "fixed_rate": round(fixed / eval_n, 4) if eval_n else None,
        "fixed_rate_of_all_failures": round(fixed / failures_before, 4) if failures_before else None,
        "failure_set_score": metrics.get("score"),
        "regression_set_size": prep["regression_set"], "regressions": metrics.get("regressions"),
        "cross_checkpoint_set_size": prep["cross_checkpoint_set"],
        "cross_checkpoint_regressions": metrics.get("cross_checkpoint_regressions"),
        "promoted": promoted, "revision": after.current_revision,
        "gate": after.last_verdict.model_dump() if after.last_verdict else None,
        "best_attempt": chosen, "best_model": best.status.model_uri if best and best.status else None,
        "attempts": status.attempts.total, "taxonomy_top": prep["taxonomy"][:10], "report": status.report_uri,
    }
    return summary, after


def deploy_first_revision(doc: dict, work: Path, display):
    """Run a cold-start spec that promotes to a DeployedModel; return (registry, the DeployedModel), or
    (registry, None) when revision 1 was not promoted."""
    from pioneer import deploy
    from pioneer.api.validation import parse_resource
    from pioneer.runner.local import LocalRunner
    from pioneer.store import LocalStore

    resource = parse_resource(doc)
    LocalRunner(resource, base_dir=work, on_event=display.event).run(on_tick=display.tick)
    display.close()
    registry = LocalStore(work / "artifacts")
    deployed = deploy.load(registry, resource.spec.deployed_model)
    return registry, deployed if deployed.current_revision == 1 else None


def train_as_attempt(template, folder: Path, train_rows: list[dict], eval_rows: list[dict], modification: str, rationale: str,
                     regression_uri: str | None = None, cross_checkpoint_uri: str | None = None) -> dict:
    """One plain run of the trainer program with ``template``'s pipeline (a TrainingAttemptSpec of the benchmark's
    own adaptation), on ``train_rows`` (``{"text", "label"}``), scored on ``eval_rows`` and, when given, the gate's
    regression sets; no curation, no search, no gate. Returns its metrics.json; the model is in
    ``folder/attempt/output/model``."""
    from pioneer.api.models import AttemptInputs
    from pioneer.data.evalset import serialize, sha256
    from pioneer.data.examples import Example

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": r["text"], "label": r["label"]}, ensure_ascii=False) + "\n"
                                                for r in train_rows))
    eval_bytes = serialize([Example(r["text"], r["label"], role="log") for r in eval_rows])
    (folder / "eval.jsonl").write_bytes(eval_bytes)
    spec = template.model_copy(update={
        "adaptation": f"{template.adaptation}-{folder.name}", "iteration": 1, "parent": None, "modification": modification,
        "rationale": rationale, "evidence": {},
        "inputs": AttemptInputs(train_uri=str(folder / "train.jsonl"), eval_uri=str(folder / "eval.jsonl"), eval_sha256=sha256(eval_bytes),
                                regression_uri=regression_uri, cross_checkpoint_uri=cross_checkpoint_uri),
        "output_uri": str(folder / "attempt")})
    (folder / "attempt.json").write_text(json.dumps(spec.dump(), indent=2))
    run_trainer(str(folder / "attempt.json"), max(1, os.cpu_count() or 1), folder / "trainer.log", modification)
    return json.loads((folder / "attempt" / "output" / "metrics.json").read_text())


def run_trainer(attempt_json: str, threads: int, log: Path, what: str) -> None:
    """``python -m pioneer.trainer`` on an attempt spec in the environment the local runner gives a trainer (its
    threads), output to ``log``; raises naming ``what`` when it fails."""
    env = {**os.environ, "PIONEER_THREADS": str(threads), "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
           "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as fh:
        proc = subprocess.run([sys.executable, "-m", "pioneer.trainer", attempt_json], check=False, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{what}: the trainer failed; see {log}")
