"""GLiNER2 (``hyperparameters.backend: gliner2``): the span extractor of the paper's model family as a backend for NER and
classification. Tiny models are built from config on the offline MiniLM and trained a few steps with gliner2's own trainer;
they are saved, read back with ``from_pretrained``, served, and repaired in production mode under the gate."""

from __future__ import annotations

import json
import random

import pytest

from pioneer import defaults as d
from pioneer.api.validation import SpecError, deprecations, parse_resource
from pioneer.trainer.gliner2_ner import mentions, tags_from_spans
from test_ner import CITIES, PEOPLE, sentence

pytest.importorskip("gliner2.training", reason="the 'gliner' extra (gliner2[train]) is not installed")


def adaptation(**hp) -> dict:
    return {"apiVersion": "pioneer.dev/v1alpha1", "kind": "ModelAdaptation", "metadata": {"name": "x"},
            "spec": {"task": {"description": "find people", "type": "ner"}, "data": {"sources": [{"path": "d.conll"}]},
                     "hyperparameters": hp}}


# --------------------------------------------------------------------------- the API


def test_backend_replaces_ner_backend_which_still_reads_and_is_reported_as_deprecated():
    old = parse_resource(adaptation(nerBackend="tokenClassification"))
    assert old.spec.hyperparameters.backend == "transformers"
    assert deprecations(old) == ["spec.hyperparameters.nerBackend: hyperparameters.nerBackend is deprecated: use hyperparameters.backend "
                                 "(transformers or gliner2)"]
    assert deprecations(parse_resource(adaptation(backend="gliner2"))) == []
    # read once: a derived attempt that switches backend does not carry the old field into a contradiction
    hp = old.spec.hyperparameters
    assert hp.ner_backend is None and type(hp).model_validate(hp.model_copy(update={"backend": "gliner2"}).model_dump()).backend == "gliner2"
    with pytest.raises(SpecError, match="nerBackend: tokenClassification .deprecated. contradicts backend: gliner2"):
        parse_resource(adaptation(nerBackend="tokenClassification", backend="gliner2"))


def test_gliner_v1_is_refused_with_the_measured_reason_and_gliner2_is_not_a_generation_backend():
    with pytest.raises(SpecError, match="gliner-py 0.2.27 builds a model that it cannot load back"):
        parse_resource(adaptation(nerBackend="gliner"))
    doc = adaptation(backend="gliner2")
    doc["spec"]["task"]["type"] = "generation"
    with pytest.raises(SpecError, match="gliner2 trains classification and ner tasks, not generation"):
        parse_resource(doc)


def test_pioneer_validate_prints_the_deprecation(tmp_path, capsys):
    import yaml

    from pioneer.cli import main

    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(adaptation(nerBackend="tokenClassification")))
    assert main(["validate", str(path)]) == 0
    assert "deprecated" in capsys.readouterr().err


def test_without_the_extra_a_gliner2_attempt_fails_naming_it(monkeypatch):
    import builtins

    from pioneer.trainer import gliner2_model

    real = builtins.__import__

    def no_gliner2(name, *args, **kwargs):
        if name.startswith("gliner2"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gliner2)
    with pytest.raises(gliner2_model.Gliner2Unavailable, match=r"pip install 'pioneer\[gliner\]'"):
        gliner2_model.require()


def test_a_gliner2_folder_without_its_task_metadata_is_refused_for_serving_not_misread(tmp_path):
    from pioneer import inference

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "extractor", "architecture": "span"}))
    with pytest.raises(ValueError, match="GLiNER2 model without pioneer-model.json"):
        inference.read(tmp_path)


# --------------------------------------------------------------------------- BIO <-> spans


def test_bio_tags_become_gliner2_mentions_with_every_type_listed():
    assert mentions("Anna Berg met Tom in Oslo", "B-PER I-PER O B-PER O B-LOC", ["PER", "LOC", "ORG"]) == {
        "PER": ["Anna Berg", "Tom"], "LOC": ["Oslo"], "ORG": []}
    assert mentions("Oslo Oslo", "B-LOC B-LOC", ["LOC"]) == {"LOC": ["Oslo", "Oslo"]}  # adjacent entities stay apart


