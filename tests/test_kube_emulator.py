"""The test API server behaves like a kube-apiserver where the operator relies on it (kmock's emulator alone does not):
selectors, the status subresource, CRD defaulting and pruning, resourceVersion conflicts, OpenAPI for `kubectl explain`,
and well-formed discovery. Each behaviour is checked with the real `kubernetes` client or the real `kubectl`."""

from __future__ import annotations

import shutil
import subprocess

import kubernetes
import pytest

from kube_emulator import Emulator

GROUP, VERSION, NS = "pioneer.dev", "v1alpha1", "default"


@pytest.fixture
def api(tmp_path):
    with Emulator() as emu:
        config = emu.write_kubeconfig(tmp_path / "kubeconfig")
        client = kubernetes.config.new_client_from_config(str(config))
        emu.kubeconfig = config
        emu.custom = kubernetes.client.CustomObjectsApi(client)
        yield emu


def attempt(name: str, adaptation: str, **extra) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingAttempt",
            "metadata": {"name": name, "labels": {"pioneer.dev/adaptation": adaptation}}, **extra}


def names(listing: dict) -> list[str]:
    return sorted(o["metadata"]["name"] for o in listing["items"])


def test_label_and_field_selectors_select(api):
    for name, owner in [("a-i1-a", "a"), ("a-i1-b", "a"), ("b-i1-a", "b")]:
        api.custom.create_namespaced_custom_object(GROUP, VERSION, NS, "trainingattempts", attempt(name, owner))
    listing = lambda **kw: names(api.custom.list_namespaced_custom_object(GROUP, VERSION, NS, "trainingattempts", **kw))  # noqa: E731
    assert listing(label_selector="pioneer.dev/adaptation=b") == ["b-i1-a"]
    assert listing(label_selector="pioneer.dev/adaptation!=b") == ["a-i1-a", "a-i1-b"]
    assert listing(label_selector="pioneer.dev/adaptation in (a, c)") == ["a-i1-a", "a-i1-b"]
    assert listing(label_selector="pioneer.dev/adaptation,!missing") == ["a-i1-a", "a-i1-b", "b-i1-a"]
    assert listing(label_selector="missing") == []
    assert listing(field_selector="metadata.name=a-i1-b") == ["a-i1-b"]
    assert listing(field_selector="metadata.name!=a-i1-b", label_selector="pioneer.dev/adaptation=a") == ["a-i1-a"]


@pytest.mark.parametrize("server", ["kmock", "project"])
def test_a_second_adaptations_attempts_are_not_listed_as_the_firsts(tmp_path, server):
    import kmock

    with Emulator(server=kmock.KubernetesEmulator if server == "kmock" else None) as emu:
        client = kubernetes.config.new_client_from_config(str(emu.write_kubeconfig(tmp_path / "k")))
        custom = kubernetes.client.CustomObjectsApi(client)
        for name, owner in [("a-1", "a"), ("b-1", "b")]:
            custom.create_namespaced_custom_object(GROUP, VERSION, NS, "trainingattempts", attempt(name, owner))
        mine = names(custom.list_namespaced_custom_object(GROUP, VERSION, NS, "trainingattempts", label_selector="pioneer.dev/adaptation=a"))
    # kmock's own emulator answers with every object, so a selector bug in the operator could never show in a test
    assert mine == (["a-1", "b-1"] if server == "kmock" else ["a-1"])


def test_the_status_subresource_is_separate_from_the_object(api):
    plural = "trainingattempts"
    api.custom.create_namespaced_custom_object(GROUP, VERSION, NS, plural, attempt("x", "a", status={"phase": "Succeeded"}))
    assert "status" not in api.custom.get_namespaced_custom_object(GROUP, VERSION, NS, plural, "x")  # not on create
    api.custom.patch_namespaced_custom_object_status(GROUP, VERSION, NS, plural, "x",
                                                     {"status": {"phase": "Running"}, "spec": {"iteration": 7}})
    obj = api.custom.get_namespaced_custom_object(GROUP, VERSION, NS, plural, "x")
    assert obj["status"]["phase"] == "Running" and "iteration" not in (obj.get("spec") or {})
    generation = obj["metadata"]["generation"]
    api.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, plural, "x", {"status": {"phase": "Failed"}, "spec": {"iteration": 2}})
    obj = api.custom.get_namespaced_custom_object(GROUP, VERSION, NS, plural, "x")
    assert obj["status"]["phase"] == "Running" and obj["spec"]["iteration"] == 2
    assert obj["metadata"]["generation"] == generation + 1  # a spec change is a new generation, a status change is not


