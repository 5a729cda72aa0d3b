"""GLiNER2 (``hyperparameters.backend: gliner2``): a deployed GLiNER2 tagger repaired in production mode from its judged traces, under the gate. In its own file so that the slow GLiNER2 trainings run on
both pytest workers (``--dist loadfile``); the helpers are ``test_gliner2``'s."""

from __future__ import annotations

import json
import random

import pytest

from pioneer import defaults as d
from test_gliner2 import GLINER2_HP, _names_conll
from test_ner import CITIES, PEOPLE, sentence

pytest.importorskip("gliner2.training", reason="the 'gliner' extra (gliner2[train]) is not installed")


@pytest.mark.slow
def test_a_deployed_gliner2_tagger_is_repaired_from_its_judged_traces_under_the_gate(tmp_path, write_spec):
    from pioneer import deploy, inference
    from pioneer.cli import main
    from pioneer.store import LocalStore
    from pioneer.traces.store import add, connect

    _names_conll(tmp_path / "v1.conll", 80, 3)
    task = {"description": "find people and places", "type": "ner"}
    v1 = {"apiVersion": "pioneer.dev/v1alpha1", "kind": "ModelAdaptation", "metadata": {"name": "v1"},
          "spec": {"task": task, "data": {"sources": [{"path": "v1.conll"}], "evaluation": {"size": 12}},
                   "hyperparameters": {**GLINER2_HP, "epochs": 2, "gliner2Architecture": "span"},  # an undertrained tagger: it confuses people and places
                   "gate": {"tau": 0.01}, "search": {"maxAttempts": 1, "configurationsPerIteration": 1}, "deployedModel": "tagger"}}
    assert main(["run", str(write_spec(v1, "v1.yaml")), "--quiet"]) == 0
    registry = LocalStore(tmp_path / "pioneer-artifacts")
    parent = deploy.load(registry, "tagger")
    assert parent.current_revision == 1

    rng = random.Random(5)
    traffic = [sentence(rng.choice(PEOPLE) if i % 3 else None, rng.choice(CITIES) if i % 2 else None) for i in range(90)]
    texts = [ex.text + f" {100 + i}" for i, ex in enumerate(traffic)]
    gold = [ex.label + " O" for ex in traffic]
    answers = inference.load(parent.model_uri).predict(texts)  # the deployed revision, loaded as served (gliner2 backend)
    rows = [{"id": f"t{i:03d}", "input": t, "prediction": a.output, "corrected": g, "verdict": "pass" if a.output == g else "fail"}
            for i, (t, g, a) in enumerate(zip(texts, gold, answers))]
    failing = sum(r["verdict"] == "fail" for r in rows)
    assert failing >= 10
    add(connect(tmp_path / "traces.db"), rows)

    repair = {"apiVersion": "pioneer.dev/v1alpha1", "kind": "ModelAdaptation", "metadata": {"name": "repair"},
              "spec": {"mode": "production", "task": task, "data": {"sources": [{"traces": "traces.db"}]},
                       "hyperparameters": {**GLINER2_HP, "epochs": 6}, "gate": {"tau": 0.5, "epsilon": 90},
                       "search": {"maxAttempts": 1, "configurationsPerIteration": 1}, "deployedModel": "tagger"}}
    assert main(["run", str(write_spec(repair, "repair.yaml")), "--quiet"]) == 0
    art = tmp_path / "pioneer-artifacts" / "repair"
    prep = json.loads((art / "data" / "preparation.json").read_text())
    assert prep["fixable"] == failing and prep["regression_set"] > 0
    baseline = json.loads((art / "attempts" / "repair-baseline" / "output" / "metrics.json").read_text())
    assert baseline["training"]["backend"] == "gliner2" and baseline["threshold_fixed"] is True  # the parent, scored as deployed
    candidate = json.loads((art / "attempts" / "repair-i1-a" / "output" / "metrics.json").read_text())
    assert candidate["training"]["initialised"] == f"built from config on minilm ({d.GLINER2_ARCHITECTURE})"  # retrained from the base model, not the parent
    after = deploy.load(registry, "tagger")
    assert candidate["score"] > baseline["score"], (candidate["score"], baseline["score"])
    assert after.last_verdict.passed and after.current_revision == 2, after.last_verdict
    served = inference.load(after.model_uri)
    assert served.preprocessing.backend == "gliner2"