def test_spans_become_word_tags_at_the_threshold_and_overlaps_go_to_the_more_confident():
    text = "Anna Berg visited Paris today"
    spans = [(0, 9, "PER", 0.9), (0, 4, "LOC", 0.4), (18, 23, "LOC", 0.6), (18, 23, "PER", 0.2)]
    assert tags_from_spans(text, spans, 0.5) == (["B-PER", "I-PER", "O", "B-LOC", "O"], pytest.approx(0.6))
    # at 0.7 Paris is left out: the answer's confidence is the least certain decision (1 - 0.6)
    assert tags_from_spans(text, spans, 0.7) == (["B-PER", "I-PER", "O", "O", "O"], pytest.approx(0.4))
    assert tags_from_spans(text, [], 0.5) == (["O"] * 5, 1.0)


def test_texts_are_scored_shortest_first_and_answered_in_the_callers_order():
    from pioneer.trainer.gliner2_ner import candidate_spans

    class Extractor:  # answers each text with one span covering it, and remembers the order it was asked in
        def batch_extract_entities(self, texts, types, **_):
            self.asked = list(texts)
            return [{"entities": {"PER": [{"start": 0, "end": len(t), "confidence": 0.9}]}} for t in texts]

    texts = ["a much longer sentence here", "hi", "medium one"]
    model = Extractor()
    assert candidate_spans(model, texts, ["PER"], 32, 0.1) == [[(0, len(t), "PER", 0.9)] for t in texts]
    assert model.asked == ["hi", "medium one", "a much longer sentence here"]


# --------------------------------------------------------------------------- tiny real models


def _names_conll(path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        ex = sentence(rng.choice(PEOPLE) if i % 4 else None, rng.choice(CITIES) if i % 3 else None)
        lines += [f"{w} {t}" for w, t in zip(ex.text.split(" ") + [str(i)], ex.label.split(" ") + ["O"])] + [""]
    path.write_text("\n".join(lines))


GLINER2_HP = {"backend": "gliner2", "learningRate": 1e-4, "taskLearningRate": 3e-3, "batchSize": 8, "maxLength": 24}


def _served(python, tmp_path, artifacts, name, texts):
    import httpx

    from conftest import start_server

    proc, url = start_server(python, tmp_path, artifacts, name)
    try:
        with httpx.Client(timeout=60) as http:
            return [http.post(f"{url}/predict", json={"input": t}).json() for t in texts]
    finally:
        proc.terminate()
        proc.wait(15)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_lora_steps_encoder_adapters_at_the_learning_rate_and_the_heads_in_full_at_the_task_rate(method, tmp_path):
    from gliner2.training import Classification, InputExample

    from pioneer.api.models import Hyperparameters
    from pioneer.trainer import gliner2_model as g2

    hp = Hyperparameters(**{**GLINER2_HP, "method": method, "loraRank": 4, "epochs": 1})
    model, _ = g2.load("minilm", seed=0)
    encoder = sum(p.numel() for n, p in model.named_parameters() if n.startswith("encoder."))
    heads = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("encoder."))
    examples = [InputExample(text=t, classifications=[Classification(task="label", labels=["ham", "spam"], true_label=y)])
                for t, y in [("win a prize", "spam"), ("see you soon", "ham")] * 4]
    trained, facts = g2.train(model, examples, hp, seed=0, workdir=tmp_path)
    groups = {g["part"]: g for g in facts["optimizer_groups"]}
    assert set(groups) == {"encoder", "heads"}
    assert groups["encoder"]["lr"] == hp.learning_rate and groups["heads"]["lr"] == hp.task_learning_rate
    assert groups["heads"]["parameters"] == heads  # the task heads train in full either way
    if method == "lora":  # only the adapters: a small fraction of the encoder, its embeddings and weights frozen
        assert 0 < groups["encoder"]["parameters"] < 0.05 * encoder
        # merged before it is returned: a plain model, saved as a plain GLiNER2 checkpoint with no adapter files
        assert not any("lora_" in n for n, _ in trained.named_parameters())
        g2.save(trained, tmp_path / "model")
        assert (tmp_path / "model" / "model.safetensors").is_file() and not list((tmp_path / "model").glob("adapter_*"))
    else:
        assert groups["encoder"]["parameters"] == encoder