def test_crd_defaults_are_filled_and_unknown_fields_pruned(api):
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelAdaptation", "metadata": {"name": "m"},
            "spec": {"task": {"description": "route commands", "labels": ["a", "b"]}, "data": {"sources": [{"builtin": "x"}]},
                     "notAField": 1}}
    api.custom.create_namespaced_custom_object(GROUP, VERSION, NS, "modeladaptations", body)
    obj = api.custom.get_namespaced_custom_object(GROUP, VERSION, NS, "modeladaptations", "m")
    assert obj["spec"]["mode"] == "coldStart" and obj["spec"]["task"]["type"] == "classification"  # CRD defaults
    assert "notAField" not in obj["spec"]
    api.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, "modeladaptations", "m", {"spec": {"alsoNot": True}})
    assert "alsoNot" not in api.custom.get_namespaced_custom_object(GROUP, VERSION, NS, "modeladaptations", "m")["spec"]


def test_a_write_with_a_stale_resource_version_is_a_409(api):
    plural = "deployedmodels"
    api.custom.create_namespaced_custom_object(GROUP, VERSION, NS, plural, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "DeployedModel", "metadata": {"name": "lights"}, "spec": {}})
    seen = api.custom.get_namespaced_custom_object(GROUP, VERSION, NS, plural, "lights")["metadata"]["resourceVersion"]
    api.custom.patch_namespaced_custom_object_status(GROUP, VERSION, NS, plural, "lights",
                                                     {"metadata": {"resourceVersion": seen}, "status": {"currentRevision": 1}})
    with pytest.raises(kubernetes.client.ApiException) as refused:  # a second writer that read the same version
        api.custom.patch_namespaced_custom_object_status(GROUP, VERSION, NS, plural, "lights",
                                                         {"metadata": {"resourceVersion": seen}, "status": {"currentRevision": 5}})
    assert refused.value.status == 409
    assert api.custom.get_namespaced_custom_object(GROUP, VERSION, NS, plural, "lights")["status"]["currentRevision"] == 1


def kubectl(api, *args: str) -> subprocess.CompletedProcess:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    return subprocess.run(["kubectl", "--kubeconfig", str(api.kubeconfig), *args], check=False, capture_output=True, text=True, timeout=60)


def test_kubectl_explain_prints_the_descriptions_from_the_crds(api):
    done = kubectl(api, "explain", "modeladaptation.spec.gate")
    assert done.returncode == 0, done.stderr
    assert "KIND:       ModelAdaptation" in done.stdout and "tau" in done.stdout and "epsilon" in done.stdout
    assert "Target score" in done.stdout or "score" in done.stdout.lower()
    for path in ["trainingattempt.status.progress", "deployedmodel.status.lastVerdict.checks", "modeladaptation.spec"]:
        done = kubectl(api, "explain", path)
        assert done.returncode == 0 and "DESCRIPTION:" in done.stdout and "<empty>" not in done.stdout.split("FIELDS:")[0], (path, done.stdout, done.stderr)


def test_discovery_is_well_formed_for_kubectl(api):
    done = kubectl(api, "api-resources", "--api-group", GROUP, "-o", "name")
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) >= {"modeladaptations.pioneer.dev", "trainingattempts.pioneer.dev", "deployedmodels.pioneer.dev"}
    done = kubectl(api, "api-resources", "--api-group", "", "-o", "name")
    assert done.returncode == 0 and "events" in done.stdout.split(), done.stderr
