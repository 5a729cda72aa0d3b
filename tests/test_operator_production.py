"""Production repair in the cluster: the operator runs the same lifecycle and the same gate as `pioneer run`.

Real Kopf against the API emulator, moto S3, a real PostgreSQL trace store and real trainer processes playing
the kubelet. The parent (DeployedModel revision 1) is a small cold start whose model is published on S3."""

from __future__ import annotations

import json

import boto3
import pytest

from conftest import tiny_adaptation
from pioneer import deploy
from pioneer.cli import main
from pioneer.core import gate
from pioneer.data.sources import home_assistant_intents
from pioneer.store import open_store
from pioneer.traces.store import add, connect
from test_operator import GROUP, NS, VERSION, apply, drive_to_completion, get, jobs, metric, operator, scrape, wait_for

pytestmark = pytest.mark.slow
LABELS = ["HassTurnOn", "HassTurnOff", "HassLightSet"]


@pytest.fixture(scope="module")
def parent(s3_server, tmp_path_factory):
    """A cold-start model promoted through the gate with its artifacts on S3: revision 1 of 'lights'."""
    bucket = "pioneer-production-parent"
    boto3.client("s3").create_bucket(Bucket=bucket)
    folder = tmp_path_factory.mktemp("parent")
    (folder / "v1.yaml").write_text(json.dumps(tiny_adaptation(
        "v1", gate={"tau": 0.05}, search={"maxAttempts": 1, "configurationsPerIteration": 1}, deployedModel="lights",
        artifacts={"uri": f"s3://{bucket}/pioneer"})))
    assert main(["run", str(folder / "v1.yaml"), "--quiet"]) == 0
    status = deploy.load(open_store(f"s3://{bucket}/pioneer"), "lights")
    assert status.current_revision == 1 and status.model_uri.startswith(f"s3://{bucket}/pioneer/models/sha256-")
    return bucket, status


def traces(url: str, regressing: bool) -> None:
    """Judged traffic: failures with corrections, and passing traces. With ``regressing`` the judge passed the
    parent's odd answers, which no retrained model gives: any candidate regresses on them."""
    rows = []
    for i, ex in enumerate(list(home_assistant_intents(60, LABELS, seed=7))[-90:]):
        if i % 3 == 0:
            wrong = LABELS[(LABELS.index(ex.label) + 1) % 3]
            rows.append({"id": f"f{i}", "input": ex.text, "prediction": wrong, "corrected": ex.label, "verdict": "fail"})
        else:
            answer = LABELS[(LABELS.index(ex.label) + 2) % 3] if regressing else ex.label
            rows.append({"id": f"p{i}", "input": ex.text, "prediction": answer, "verdict": "pass"})
    add(connect(url), rows)


def repair(bucket: str, traces_url: str, **gate_) -> dict:
    """The production ModelAdaptation; its artifacts go under a prefix of this test's own (named after its database)."""
    doc = tiny_adaptation("repair", mode="production", deployedModel="lights", data={"sources": [{"traces": traces_url}]},
                          gate=gate_, search={"maxAttempts": 1, "configurationsPerIteration": 1, "parallelism": 2},
                          task={"labels": LABELS}, artifacts={"uri": f"s3://{bucket}/{traces_url.rsplit('/', 1)[1]}"})
    doc["spec"]["trainer"] = {"image": "registry.example/pioneer-trainer:test"}
    return doc


def up(api) -> str | None:
    """The metrics page once the operator has started serving it."""
    try:
        return scrape(api)
    except OSError:
        return None


def deployed(api, status) -> None:
    """The DeployedModel resource at revision 1, as a user's cluster would hold it (applied before the operator runs)."""
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DeployedModel", "metadata": {"name": "lights"},
            "spec": {"task": {"description": "route smart-home commands", "labels": LABELS}}}
    apply(api, "deployedmodels", body)
    api.custom.patch_namespaced_custom_object_status(GROUP, VERSION, NS, "deployedmodels", "lights", {"status": status.dump()})


def test_a_production_repair_in_the_cluster_promotes_revision_2_through_the_gate(cluster, parent, pg_database):
    api = cluster
    bucket, status = parent
    traces(pg_database, regressing=False)
    deployed(api, status)
    with operator() as runner:
        apply(api, "modeladaptations", repair(bucket, pg_database, tau=0.05, epsilon=30))
        ma = drive_to_completion(api, "repair")
        assert ma["status"]["phase"] == "Succeeded", ma["status"]
        dm = get(api, "deployedmodels", "lights")["status"]
        verdict = dm["lastVerdict"]
        assert verdict["passed"] is True and dm["currentRevision"] == 2 and [r["revision"] for r in dm["revisions"]] == [1, 2]
        assert [c["name"] for c in verdict["checks"]] == ["score", "notBelowBaseline", "regressions", "crossCheckpoint"]
        new = dm["revisions"][-1]
        assert new["attempt"] == "repair-i1-a" and dm["modelUri"].endswith(f"/models/sha256-{new['modelSha256']}")
        # the baseline attempt was the deployed parent itself, loaded from S3 and verified against its hash
        baseline = get(api, "trainingattempts", "repair-baseline")
        assert baseline["spec"]["pipeline"]["hyperparameters"]["baseModel"] == status.model_uri
        assert baseline["spec"]["inputs"]["baseModelSha256"] == gate.current(status).model_sha256
        reasons = {(e.involved_object.kind, e.reason) for e in api.core.list_namespaced_event(NS).items}
        assert ("DeployedModel", "Promoted") in reasons and ("ModelAdaptation", "Promoted") in reasons
    assert runner.exception is None


