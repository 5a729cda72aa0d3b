"""The trainer program: ``python -m pioneer.trainer ATTEMPT_URI``.

Reads the attempt spec (a TrainingAttempt's spec as JSON) from a local path or S3, trains, evaluates
on the frozen evaluation set, and writes into the attempt folder named by the spec's outputUri::

    progress.json              while running
    output/model/              Hugging Face format (from_pretrained)
    output/metrics.json        score, per-label scores, confusion matrix, regressions
    output/predictions.jsonl   one line per evaluation example
    output/_SUCCESS            written last: only then is the output valid
    failure.json               instead of output/, when the attempt fails (message and error type)

Runs the same as a Kubernetes Job and as a local process. Exit code 0 on success, 1 on a failed
attempt (bad data, tampered evaluation set, training error), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from pioneer import inference
from pioneer.api.models import TrainingAttemptSpec
from pioneer.data.evalset import EvalSetTampered, verify
from pioneer.data.examples import DataError
from pioneer.data.sources import read_rows
from pioneer.revisions import ModelTampered, output_manifest
from pioneer.runner import ownership
from pioneer.store import ArtifactStore, open_store, split_uri, write_json

OUTPUT = "output"
SUCCESS = "_SUCCESS"  # written last; holds the sha256 of every output file (pioneer.revisions.output_manifest)
FAILURE = "failure.json"
PROGRESS = "progress.json"


class AttemptFailed(RuntimeError):
    pass


TASK_MODULES = {("classification", "transformers"): "pioneer.trainer.classification", ("ner", "transformers"): "pioneer.trainer.ner",
                ("generation", "transformers"): "pioneer.trainer.generation",
                ("classification", "gliner2"): "pioneer.trainer.gliner2_classification", ("ner", "gliner2"): "pioneer.trainer.gliner2_ner"}


def task_module(task_type: str, backend: str = "transformers"):
    """The module that trains and scores a task family with a backend.

    Each has the same functions: validate_row, train_attempt, evaluate_attempt, predict_rows, agrees, save.
    """
    import importlib

    if (task_type, backend) not in TASK_MODULES:
        raise AttemptFailed(f"backend {backend} does not train {task_type} tasks")
    return importlib.import_module(TASK_MODULES[(task_type, backend)])


def _rows(data: bytes, where: str, labels: list[str], check) -> list[dict[str, Any]]:
    rows = []
    for n, row in read_rows(where, data, "jsonl"):
        if not isinstance(row.get("text"), str) or not isinstance(row.get("label"), str):
            raise DataError(f"{where}:{n}: expected an object with 'text' and 'label' strings")
        problem = check(row, labels)
        if problem:
            raise DataError(f"{where}:{n}: {problem}")
        rows.append(row)
    if not rows:
        raise DataError(f"{where}: no examples")
    return rows


def _read(uri: str) -> bytes:
    store, key = split_uri(uri)
    try:
        return store.read_bytes(key)
    except FileNotFoundError:
        raise DataError(f"{uri}: not found") from None


def run_attempt(spec: TrainingAttemptSpec, store: ArtifactStore, workdir: Path) -> dict[str, Any]:
    """Train and evaluate one attempt; write its artifacts to ``store`` (rooted at the attempt's folder)."""
    backend = task_module(spec.task.type, spec.pipeline.hyperparameters.backend)

    def progress(state: dict[str, Any]) -> None:
        write_json(store, PROGRESS, {**state, "time": time.time()})

    def rows_of(uri: str | None) -> list[dict[str, Any]]:
        return _rows(_read(uri), uri, spec.labels, backend.validate_row) if uri else []

    progress({"phase": "loading"})
    if spec.inputs.base_model_sha256:  # a deployed parent: load exactly the promoted bytes
        from pioneer.revisions import verify_model_dir
        from pioneer.trainer.base_models import resolve

        verify_model_dir(resolve(spec.pipeline.hyperparameters.base_model), spec.inputs.base_model_sha256, "base model")
    eval_bytes = _read(spec.inputs.eval_uri)
    verify(eval_bytes, spec.inputs.eval_sha256, f"evaluation set {spec.inputs.eval_uri}")
    eval_rows = _rows(eval_bytes, spec.inputs.eval_uri, spec.labels, backend.validate_row)
    train_rows = rows_of(spec.inputs.train_uri)
    regression_rows = rows_of(spec.inputs.regression_uri)
    cross_rows = rows_of(spec.inputs.cross_checkpoint_uri)

    if spec.pipeline.strategy.preserving() and not hasattr(backend, "profile_regressions"):
        raise AttemptFailed(f"strategy {spec.pipeline.strategy.preserving()} is implemented for classification repairs with the "
                            f"transformers backend only, not {spec.task.type} with {spec.pipeline.hyperparameters.backend}")
    trained, facts = backend.train_attempt(train_rows, spec, workdir, on_progress=progress, eval_rows=eval_rows)
    progress({"phase": "evaluating"})
    # verify again right before scoring: the set must be the frozen one at evaluation time
    verify(_read(spec.inputs.eval_uri), spec.inputs.eval_sha256, f"evaluation set {spec.inputs.eval_uri}")
    metrics, predictions = backend.evaluate_attempt(trained, eval_rows, spec)
    metrics.update(attempt=spec.model_dump(by_alias=True, include={"adaptation", "iteration", "parent"}),
                   eval_sha256=spec.inputs.eval_sha256, training=facts)
    for rows, count_key, list_key in ((regression_rows, "regressions", "regressed_examples"),
                                      (cross_rows, "cross_checkpoint_regressions", "cross_checkpoint_regressed_examples")):
        if not rows:
            continue
        got = backend.predict_rows(trained, rows, spec)
        regressed = [{"id": r.get("id"), "text": r["text"], "label": r["label"], "prediction": p}
                     for r, p in zip(rows, got) if not backend.agrees(p, r["label"], spec)]
        metrics[count_key], metrics[list_key] = len(regressed), regressed
        if count_key == "regressions" and regressed and spec.inputs.parent_model_uri and hasattr(backend, "profile_regressions"):
            metrics["regression_profile"] = backend.profile_regressions(trained, spec, regressed, rows, eval_rows)

    out = workdir / OUTPUT
    out.mkdir()
    backend.save(trained, out / "model")
    # the preprocessing the model was trained and scored with travels with it: serving reads it, never a default
    inference.write(out / "model", inference.Preprocessing(task_type=spec.task.type, labels=list(spec.labels),
                                                           max_length=spec.pipeline.hyperparameters.max_length,
                                                           backend=spec.pipeline.hyperparameters.backend))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    with open(out / "predictions.jsonl", "w") as fh:
        for row in predictions:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    progress({"phase": "uploading"})
    manifest = output_manifest(out)  # _SUCCESS lists every file's sha256: a truncated or edited output is detected
    store.upload_dir(out, OUTPUT)
    store.write_bytes(f"{OUTPUT}/{SUCCESS}", json.dumps(manifest, indent=1).encode())
    progress({"phase": "done", "score": metrics["score"]})
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pioneer-trainer", description=__doc__.split("\n\n")[0])
    parser.add_argument("attempt_uri", help="attempt.json (or a preparation request): local path or s3://bucket/key")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("PIONEER_THREADS", "0")),
                        help="CPU threads for torch (0 = torch's default)")
    args = parser.parse_args(argv)
    # progress goes to progress.json; tqdm reads this when it is first imported (gliner2's trainer draws bars with it)
    os.environ.setdefault("TQDM_DISABLE", "1")
    ownership.die_with_parent()  # a trainer never outlives the local runner that started it
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    # the log says how the trainer shares the CPU: a slow training beside another one is told apart here
    print(f"pioneer-trainer: CPU threads {args.threads or 'torch default'}, idle OpenMP threads "
          f"{os.environ.get('OMP_WAIT_POLICY', 'ACTIVE (OpenMP default)')}", flush=True)

    store, spec_key = split_uri(args.attempt_uri)
    from pioneer import preparation

    try:
        raw = store.read_bytes(spec_key)
    except Exception as exc:
        print(f"pioneer-trainer: cannot read {args.attempt_uri}: {exc}", file=sys.stderr)
        return 2
    if preparation.is_request(raw):  # a preparation Job: the same image, the same entry point
        return preparation.run(raw)
    try:
        spec = TrainingAttemptSpec.model_validate_json(raw)
    except Exception as exc:
        print(f"pioneer-trainer: cannot read attempt spec {args.attempt_uri}: {exc}", file=sys.stderr)
        return 2
    lock_path = os.environ.get(ownership.LOCK_ENV)
    lock = ownership.hold(lock_path) if lock_path else None
    if lock_path and lock is None:
        print(f"pioneer-trainer: another trainer (pid {ownership.holder(lock_path)}) owns {spec.output_uri}; not starting a second one",
              file=sys.stderr)
        return ownership.LOCKED_EXIT
    # the attempt's folder holds the spec; everything the trainer writes goes beside it
    attempt_store = open_store(spec.output_uri)
    attempt_store.delete_prefix(OUTPUT)  # a rerun after a crash starts clean
    attempt_store.delete_prefix(FAILURE)
    workdir = Path(tempfile.mkdtemp(prefix="pioneer-attempt-"))
    try:
        metrics = run_attempt(spec, attempt_store, workdir)
        print(f"pioneer-trainer: {spec.adaptation} iteration {spec.iteration}: {spec.task.metric} = {metrics['score']:.4f}")
        return 0
    except (DataError, EvalSetTampered, ModelTampered, AttemptFailed, ValueError, RuntimeError, OSError) as exc:
        kind = type(exc).__name__
        print(f"pioneer-trainer: attempt failed: {kind}: {exc}", file=sys.stderr)
        attempt_store.delete_prefix(OUTPUT)
        write_json(attempt_store, FAILURE, {"error": kind, "message": str(exc), "traceback": traceback.format_exc()[-4000:]})
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
