"""The API: specs are checked as the cluster would check them, and crds/ is generated from the models."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO, tiny_adaptation
from pioneer.api import crd
from pioneer.api.models import ModelAdaptation
from pioneer.api.validation import SpecError, load_resources, parse_resource
from pioneer.cli import main


def test_a_minimal_spec_gets_every_default():
    ma = parse_resource(tiny_adaptation())
    assert isinstance(ma, ModelAdaptation)
    assert ma.spec.gate.tau == 0.96 and ma.spec.gate.epsilon == 2
    assert ma.spec.mode == "coldStart"
    assert ma.spec.hyperparameters.method == "full"


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d["spec"]["search"].update(maxAttempts=0), "spec.search.maxAttempts"),
        (lambda d: d["spec"]["gate"].__setitem__("tau", 1.5) if "gate" in d["spec"] else d["spec"].update(gate={"tau": 1.5}), "spec.gate.tau"),
        (lambda d: d["spec"]["hyperparameters"].update(methd="lora"), "spec.hyperparameters.methd"),
        (lambda d: d["spec"]["hyperparameters"].update(method="qlora"), "spec.hyperparameters.method"),
        (lambda d: d["spec"]["data"]["sources"][0].update(path="x.csv"), "spec.data.sources[0]"),
        (lambda d: d["spec"]["task"].update(metric="f1"), "spec.task"),
        (lambda d: d["metadata"].update(name="Bad_Name"), "metadata"),
        (lambda d: d["spec"].pop("task"), "spec.task"),
        (lambda d: d["spec"]["task"].update(type="ner", metric="accuracy"), "spec.task"),
        (lambda d: d["spec"]["task"].update(type="generation", answerFormat="letter"), "spec.task.answerFormat"),
        (lambda d: d["spec"]["hyperparameters"].update(nerBackend="spacy"), "spec.hyperparameters.nerBackend"),
        (lambda d: d["spec"]["task"].update(outOfScopeLabel="oos"), "spec.task"),  # not one of the labels
        (lambda d: d["spec"]["task"].update(type="ner", metric="entityF1", labels=["PER"], outOfScopeLabel="PER"), "spec.task"),
    ],
)
def test_a_bad_field_is_named_in_the_error(mutate, field):
    doc = tiny_adaptation()
    mutate(doc)
    with pytest.raises(SpecError) as info:
        parse_resource(doc)
    assert any(p.startswith(field) for p in info.value.problems), info.value.problems


def test_the_metric_defaults_by_task_type():
    for task_type, metric in (("classification", "accuracy"), ("ner", "entityF1"), ("generation", "exactMatch")):
        doc = tiny_adaptation()
        doc["spec"]["task"] = {"description": "x", "type": task_type}
        assert parse_resource(doc).spec.task.metric == metric


def test_wrong_api_version_and_kind_are_refused():
    doc = tiny_adaptation()
    doc["apiVersion"] = "pioneer.dev/v1"
    with pytest.raises(SpecError, match="apiVersion"):
        parse_resource(doc)
    doc = tiny_adaptation()
    doc["kind"] = "Adaptation"
    with pytest.raises(SpecError, match="kind"):
        parse_resource(doc)


def test_validate_and_run_exit_2_naming_the_field(write_spec, capsys):
    doc = tiny_adaptation()
    doc["spec"]["search"]["parallelism"] = -1
    path = write_spec(doc)
    assert main(["validate", str(path)]) == 2
    assert "spec.search.parallelism" in capsys.readouterr().err
    assert main(["run", str(path)]) == 2
    assert "spec.search.parallelism" in capsys.readouterr().err


def test_validate_accepts_every_example():
    examples = sorted((REPO / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        assert load_resources(path)
    assert main(["validate", *map(str, examples)]) == 0


def test_crds_directory_is_generated_from_the_models():
    rendered = crd.render_all()
    on_disk = {p.name: p.read_text() for p in (REPO / "crds").glob("*.yaml")}
    assert on_disk == rendered, "crds/ is stale: run `pioneer crds --out crds`"


def test_crds_are_structural_with_status_printer_columns_and_cel_rules():
    for kind in crd.CRD_KINDS:
        doc = crd.crd(kind)
        version = doc["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        assert {c["name"] for c in version["additionalPrinterColumns"]} >= {"Age"}
        schema = version["schema"]["openAPIV3Schema"]

        def walk(node, path):
            assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
            assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
            for name, child in node.get("properties", {}).items():
                walk(child, f"{path}.{name}")
            if "items" in node:
                walk(node["items"], f"{path}[]")

        walk(schema, kind)
    ma = crd.crd("ModelAdaptation")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    source = ma["properties"]["spec"]["properties"]["data"]["properties"]["sources"]["items"]
    assert "exactly one of" in source["x-kubernetes-validations"][0]["message"]
    tau = ma["properties"]["spec"]["properties"]["gate"]["properties"]["tau"]
    assert tau["default"] == 0.96 and tau["exclusiveMinimum"] is True


def test_crds_parse_as_kubernetes_objects():
    for path in (REPO / "crds").glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        assert doc["kind"] == "CustomResourceDefinition"
        assert doc["metadata"]["name"].endswith(".pioneer.dev")


def test_every_crd_property_has_a_description_for_kubectl_explain():
    missing = []

    def walk(node, path):
        for key, child in (node.get("properties") or {}).items():
            if not child.get("description"):
                missing.append(f"{path}.{key}")
            walk(child, f"{path}.{key}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key], path + ("[]" if key == "items" else "{}"))

    for kind in crd.CRD_KINDS:
        walk(crd.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"], kind)
    assert missing == []


@pytest.mark.parametrize("override, field", [({"hyperparameters": {"nerBackend": "gliner"}}, "nerBackend")])
def test_a_spec_value_this_build_cannot_honour_is_refused_not_ignored(override, field):
    with pytest.raises(SpecError, match=field):
        parse_resource(tiny_adaptation(**override))