def test_a_regressing_candidate_in_the_cluster_leaves_revision_1_and_records_why(cluster, parent, pg_database):
    api = cluster
    bucket, status = parent
    traces(pg_database, regressing=True)
    deployed(api, status)
    with operator() as runner:
        before = metric(wait_for(lambda: up(api), what="the operator's metrics"), "pioneer_gate_verdicts_total",
                        deployed_model="lights", result="failed")
        apply(api, "modeladaptations", repair(bucket, pg_database, tau=0.05, epsilon=0))
        drive_to_completion(api, "repair")
        dm = get(api, "deployedmodels", "lights")["status"]
        verdict = dm["lastVerdict"]
        assert verdict["passed"] is False and dm["currentRevision"] == 1 and len(dm["revisions"]) == 1
        assert dm["modelUri"] == status.model_uri
        failed = {c["name"]: c for c in verdict["checks"] if not c["passed"]}
        assert "regressions" in failed and failed["regressions"]["limit"] == 0 and failed["regressions"]["value"] > 0
        assert "regressions on previously passing traces > epsilon 0" in verdict["reason"]
        assert verdict["regressedExamples"] and verdict["regressedExamplesTotal"] >= failed["regressions"]["value"]
        text = scrape(api)
        assert before == 0 and metric(text, "pioneer_gate_verdicts_total", deployed_model="lights", result="failed") == 1
        # the alert rules (tested with promtool) read series the operator really exports
        import re
        from pathlib import Path

        rules = (Path(__file__).parent.parent / "charts" / "pioneer" / "files" / "alerts.yaml").read_text()
        for name in set(re.findall(r"\b(pioneer_[a-z_]+)", rules)) - ONLY_WHILE_SET:
            assert f"\n{name}{{" in text, f"{name} is not exported by the operator"
        reasons = {(e.involved_object.kind, e.reason) for e in api.core.list_namespaced_event(NS).items}
        assert ("DeployedModel", "GateFailed") in reasons
    assert runner.exception is None


# series that exist only while there is something to report (test_manual_promotion... shows this one exported)
ONLY_WHILE_SET = {"pioneer_pending_approval_since_seconds"}


def test_manual_promotion_waits_for_an_approval_then_promotes_through_the_annotation(cluster, parent, pg_database, capsys):
    api = cluster
    bucket, status = parent
    traces(pg_database, regressing=False)
    deployed(api, status)
    with operator() as runner:
        apply(api, "modeladaptations", repair(bucket, pg_database, tau=0.05, epsilon=30, promotion="manual"))
        ma = drive_to_completion(api, "repair")
        assert ma["status"]["phase"] == "Succeeded" and ma["status"]["verdict"]["passed"] is True
        dm = get(api, "deployedmodels", "lights")["status"]
        assert dm["currentRevision"] == 1 and len(dm["revisions"]) == 1  # passed, but not served
        pending = dm["pendingRevision"]
        assert pending["candidate"]["attempt"] == "repair-i1-a" and pending["basedOnRevision"] == 1
        assert next(c for c in dm["conditions"] if c["type"] == "PendingApproval")["status"] == "True"
        assert metric(scrape(api), "pioneer_pending_approval_since_seconds", deployed_model="lights") > 1.7e9
        assert ("DeployedModel", "PendingApproval") in {(e.involved_object.kind, e.reason) for e in api.core.list_namespaced_event(NS).items}

        assert main(["approve", "lights", "--namespace", NS, "--by", "ana"]) == 0
        dm = wait_for(lambda: (st := get(api, "deployedmodels", "lights")["status"])["currentRevision"] == 2 and st, what="the approval")
        assert dm.get("pendingRevision") is None and "approved by ana" in dm["revisions"][-1]["reason"]
        assert dm["revisions"][-1]["modelSha256"] == pending["candidate"]["modelSha256"]
        wait_for(lambda: "pioneer_pending_approval_since_seconds{" not in scrape(api), what="the pending series to go")
    assert runner.exception is None