def test_the_boundary_architecture_is_built_from_config_trained_saved_and_reloaded_as_itself(tmp_path):
    from gliner2.auto import AutoExtractor
    from gliner2.training import InputExample

    from pioneer.api.models import Hyperparameters
    from pioneer.trainer import gliner2_model as g2

    hp = Hyperparameters(**{**GLINER2_HP, "gliner2Architecture": "boundary", "epochs": 1})
    model, origin = g2.load("minilm", seed=0, architecture=hp.gliner2_architecture)
    assert origin == "built from config on minilm (boundary)"
    examples = [InputExample(text=f"{p} lives in {c}", entities={"PER": [p], "LOC": [c]})
                for p, c in zip(PEOPLE[:8], CITIES[:8])]
    trained, facts = g2.train(model, examples, hp, seed=0, workdir=tmp_path)
    assert facts["steps"] == 1
    g2.save(trained, tmp_path / "model")
    assert AutoExtractor.from_pretrained(str(tmp_path / "model")).architecture == "boundary"
    # a checkpoint keeps the architecture it was saved with, whatever the spec asks of a model built from config
    assert g2.load(str(tmp_path / "model"), seed=0, architecture="span")[0].architecture == "boundary"


@pytest.mark.slow
def test_a_gliner2_tagger_is_trained_saved_reloaded_and_served_as_scored(write_spec, tmp_path, python):
    # the default architecture end to end (boundary); the span extractor is trained through `pioneer run` as the
    # deployed tagger of test_gliner2_repair
    from gliner2.auto import AutoExtractor

    from pioneer import inference
    from pioneer.cli import main

    _names_conll(tmp_path / "names.conll", 160, 1)
    doc = {"apiVersion": "pioneer.dev/v1alpha1", "kind": "ModelAdaptation", "metadata": {"name": "names"},
           "spec": {"task": {"description": "find people and places", "type": "ner"},
                    "data": {"sources": [{"path": "names.conll"}], "evaluation": {"size": 30}},
                    "hyperparameters": {**GLINER2_HP, "epochs": 6},
                    "search": {"maxAttempts": 1, "parallelism": 1, "configurationsPerIteration": 1},
                    "gate": {"tau": 0.05}, "deployedModel": "names", "artifacts": {"uri": str(tmp_path / "art")}}}
    assert main(["run", str(write_spec(doc)), "--quiet"]) == 0
    attempt = tmp_path / "art" / "names" / "attempts" / "names-i1-a"
    metrics = json.loads((attempt / "output" / "metrics.json").read_text())
    training = metrics["training"]
    assert training["backend"] == "gliner2" and training["initialised"] == f"built from config on minilm ({d.GLINER2_ARCHITECTURE})"
    assert training["trainer"] == "gliner2.training.ExtractorTrainer" and training["steps"] > 0
    assert metrics["metric"] == "entityF1" and metrics["score"] > 0.8
    assert {"false_positives", "false_negatives", "per_label"} <= set(metrics)
    chosen = next(c for c in metrics["threshold_curve"] if c["threshold"] == metrics["threshold"])
    assert chosen["f1"] == max(c["f1"] for c in metrics["threshold_curve"])  # the sweep keeps the best threshold
    model_dir = attempt / "output" / "model"
    assert type(AutoExtractor.from_pretrained(str(model_dir))).__name__ == {"span": "SpanExtractor", "boundary": "BoundaryExtractor"}[d.GLINER2_ARCHITECTURE]
    saved = json.loads((model_dir / "pioneer-model.json").read_text())
    assert saved["backend"] == "gliner2" and json.loads((model_dir / "pioneer_ner.json").read_text())["threshold"] == metrics["threshold"]
    assert inference.load(model_dir).threshold == metrics["threshold"]

    scored = [json.loads(x) for x in (attempt / "output" / "predictions.jsonl").read_text().splitlines()]
    served = _served(python, tmp_path, tmp_path / "art", "names", [r["text"] for r in scored])
    assert [s["prediction"] for s in served] == [r["prediction"] for r in scored]  # train/serve parity
    assert all(0 < s["confidence"] <= 1 and s["revision"] == 1 for s in served)


def test_the_claude_planner_may_switch_backend_only_to_one_the_spec_allows():
    from pioneer.core.advice import _refusal

    changes = {"hyperparameters": {"backend": "gliner2"}}
    assert _refusal(changes, {"minilm"}, {"transformers", "gliner2"}) is None
    assert "neither the spec's backend nor one of search.backends" in _refusal(changes, {"minilm"}, {"transformers"})
