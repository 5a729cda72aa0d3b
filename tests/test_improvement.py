"""Continual improvement: when a repair starts by itself, what it is named, and promotion that waits for a person."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pioneer import deploy
from pioneer.api.models import DeployedModelSpec, DeployedModelStatus, GateVerdict, Improvement, Revision
from pioneer.api.validation import SpecError, parse_resource
from pioneer.cli import main
from pioneer.core import gate, improvement
from pioneer.core.improvement import Repair, decide, repair_name
from pioneer.store import open_store
from pioneer.traces.store import add, connect, count_failures

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
TEMPLATE = {"task": {"description": "route smart-home commands", "labels": ["on", "off"]},
            "data": {"sources": [{"traces": "postgresql+psycopg://reader:${PGPASSWORD}@db/traces"}]}}


def policy(**trigger) -> Improvement:
    return Improvement.model_validate({"template": TEMPLATE, "trigger": {"cooldownSeconds": 600, **trigger}})


def test_a_repair_starts_when_the_current_revision_has_enough_judged_failures():
    below = decide(policy(newFailures=50), "intents", 3, 49, [], NOW, None)
    assert below.reason == improvement.BELOW_THRESHOLD and not below.fires and "49 new judged failure(s) of revision 3" in below.message
    fired = decide(policy(newFailures=50), "intents", 3, 50, [], NOW, None)
    assert fired.fires and fired.reason == improvement.FAILURES and fired.name == "intents-r3-1"
    assert "50 new judged failure(s) of revision 3 (trigger: newFailures 50)" in fired.message


def test_the_decision_is_ordered_paused_then_revision_then_in_flight_then_cool_down():
    running = Repair("intents-r3-1", 3, NOW - timedelta(hours=5), finished=False)
    recent = Repair("intents-r3-1", 3, NOW - timedelta(seconds=100), finished=True)
    paused = policy(newFailures=1).model_copy(update={"paused": True})
    assert decide(paused, "intents", 3, 999, [running], NOW, None).reason == improvement.PAUSED
    assert decide(policy(newFailures=1), "intents", None, 999, [], NOW, None).reason == improvement.NO_REVISION
    in_flight = decide(policy(newFailures=1), "intents", 3, 999, [running], NOW, None)
    assert in_flight.reason == improvement.IN_FLIGHT and "intents-r3-1 is still running" in in_flight.message
    cooling = decide(policy(newFailures=1), "intents", 3, 999, [recent], NOW, None)
    assert cooling.reason == improvement.COOLING_DOWN and cooling.next_check == recent.created_at + timedelta(seconds=600)
    # past the cool-down the next repair of the same revision gets the next sequence number
    later = decide(policy(newFailures=1), "intents", 3, 999, [recent], NOW + timedelta(seconds=600), None)
    assert later.fires and later.name == "intents-r3-2"
    # a new revision starts its own sequence
    assert decide(policy(newFailures=1), "intents", 4, 5, [recent], NOW + timedelta(hours=1), None).name == "intents-r4-1"


def test_a_finished_repair_is_not_retried_on_the_same_failures():
    refused = Repair("intents-r3-1", 3, NOW - timedelta(hours=2), finished=True, failures_at_start=60)
    same = decide(policy(newFailures=50), "intents", 3, 70, [refused], NOW, None)
    assert same.reason == improvement.BELOW_THRESHOLD
    assert "10 new judged failure(s) of revision 3 (70 in all, 60 when intents-r3-1 started)" in same.message
    more = decide(policy(newFailures=50), "intents", 3, 110, [refused], NOW, None)
    assert more.fires and more.name == "intents-r3-2"


def test_a_schedule_fires_once_per_tick_and_only_with_a_failure_to_repair():
    nightly = policy(newFailures=None, schedule="0 2 * * *")
    before, after = datetime(2026, 12, 2, 1, 59, tzinfo=UTC), datetime(2026, 12, 2, 2, 0, 30, tzinfo=UTC)
    assert decide(nightly, "intents", 1, 3, [], after, last_check=before).reason == improvement.SCHEDULE
    assert decide(nightly, "intents", 1, 0, [], after, last_check=before).reason == improvement.BELOW_THRESHOLD
    assert decide(nightly, "intents", 1, 3, [], after + timedelta(minutes=1), last_check=after).reason == improvement.BELOW_THRESHOLD
    # a tick missed while the operator was down is caught at the next check
    assert decide(nightly, "intents", 1, 3, [], after + timedelta(hours=5), last_check=before).fires


def test_repair_names_are_dns_names_of_at_most_63_characters():
    assert repair_name("intents", 2, 7) == "intents-r2-7"
    long = repair_name("a" * 60, 12, 3)
    assert len(long) <= 63 and long.endswith("-r12-3") and long != repair_name("a" * 59 + "b", 12, 3)


def test_an_invalid_template_or_trigger_is_refused_when_the_deployed_model_is_applied():
    doc = {"apiVersion": "pioneer.dev/v1alpha1", "kind": "DeployedModel", "metadata": {"name": "intents"},
           "spec": {"task": {"description": "x"}, "improvement": {"template": {"task": {"description": "x"}, "data": {"sources": [{"path": "x.csv"}]}}}}}
    with pytest.raises(SpecError) as bad:
        parse_resource(doc, "dm.yaml")
    assert "improvement.template is not a valid ModelAdaptation spec" in str(bad.value.problems)
    assert "production mode needs a data source with traces" in str(bad.value.problems)
    doc["spec"]["improvement"] = {"template": TEMPLATE, "trigger": {"newFailures": None, "schedule": "every night"}}
    with pytest.raises(SpecError) as bad:
        parse_resource(doc, "dm.yaml")
    assert "not a 5-field cron expression" in str(bad.value.problems)


def test_the_generated_spec_repairs_the_current_revision_only_and_carries_the_promotion_policy():
    spec = DeployedModelSpec.model_validate({"task": {"description": "x"}, "improvement": {"template": TEMPLATE, "promotion": "manual"}})
    generated = spec.improvement.adaptation_spec("intents", 4)
    assert generated["mode"] == "production" and generated["deployedModel"] == "intents"
    assert generated["data"]["sources"][0]["modelId"] == "intents@4" and generated["gate"]["promotion"] == "manual"
    assert "modelId" not in TEMPLATE["data"]["sources"][0]  # the template itself is untouched


def test_the_trigger_counts_judged_failures_of_one_revision_with_a_persons_verdict_winning(tmp_path):
    engine = connect(tmp_path / "traces.db")
    add(engine, [
        {"id": "a", "input": "x", "prediction": "on", "verdict": "fail", "model_id": "intents@1"},
        {"id": "b", "input": "y", "prediction": "on", "verdict": "fail", "model_id": "intents@2"},
        {"id": "c", "input": "z", "prediction": "on", "verdict": "pass", "human_verdict": "fail", "model_id": "intents@2"},
        {"id": "d", "input": "w", "prediction": "on", "verdict": "fail", "human_verdict": "pass", "model_id": "intents@2"},
        {"id": "e", "input": "v", "prediction": "on", "verdict": "fail", "model_id": "intents@20"},
        {"id": "f", "input": "u", "prediction": "on", "model_id": "intents@2"},
    ])
    assert count_failures(engine, "intents@2") == 2
    assert count_failures(engine, "intents@") == 4
    assert count_failures(engine, "other@") == 0


# --------------------------------------------------------------------------- manual promotion


def _passing(attempt: str) -> tuple[GateVerdict, Revision]:
    verdict = GateVerdict(passed=True, attempt=attempt, adaptation="repair", score=0.99, reason="all checks passed",
                          decided_at="2026-12-02T12:00:00Z")
    return verdict, Revision(revision=1, model_uri=f"/models/{attempt}", model_sha256=attempt * 4, attempt=attempt, adaptation="repair")


def _served() -> DeployedModelStatus:
    first = Revision(revision=1, model_uri="/models/v1", model_sha256="v1")
    return DeployedModelStatus(revisions=[first], current_revision=1, model_uri="/models/v1")


def test_under_manual_promotion_a_passing_candidate_waits_and_is_served_only_once_approved():
    verdict, candidate = _passing("cand")
    waiting = gate.promote(_served(), verdict, candidate, manual=True)
    assert waiting.current_revision == 1 and len(waiting.revisions) == 1
    assert waiting.pending_revision.candidate.attempt == "cand" and waiting.pending_revision.based_on_revision == 1
    assert next(c for c in waiting.conditions if c.type == "PendingApproval").status == "True"
    assert gate.promote(waiting, verdict, candidate, manual=True) == waiting  # applying the verdict again changes nothing
    with pytest.raises(ValueError, match="the candidate waiting is cand, not other"):
        gate.approve(waiting, "other", "2026-12-02T13:00:00Z", "ana")
    served = gate.approve(waiting, "cand", "2026-12-02T13:00:00Z", "ana")
    assert served.current_revision == 2 and served.model_uri == "/models/cand" and served.pending_revision is None
    assert "approved by ana" in served.revisions[-1].reason and served.revisions[-1].promoted_at == "2026-12-02T13:00:00Z"
    assert gate.approve(served, "cand", "2026-12-02T13:05:00Z", "ana") == served  # approving twice promotes once
    with pytest.raises(ValueError, match="no candidate waits"):
        gate.approve(served, None, "2026-12-02T13:05:00Z", "ana")


def test_an_approval_is_refused_once_another_revision_is_served():
    verdict, candidate = _passing("cand")
    waiting = gate.promote(_served(), verdict, candidate, manual=True)
    other_verdict, other = _passing("hotfix")
    moved = gate.promote(waiting, other_verdict, other)  # someone promoted another candidate meanwhile
    with pytest.raises(ValueError, match="was gated against revision 1, but revision 2 is served now"):
        gate.approve(moved, "cand", "2026-12-02T14:00:00Z", "ana")


def test_pioneer_approve_serves_the_waiting_candidate_of_a_local_deployed_model(tmp_path, capsys):
    store = open_store(str(tmp_path / "artifacts"))
    verdict, candidate = _passing("cand")
    deploy.save(store, "intents", gate.promote(_served(), verdict, candidate, manual=True))
    assert main(["approve", "intents", "--artifacts", str(tmp_path / "artifacts"), "--by", "ana"]) == 0
    assert deploy.load(store, "intents").current_revision == 2 and "serving revision 2" in capsys.readouterr().out
    assert main(["approve", "intents", "--artifacts", str(tmp_path / "artifacts")]) == 2
    assert "no candidate waits for an approval" in capsys.readouterr().err


# --------------------------------------------------------------------------- the embedded default


@pytest.mark.slow
def test_pioneer_improve_repairs_the_current_revision_once_its_failures_reach_the_trigger(tmp_path, capsys):
    """`pioneer improve` makes the operator's decision over a local DeployedModel and runs the repair it starts."""
    import yaml

    from conftest import tiny_adaptation
    from pioneer.data.sources import home_assistant_intents

    labels = ["HassTurnOn", "HassTurnOff", "HassLightSet"]
    v1 = tiny_adaptation("v1", gate={"tau": 0.05}, search={"maxAttempts": 1, "configurationsPerIteration": 1}, deployedModel="lights")
    (tmp_path / "v1.yaml").write_text(yaml.safe_dump(v1))
    assert main(["run", str(tmp_path / "v1.yaml"), "--quiet"]) == 0
    template = tiny_adaptation("x", mode="production", data={"sources": [{"traces": "traces.db"}]}, task={"labels": list(labels)},
                               gate={"tau": 0.05, "epsilon": 30}, search={"maxAttempts": 1, "configurationsPerIteration": 1})["spec"]
    dm = {"apiVersion": "pioneer.dev/v1alpha1", "kind": "DeployedModel", "metadata": {"name": "lights"},
          "spec": {"task": {"description": "route smart-home commands", "labels": list(labels)},
                   "improvement": {"template": template, "trigger": {"newFailures": 20, "cooldownSeconds": 0}}}}
    (tmp_path / "dm.yaml").write_text(yaml.safe_dump(dm))
    engine = connect(tmp_path / "traces.db")
    rows = []
    for i, ex in enumerate(list(home_assistant_intents(60, labels, seed=7))[-90:]):
        wrong = labels[(labels.index(ex.label) + 1) % 3]
        rows.append({"id": f"t{i}", "input": ex.text, "model_id": "lights@1", **(
            {"prediction": wrong, "corrected": ex.label, "verdict": "fail"} if i % 3 == 0 else {"prediction": ex.label, "verdict": "pass"})})
    add(engine, rows[:30])  # 10 failures: below the trigger
    assert main(["improve", str(tmp_path / "dm.yaml"), "--quiet"]) == 0
    assert "BelowThreshold: 10 new judged failure(s) of revision 1; waits for newFailures 20" in capsys.readouterr().out
    add(engine, rows[30:])  # 30 failures
    assert main(["improve", str(tmp_path / "dm.yaml"), "--quiet"]) == 0
    assert "Failures: 30 new judged failure(s) of revision 1" in capsys.readouterr().out
    store = open_store(str(tmp_path / "pioneer-artifacts"))
    status = deploy.load(store, "lights")
    assert status.current_revision == 2 and status.revisions[-1].adaptation == "lights-r1-1"
    # revision 2 has no failures yet: the next look starts nothing
    assert main(["improve", str(tmp_path / "dm.yaml"), "--quiet"]) == 0
    assert "BelowThreshold: 0 new judged failure(s) of revision 2" in capsys.readouterr().out
    assert [r["name"] for r in json_repairs(store)] == ["lights-r1-1"]


