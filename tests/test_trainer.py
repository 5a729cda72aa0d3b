"""The trainer is a separate program: attempt spec in; model, metrics and predictions out (or a clear failure)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import tiny_adaptation
from pioneer.api.models import AttemptInputs, TrainingAttemptSpec
from pioneer.api.validation import parse_resource
from pioneer.core.controller import baseline_pipeline
from pioneer.core.planner import initial_pipeline
from pioneer.data.evalset import serialize, sha256
from pioneer.data.examples import Example

pytestmark = pytest.mark.slow

LABELS = ["on", "off"]
TRAIN = [Example(f"please turn on the {x}", "on") for x in ("lamp", "tv", "fan", "heater", "radio", "light", "porch light", "oven")] + \
        [Example(f"please turn off the {x}", "off") for x in ("lamp", "tv", "fan", "heater", "radio", "light", "porch light", "oven")]
EVAL = [Example("switch on the kettle", "on", role="positive"), Example("switch off the kettle", "off", role="boundary"),
        Example("turn on the ceiling fan", "on", role="boundary"), Example("turn off the ceiling fan", "off", role="positive")]


def attempt(tmp_path: Path, *, epochs: float = 2, method: str = "full", train_bytes: bytes | None = None,
            eval_bytes: bytes | None = None, regression: list[Example] | None = None, base_model_sha256: str | None = None) -> Path:
    spec = parse_resource(tiny_adaptation(task={"labels": LABELS})).spec
    pipe = initial_pipeline(spec) if epochs else baseline_pipeline(spec)
    pipe = pipe.model_copy(update={"hyperparameters": pipe.hyperparameters.model_copy(
        update={"epochs": epochs, "method": method, "learning_rate": 3e-4 if method == "full" else 2e-3, "batch_size": 8})})
    frozen = serialize(EVAL)
    (tmp_path / "eval.jsonl").write_bytes(eval_bytes if eval_bytes is not None else frozen)
    (tmp_path / "train.jsonl").write_bytes(train_bytes if train_bytes is not None else serialize(TRAIN))
    reg_uri = None
    if regression:
        (tmp_path / "regression.jsonl").write_bytes(serialize(regression))
        reg_uri = str(tmp_path / "regression.jsonl")
    folder = tmp_path / "attempt"
    folder.mkdir()
    ts = TrainingAttemptSpec(adaptation="t", iteration=1, modification="test", rationale="test", task=spec.task, labels=LABELS,
                             pipeline=pipe, inputs=AttemptInputs(train_uri=str(tmp_path / "train.jsonl"),
                                                                 eval_uri=str(tmp_path / "eval.jsonl"), eval_sha256=sha256(frozen),
                                                                 regression_uri=reg_uri, base_model_sha256=base_model_sha256),
                             output_uri=str(folder))
    (folder / "attempt.json").write_text(json.dumps(ts.dump()))
    return folder


def run_trainer(python: str, folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", "pioneer.trainer", str(folder / "attempt.json"), "--threads", "1"], check=False,
                          capture_output=True, text=True, timeout=300)


def test_idle_openmp_threads_sleep_unless_the_user_chose_otherwise(tmp_path, python):
    """Trainers that share cores (parallel attempts, two runs on one machine, a throttled pod) must not spin on them:
    the program sets OMP_WAIT_POLICY=PASSIVE before torch loads OpenMP, a value in the environment wins, the log says which."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    absent = str(tmp_path / "absent.json")  # the program says how it shares the CPU before it reads the spec
    default = subprocess.run([python, "-m", "pioneer.trainer", absent, "--threads", "1"], check=False, env=env, capture_output=True, text=True, timeout=120)
    chosen = subprocess.run([python, "-m", "pioneer.trainer", absent, "--threads", "1"], check=False,
                            env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                            capture_output=True, text=True, timeout=120)
    assert default.returncode == chosen.returncode == 2, default.stderr[-2000:]
    assert "CPU threads 1, idle OpenMP threads PASSIVE" in default.stdout
    assert "idle OpenMP threads ACTIVE" in chosen.stdout and "PASSIVE" not in chosen.stdout


def test_trains_and_writes_a_loadable_model_metrics_and_predictions(tmp_path, python):
    folder = attempt(tmp_path, regression=[Example("please turn on the lamp", "on")])
    proc = run_trainer(python, folder)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = folder / "output"
    assert (out / "_SUCCESS").exists() and not (folder / "failure.json").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["score"] <= 1.0
    assert set(metrics["per_label"]) == set(LABELS)
    assert metrics["confusion_matrix"]["labels"] == LABELS
    assert sum(map(sum, metrics["confusion_matrix"]["matrix"])) == len(EVAL)
    assert set(metrics["slice_scores"]) == {"positive", "boundary"}
    assert metrics["regressions"] in (0, 1) and "regressed_examples" in metrics
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == len(EVAL) and {"prediction", "confidence", "correct", "slice"} <= set(preds[0])

    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert model.config.id2label == {0: "on", 1: "off"}


def test_training_is_reproducible_for_a_seed(tmp_path, python):
    predictions = []
    for run in ("one", "two"):
        (tmp_path / run).mkdir()
        folder = attempt(tmp_path / run, epochs=1)
        assert run_trainer(python, folder).returncode == 0
        predictions.append((folder / "output" / "predictions.jsonl").read_text())
    assert predictions[0] == predictions[1]


def test_lora_writes_a_merged_plain_model(tmp_path, python):
    folder = attempt(tmp_path, epochs=1, method="lora")
    proc = run_trainer(python, folder)
    assert proc.returncode == 0, proc.stderr[-2000:]
    model_dir = folder / "output" / "model"
    assert (model_dir / "config.json").exists() and not (model_dir / "adapter_config.json").exists()


def test_corrupt_training_data_fails_clearly_and_leaves_no_model(tmp_path, python):
    folder = attempt(tmp_path, train_bytes=b'{"text": "turn on", "label": "on"}\n{"text": broken\n')
    proc = run_trainer(python, folder)
    assert proc.returncode == 1
    assert "train.jsonl:2: invalid JSON" in proc.stderr
    failure = json.loads((folder / "failure.json").read_text())
    assert failure["error"] == "DataError"
    assert not (folder / "output").exists()


def test_a_base_model_that_does_not_match_its_recorded_hash_is_refused(tmp_path, python):
    folder = attempt(tmp_path, base_model_sha256="0" * 64)  # a deployed parent whose files changed after promotion
    proc = run_trainer(python, folder)
    assert proc.returncode == 1
    failure = json.loads((folder / "failure.json").read_text())
    assert failure["error"] == "ModelTampered" and "refusing to load it" in failure["message"]
    assert not (folder / "output").exists()


def test_a_tampered_eval_set_is_refused(tmp_path, python):
    tampered = serialize([Example("switch on the kettle", "off", role="positive")] + EVAL[1:])
    folder = attempt(tmp_path, eval_bytes=tampered)
    proc = run_trainer(python, folder)
    assert proc.returncode == 1
    assert json.loads((folder / "failure.json").read_text())["error"] == "EvalSetTampered"
    assert not (folder / "output").exists()