def test_bad_production_data_is_a_failed_condition_not_an_endless_retry(cluster, parent, pg_database):
    api = cluster
    bucket, status = parent
    add(connect(pg_database), [{"id": "p1", "input": "lights on", "prediction": "HassTurnOn", "verdict": "pass"}])  # nothing failed
    deployed(api, status)
    from test_operator import run_jobs

    with operator():
        apply(api, "modeladaptations", repair(bucket, pg_database))
        st = wait_for(lambda: run_jobs(api) >= 0 and (get(api, "modeladaptations", "repair").get("status") or {}).get("phase") == "Failed"
                      and get(api, "modeladaptations", "repair")["status"], what="a Failed phase")
        ready = next(c for c in st["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "InvalidData" and "nothing to repair" in ready["message"]
        assert [j.metadata.name for j in jobs(api)] == ["repair-prepare"]  # the preparation Job said why; no attempt ran
        warnings = [e for e in api.core.list_namespaced_event(NS).items if e.reason == "InvalidData"]
        assert len(warnings) == 1


def test_pioneer_run_and_the_operator_reach_the_same_verdict(cluster, parent, pg_database, tmp_path):
    """Adapter parity: one production scenario, once through `pioneer run`, once through the operator."""
    api = cluster
    bucket, status = parent
    traces(pg_database, regressing=True)
    # the embedded default: the same parent in a file registry, the same traces
    local = tmp_path / "local"
    registry = open_store(str(local / "pioneer-artifacts"))
    deploy.save(registry, "lights", status)
    doc = repair(bucket, pg_database, tau=0.05, epsilon=0)
    doc["spec"]["artifacts"] = {"uri": "./pioneer-artifacts"}
    local.mkdir(exist_ok=True)
    (local / "repair.yaml").write_text(json.dumps(doc))
    main(["run", str(local / "repair.yaml"), "--quiet"])
    local_verdict = deploy.load(registry, "lights").last_verdict

    deployed(api, status)
    with operator():
        apply(api, "modeladaptations", repair(bucket, pg_database, tau=0.05, epsilon=0))
        drive_to_completion(api, "repair")
        cluster_verdict = get(api, "deployedmodels", "lights")["status"]["lastVerdict"]
    assert cluster_verdict["passed"] is local_verdict.passed is False
    assert [(c["name"], c["passed"], c["limit"]) for c in cluster_verdict["checks"]] == \
        [(c.name, c.passed, c.limit) for c in local_verdict.checks]
    assert [c["value"] for c in cluster_verdict["checks"]] == pytest.approx([c.value for c in local_verdict.checks], abs=0.02)


class Crash(Exception):
    """Stands for the operator process dying at this point: the test stops it right after and starts a new one."""


@pytest.mark.parametrize("phase", ["preparing, then training", "gate decided, status not yet written"])
def test_an_operator_killed_at_a_phase_and_restarted_duplicates_nothing(phase, cluster, parent, pg_database, monkeypatch):
    import threading

    from pioneer.core import lifecycle
    from test_operator import run_jobs

    api = cluster
    bucket, status = parent
    traces(pg_database, regressing=False)
    deployed(api, status)
    crashed = threading.Event()
    original = lifecycle._promote

    def dies_once(*args, **kwargs):
        result = original(*args, **kwargs)  # the DeployedModel is patched ...
        if not crashed.is_set():
            crashed.set()
            raise Crash(f"killed while {phase}")  # ... and the process dies before it records anything more
        return result

    if phase.startswith("preparing"):
        with operator():  # stopped while its preparation Job has not run yet
            apply(api, "modeladaptations", repair(bucket, pg_database, tau=0.05, epsilon=30))
            wait_for(lambda: [j.metadata.name for j in jobs(api)] == ["repair-prepare"], what="the preparation Job")
        run_jobs(api)  # the Job finishes while no operator runs
        with operator():  # stopped again while attempt Jobs exist, before they have run
            wait_for(lambda: len(jobs(api)) >= 2, timeout=180, what="attempt Jobs")
    else:
        monkeypatch.setattr(lifecycle, "_promote", dies_once)
        with operator():
            apply(api, "modeladaptations", repair(bucket, pg_database, tau=0.05, epsilon=30))
            wait_for(lambda: run_jobs(api) >= 0 and crashed.is_set(), timeout=300, what=f"the crash while {phase}")
        monkeypatch.setattr(lifecycle, "_promote", original)
    jobs_before = sorted(j.metadata.name for j in jobs(api))
    with operator() as runner:
        ma = drive_to_completion(api, "repair")
    assert runner.exception is None
    assert ma["status"]["phase"] == "Succeeded" and ma["status"]["gateApplied"] is True
    names = [j.metadata.name for j in jobs(api)]
    assert len(names) == len(set(names)) and set(jobs_before) <= set(names)
    assert names.count("repair-prepare") == 1 and "repair-i1-a" in names
    dm = get(api, "deployedmodels", "lights")["status"]
    assert [r["revision"] for r in dm["revisions"]] == [1, 2] and dm["currentRevision"] == 2
    assert dm["lastVerdict"]["passed"] is True and dm["lastVerdict"]["attempt"] == ma["status"]["verdict"]["attempt"]
