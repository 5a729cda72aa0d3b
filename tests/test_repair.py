"""Production mode end to end on the embedded default: a candidate that breaks previously passing traces is refused."""

from __future__ import annotations

import json

import pytest

from conftest import tiny_adaptation
from pioneer import deploy
from pioneer.cli import main
from pioneer.data.sources import home_assistant_intents
from pioneer.store import LocalStore
from pioneer.traces.store import add, connect

pytestmark = pytest.mark.slow
LABELS = ["HassTurnOn", "HassTurnOff", "HassLightSet"]


def test_a_candidate_that_regresses_is_refused_and_the_deployed_model_is_untouched(write_spec, tmp_path):
    # revision 1: a small cold start promoted through the gate
    v1 = write_spec(tiny_adaptation("v1", gate={"tau": 0.05}, search={"maxAttempts": 1, "configurationsPerIteration": 1},
                                    deployedModel="lights"), "v1.yaml")
    assert main(["run", str(v1), "--quiet"]) == 0
    registry = LocalStore(tmp_path / "pioneer-artifacts")
    before = deploy.load(registry, "lights")
    assert before.current_revision == 1

    # judged traffic: real failures with corrections, and "passing" traces whose accepted answer is one no
    # retrained model will give (the judge passed the parent's odd answers): any candidate regresses on them
    utterances = [ex for ex in home_assistant_intents(60, LABELS, seed=7)][-90:]
    rows = []
    for i, ex in enumerate(utterances):
        if i % 3 == 0:
            wrong = LABELS[(LABELS.index(ex.label) + 1) % 3]
            rows.append({"id": f"f{i}", "input": ex.text, "prediction": wrong, "corrected": ex.label, "verdict": "fail"})
        else:
            odd = LABELS[(LABELS.index(ex.label) + 2) % 3]
            rows.append({"id": f"p{i}", "input": ex.text, "prediction": odd, "verdict": "pass"})
    add(connect(tmp_path / "traces.db"), rows)

    repair = tiny_adaptation("repair", mode="production", deployedModel="lights",
                             data={"sources": [{"traces": "traces.db"}]}, gate={"tau": 0.05, "epsilon": 0},
                             search={"maxAttempts": 1, "configurationsPerIteration": 1}, task={"labels": LABELS},
                             production={"triage": {"fdr": 0.2}})
    spec = write_spec(repair, "repair.yaml")
    main(["run", str(spec), "--quiet"])

    after = deploy.load(registry, "lights")
    assert after.current_revision == 1 and after.model_uri == before.model_uri and len(after.revisions) == 1
    verdict = after.last_verdict
    assert verdict.passed is False and "regressions on previously passing traces > epsilon 0" in verdict.reason
    assert verdict.regressions > 0 and len(verdict.regressed_examples) >= verdict.regressions
    state = json.loads((tmp_path / "pioneer-artifacts" / "repair" / "state.json").read_text())
    assert state["gate"]["passed"] is False and state["gate"]["regressedExamples"]
    report = (tmp_path / "pioneer-artifacts" / "repair" / "report" / "report.md").read_text()
    assert "**REFUSED**" in report and verdict.regressed_examples[0] in report and "## Diagnosis" in report
    # the triage ran at the spec's false-discovery rate, and says so
    prep = json.loads((tmp_path / "pioneer-artifacts" / "repair" / "data" / "preparation.json").read_text())
    assert prep["triage"]["level"] == 0.2 and "### Triage" in report and "false-discovery rate 0.2 " in report
    # each regressed example with its text, the answer that passed before and the candidate's answer
    metrics = json.loads((tmp_path / "pioneer-artifacts" / "repair" / "attempts" / verdict.attempt / "output" / "metrics.json").read_text())
    first = metrics["regressed_examples"][0]
    assert f"| regression set | {first['id']} | {first['text']} | {first['label']} | {first['prediction']} |" in report
    assert "{'" not in report.split("## Search graph")[0]  # length profiles and evidence read as text, not Python dicts
