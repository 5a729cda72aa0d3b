"""NER: CoNLL reading, the evaluation set, entity diversification, hard negatives, entity-level metrics
with false positives and false negatives apart, the threshold sweep, and the trainer end to end."""

from __future__ import annotations

import json
import random

import pytest

from pioneer.api.models import DataRecipe, DataSource
from pioneer.data.bio import alignment_problem, tag_set
from pioneer.data.conll import read_conll
from pioneer.data.examples import DataError, Example
from pioneer.data.ner_curation import build_ner_eval_set, build_ner_training_set, diversify_entities, entity_values, spans
from pioneer.data.sources import parse_examples
from pioneer.trainer.casing import case_class
from pioneer.trainer.ner import decode, validate_row
from pioneer.trainer.ner_metrics import error_counts, ner_metrics, threshold_curve

PEOPLE = ["Anna Berg", "Tom Hale", "Rita Moss", "Ivo Lind", "Mia Kane", "Otto Reyes", "Lena Park", "Sam Ortiz"]
CITIES = ["Paris", "Lagos", "Quito", "Oslo", "Hanoi", "Lima", "Perth", "Cairo"]


def sentence(person: str | None, city: str | None) -> Example:
    words, tags = [], []
    if person:
        first, last = person.split()
        words += [first, last, "visited"]
        tags += ["B-PER", "I-PER", "O"]
    else:
        words += ["Nobody", "visited"]
        tags += ["O", "O"]
    words += [city or "home", "today", "."]
    tags += ["B-LOC" if city else "O", "O", "O"]
    return Example(" ".join(words), " ".join(tags))