def json_repairs(store):
    from pioneer.runner.improve import record_key
    from pioneer.store import read_json

    return read_json(store, record_key("lights"))["repairs"]


def test_the_serving_deployment_carries_the_capture_policy_the_credentials_and_the_pinned_revision(monkeypatch):
    from pioneer.api.models import Capture, ServedDeployment
    from pioneer.kube import serving

    monkeypatch.setenv("PIONEER_SERVE_IMAGE", "registry.example/serve:1")
    target = ServedDeployment(replicas=3, port=9000, credentials_secret="lights-serve")
    manifest = serving.deployment_manifest("lights", target, Capture(inputs=False, outputs=True), "postgresql+psycopg://db/t",
                                           4, "s3://b/models/sha256-abc", "abc")
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example/serve:1" and manifest["spec"]["replicas"] == 3
    assert "--no-capture-inputs" in container["args"] and "--capture-outputs" in container["args"]
    assert container["args"][container["args"].index("--port") + 1] == "9000" and container["args"][container["args"].index("--db") + 1] == "postgresql+psycopg://db/t"
    assert container["envFrom"] == [{"secretRef": {"name": "lights-serve"}}]
    assert serving.served_revision(manifest) == "4" and {"name": "PIONEER_SERVE_MODEL_SHA256", "value": "abc"} in container["env"]
    assert manifest["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert serving.service_manifest("lights", target)["spec"]["ports"][0]["port"] == 9000
    explicit = serving.deployment_manifest("lights", ServedDeployment(image="mine:2"), Capture(), "t.db", 1, "u", None)
    assert explicit["spec"]["template"]["spec"]["containers"][0]["image"] == "mine:2"