def corpus(n: int, seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = i % 5
        out.append(sentence(rng.choice(PEOPLE) if kind != 4 else None, rng.choice(CITIES) if kind not in (3, 4) else None))
    return [Example(ex.text + f" #{i}" , ex.label + " O") for i, ex in enumerate(out)]  # unique texts


def test_conll_reader_and_its_errors():
    raw = b"-DOCSTART- -X- O\n\nEU NNP B-ORG\nrejects VBZ O\n\nPeter NNP B-PER\nBlackburn NNP I-PER\n"
    assert read_conll("x", raw) == [(["EU", "rejects"], ["B-ORG", "O"]), (["Peter", "Blackburn"], ["B-PER", "I-PER"])]
    with pytest.raises(DataError, match=r"x:2: tag 'PER' is not BIO"):
        read_conll("x", b"Peter NNP B-PER\nBlackburn NNP PER\n")


def test_jsonl_word_lists_and_misaligned_rows():
    src = DataSource(path="d.jsonl", text_field="tokens", label_field="tags")
    ok = b'{"tokens": ["Anna", "sings"], "tags": ["B-PER", "O"]}\n'
    assert parse_examples("d.jsonl", ok, src, "ner")[0].label == "B-PER O"
    with pytest.raises(DataError, match=r"d.jsonl:1: 2 words but 1 tags"):
        parse_examples("d.jsonl", b'{"tokens": ["Anna", "sings"], "tags": ["B-PER"]}\n', src, "ner")
    with pytest.raises(DataError, match="need task.type ner"):
        parse_examples("d.conll", b"Anna B-PER\n", DataSource(path="d.conll"), "classification")


def test_one_bio_rule_for_readers_and_trainer():
    assert alignment_problem(["Anna", "sings"], ["B-PER", "O"]) is None
    assert "not BIO" in alignment_problem(["Anna"], ["PER"])
    assert "not BIO" in alignment_problem(["Anna"], ["B-"])
    # the trainer also knows the attempt's entity types: a tag of another type is refused
    assert alignment_problem(["Anna"], ["B-PER"], ["LOC"]) == "tag(s) ['B-PER'] are not BIO (O, B-/I- of ['LOC'])"
    assert validate_row({"text": "Anna sings", "label": "B-PER"}, ["PER"]).startswith("2 words but 1 tags")


def test_eval_set_has_positives_negatives_and_boundary_sentences_covering_every_type():
    pool = corpus(200)
    pool.append(Example("Paris Hilton sang .", "B-PER I-PER O O"))  # "Paris" is also a LOC: confusable surface form
    pool.append(Example("Paris said so .", "B-PER O O O"))
    ev, record = build_ner_eval_set(pool, 40, 0.1, seed=0)
    roles = {ex.role for ex in ev}
    assert len(ev) == 40 and roles == {"positive", "negative", "boundary"}
    assert set(record["labels"]) == {"PER", "LOC"}
    assert all(spans(ex) == [] for ex in ev if ex.role == "negative")
    assert all(any(v.lower() == "paris" for _, v in entity_values(ex)) for ex in ev if ex.role == "boundary")


def test_entity_diversification_caps_repeats_with_same_type_substitutes():
    pool = [sentence("Anna Berg", city) for city in CITIES] * 2 + [sentence(p, "Lima") for p in PEOPLE]
    out, record = diversify_entities(pool, 3, random.Random(0))
    counts: dict = {}
    for ex in out:
        assert len(ex.text.split(" ")) == len(ex.label.split(" "))  # tags stay aligned after a substitution
        for t, v in entity_values(ex):
            counts[(t, v)] = counts.get((t, v), 0) + 1
    assert max(counts.values()) <= 3
    assert {t for t, _ in counts} == {"PER", "LOC"} and all(v in PEOPLE for t, v in counts if t == "PER")
    assert record.details["replaced"]["PER"] >= 13 - 3  # 16 x Anna Berg -> at most 3 left


def test_hard_negatives_are_entity_free_near_misses_first():
    near_misses = [Example(f"The Committee met on Monday {i} .", "O O O O O O O") for i in range(5)]
    pool = corpus(100) + near_misses  # 20 plain entity-free sentences ("Nobody visited home ...") and 5 near misses
    recipe = DataRecipe(max_examples=50, hard_negative_share=0.2, max_label_ratio=3, near_duplicate_similarity=0.9)
    training, records = build_ner_training_set(pool, recipe)
    hard = [ex for ex in training if ex.role == "hard_negative"]
    assert len(training) == 50 and len(hard) == 10
    assert all(not spans(ex) for ex in hard)
    assert {ex.text for ex in near_misses} <= {ex.text for ex in hard}  # the sentences that look like they hold names go first
    assert next(r for r in records if r["rule"] == "hard-negatives")["details"]["near_misses"] == 5


def test_false_positives_and_false_negatives_are_counted_apart():
    truth = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "O"]]
    c = error_counts(truth, pred)
    assert (c["true_positives"], c["false_positives"], c["false_negatives"]) == (1, 1, 1)
    m = ner_metrics(truth, pred)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.5) and m["fp_fn_ratio"] == 1.0
    assert {"label": "LOC", "prediction": "O", "count": 1} in m["failure_patterns"]
    assert {"label": "O", "prediction": "ORG", "count": 1} in m["failure_patterns"]


def test_threshold_trades_false_positives_for_false_negatives():
    import numpy as np

    tags = tag_set(["PER"])
    probs = [np.array([[0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.9, 0.1, 0.0]])]  # sure entity, doubtful entity, O
    assert decode(probs[0], tags, 0.5) == ["B-PER", "O", "O"]
    assert decode(probs[0], tags, 0.3) == ["B-PER", "B-PER", "O"]
    truth = [["B-PER", "O", "O"]]
    curve = threshold_curve(truth, lambda t: [decode(p, tags, t) for p in probs], [0.05, 0.3, 0.5, 0.9])
    assert [c["false_positives"] for c in curve] == [2, 1, 0, 0]
    assert [c["false_negatives"] for c in curve] == [0, 0, 0, 1]


def test_decoding_never_emits_an_inside_tag_without_its_start():
    import numpy as np

    tags = tag_set(["PER", "LOC"])  # O, B-PER, I-PER, B-LOC, I-LOC
    doubtful_start = [0.6, 0.4, 0.0, 0.0, 0.0]
    confident_inside = [0.3, 0.1, 0.6, 0.0, 0.0]
    assert decode(np.array([doubtful_start, confident_inside]), tags, 0.5) == ["B-PER", "I-PER"]
    other_type_inside = [0.3, 0.0, 0.0, 0.0, 0.7]
    assert decode(np.array([[0.1, 0.9, 0, 0, 0], other_type_inside]), tags, 0.5) == ["B-PER", "O"]
    assert decode(np.array([other_type_inside]), tags, 0.5) == ["O"]  # a sentence cannot start inside an entity


def test_case_classes():
    assert [case_class(w) for w in ["the", "Paris", "NATO", "McDonald", "1996", "U.S."]] == [0, 1, 2, 3, 0, 2]


def test_cold_start_ner_end_to_end_with_threshold_sweep_and_report(write_spec, tmp_path, python):
    from pioneer.cli import main
    from pioneer.trainer.ner import load_trained, predict

    rng = random.Random(1)
    lines = []
    for i in range(160):
        ex = sentence(rng.choice(PEOPLE) if i % 4 else None, rng.choice(CITIES) if i % 3 else None)
        lines += [f"{w} {t}" for w, t in zip(ex.text.split(" ") + [str(i)], ex.label.split(" ") + ["O"])] + [""]
    (tmp_path / "names.conll").write_text("\n".join(lines))
    doc = {"apiVersion": "pioneer.dev/v1alpha1", "kind": "ModelAdaptation", "metadata": {"name": "names"},
           "spec": {"task": {"description": "find people and places", "type": "ner"},
                    "data": {"sources": [{"path": "names.conll"}], "evaluation": {"size": 30}},
                    "hyperparameters": {"epochs": 2, "learningRate": 3e-4, "batchSize": 16, "maxLength": 24},
                    "search": {"maxAttempts": 1, "parallelism": 1, "configurationsPerIteration": 1},
                    "gate": {"tau": 0.05}, "deployedModel": "names",
                    "artifacts": {"uri": str(tmp_path / "art")}}}
    assert main(["run", str(write_spec(doc)), "--quiet"]) == 0
    attempt = tmp_path / "art" / "names" / "attempts" / "names-i1-a"
    metrics = json.loads((attempt / "output" / "metrics.json").read_text())
    assert metrics["metric"] == "entityF1" and metrics["score"] > 0.8
    assert {"false_positives", "false_negatives", "precision", "recall", "per_label"} <= set(metrics)
    assert [c["threshold"] for c in metrics["threshold_curve"]][:2] == [0.1, 0.15]
    chosen = next(c for c in metrics["threshold_curve"] if c["threshold"] == metrics["threshold"])
    assert chosen["f1"] == max(c["f1"] for c in metrics["threshold_curve"])  # the sweep keeps the best threshold
    assert metrics["training"]["casing_feature"] is True  # MiniLM is uncased: capitalisation comes in as token types
    tokenizer, model, threshold = load_trained(attempt / "output" / "model")
    assert threshold == metrics["threshold"]
    assert predict(model, tokenizer, ["Rita Moss visited Oslo today ."], 24, threshold) == ["B-PER I-PER O B-LOC O O"]
    report = (tmp_path / "art" / "names" / "report" / "report.md").read_text()
    assert "threshold-curve.png" in report and "false positives" in report

    # train/serve parity: the promoted tagger, served over HTTP, tags the evaluation sentences exactly as scored
    import httpx

    from conftest import start_server

    scored = [json.loads(x) for x in (attempt / "output" / "predictions.jsonl").read_text().splitlines()]
    proc, url = start_server(python, tmp_path, tmp_path / "art", "names")
    try:
        with httpx.Client(timeout=60) as http:
            served = [http.post(f"{url}/predict", json={"input": r["text"]}).json() for r in scored]
    finally:
        proc.terminate()
        proc.wait(15)
    assert [s["prediction"] for s in served] == [r["prediction"] for r in scored]
    assert all(0 < s["confidence"] <= 1 and s["revision"] == 1 for s in served)
