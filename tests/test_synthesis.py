"""Cold start from a description: a teacher writes the data, through the real anthropic SDK and a loopback Messages API."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import pytest

from pioneer.cli import main

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "from-description.yaml"
PHRASES = {
    "billing": ["I was charged twice for order {n}", "why is there an extra fee on my invoice {n}", "refund the double payment on card {n}",
                "my bill shows {n} dollars more than the cart", "can I get a receipt for invoice {n}", "the payment for order {n} failed but money left my account"],
    "shipping": ["where is my parcel {n}", "order {n} has not arrived yet", "the tracking number {n} shows no movement",
                 "can you deliver order {n} to my office instead", "how long does shipping to zone {n} take", "the courier lost package {n}"],
    "returns": ["I want to send back order {n}", "how do I return the shoes from order {n}", "the item in order {n} is broken, I want to return it",
                "can I exchange order {n} for a bigger size", "print me a return label for order {n}", "the return window for order {n}, is it still open"],
}


def teacher(body: dict) -> dict:
    """Answers a write_examples call as a teacher would: distinct texts of the label asked for."""
    content = body["messages"][0]["content"]
    label = json.loads(content[content.index("<untrusted-data>") + 16:content.index("</untrusted-data>")])["label"]
    n = int(re.search(r"Write (\d+) inputs", content).group(1))
    rng = random.Random(f"{label}-{'eval' if 'eval batch' in content else 'train'}")
    texts = {rng.choice(PHRASES[label]).format(n=rng.randint(100, 99999)) for _ in range(n * 3)}
    return {"examples": sorted(texts)[:n]}


@pytest.fixture
def api(messages_api):
    messages_api.responder = teacher
    return messages_api


def test_a_description_and_labels_are_enough_for_a_cold_start(api, tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
    spec = tmp_path / "from-description.yaml"
    shutil.copy(EXAMPLE, spec)
    assert main(["run", str(spec), "--quiet"]) == 0
    root = tmp_path / "pioneer-artifacts" / "support-router"
    # 3 labels x (30 training examples, 10 evaluation examples in their own batch): six calls, each for one label
    assert len(api.requests) == 6 and all(r["tool_choice"] == {"type": "tool", "name": "write_examples"} for r in api.requests)
    prep = json.loads((root / "data" / "preparation.json").read_text())
    assert prep["synthesis"]["written"] == {"billing": 30, "shipping": 30, "returns": 30}
    assert prep["synthesis"]["evaluation"] == "synthesized batch" and prep["synthesis"]["usage"]["calls"] == 6
    evalset = [json.loads(line) for line in (root / "eval" / "evalset.jsonl").read_text().splitlines()]
    assert len(evalset) == 30 and {r["meta"]["batch"] for r in evalset} == {"eval"}
    # frozen before anything trained, and never trained on
    frozen_at = json.loads((root / "eval" / "manifest.json").read_text())["frozen_at"]
    state = json.loads((root / "state.json").read_text())
    trained = [a for a in state["attempts"] if a["spec"]["iteration"] > 0]
    assert trained and all(a["status"]["startedAt"] >= frozen_at for a in trained)
    eval_texts = {r["text"] for r in evalset}
    for a in trained:
        train = [json.loads(line) for line in (root / "attempts" / a["metadata"]["name"] / "train.jsonl").read_text().splitlines()]
        assert train and not eval_texts & {r["text"] for r in train}
    assert state["status"]["bestScore"] > state["status"]["baselineScore"]
    assert "Synthesis" in (root / "report" / "report.md").read_text()
    # a resumed run asks the teacher nothing again
    main(["run", str(spec), "--quiet"])
    assert len(api.requests) == 6


def test_without_sources_or_synthesis_the_spec_is_refused(write_spec):
    from conftest import tiny_adaptation

    assert main(["run", str(write_spec(tiny_adaptation(data={"sources": []}))), "--quiet"]) == 2


PEOPLE = ["Anna Berg", "Tom Hale", "Rita Moss", "Ivo Lind", "Mia Kane", "Otto Reyes", "Lena Park", "Sam Ortiz", "Ada Cole"]
CITIES = ["Paris", "Lagos", "Quito", "Oslo", "Hanoi", "Lima", "Perth", "Cairo", "Turin", "Accra"]
VERBS = ["visited", "left", "flew to", "wrote from", "moved to", "called from"]


def tagger(body: dict) -> dict:
    """Answers a write_sentences call: sentences holding the asked entity type, plus three a checker must refuse."""
    content = body["messages"][0]["content"]
    asked = json.loads(content[content.index("<untrusted-data>") + 16:content.index("</untrusted-data>")])["entityType"]
    n = int(re.search(r"Write (\d+) sentences", content).group(1))
    rng = random.Random(f"{asked}-{'eval' if 'eval batch' in content else 'train'}")
    sentences, seen = [], set()
    while len(sentences) < n:
        person, city, verb = rng.choice(PEOPLE), rng.choice(CITIES), rng.choice(VERBS).split()
        first, last = person.split()
        if asked == "PER":
            words, tags = [first, last, *verb, "home", "on", f"day{rng.randint(1, 999)}"], ["B-PER", "I-PER"] + ["O"] * (len(verb) + 3)
        else:
            words, tags = ["Someone", *verb, city, "on", f"day{rng.randint(1, 999)}"], ["O"] * (len(verb) + 1) + ["B-LOC", "O", "O"]
        if rng.random() < 0.5:  # the other type too
            words, tags = words + ["near", city if asked == "PER" else last], tags + ["O", "B-LOC" if asked == "PER" else "B-PER"]
        if " ".join(words) not in seen:
            seen.add(" ".join(words))
            sentences.append({"words": words, "tags": tags})
    bad = [{"words": ["Tom", "Hale", "left"], "tags": ["B-PER", "O"]},  # one tag short
           {"words": ["Tom", "visited", "Mars"], "tags": ["B-PER", "O", "B-PLANET"]},  # off the tag set
           {"words": ["Tom Hale", "left"], "tags": ["B-PER", "O"]}]  # a word with a space
    return {"sentences": bad + sentences[:n - len(bad)]}


def test_ner_from_a_description_writes_tagged_sentences_refuses_misaligned_ones_and_trains(messages_api, write_spec, tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", messages_api.url)
    messages_api.responder = tagger
    doc = {"apiVersion": "pioneer.dev/v1alpha1", "kind": "ModelAdaptation", "metadata": {"name": "travel"},
           "spec": {"task": {"description": "find the people and places in travel notes", "type": "ner", "labels": ["PER", "LOC"]},
                    "data": {"sources": [], "synthesis": {"minPerLabel": 60, "evalPerLabel": 12}, "evaluation": {"size": 24}},
                    "hyperparameters": {"epochs": 3, "learningRate": 3e-4, "batchSize": 16, "maxLength": 24},
                    "search": {"maxAttempts": 1, "parallelism": 1, "configurationsPerIteration": 1},
                    "artifacts": {"uri": str(tmp_path / "art")}}}
    assert main(["run", str(write_spec(doc)), "--quiet"]) == 0
    root = tmp_path / "art" / "travel"
    requests = messages_api.requests
    assert len(requests) == 4 and {r["tool_choice"]["name"] for r in requests} == {"write_sentences"}
    # the tool constrains tags to the task's types
    tags_schema = requests[0]["tools"][0]["input_schema"]["properties"]["sentences"]["items"]["properties"]["tags"]["items"]
    assert tags_schema["enum"] == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    syn = json.loads((root / "data" / "preparation.json").read_text())["synthesis"]
    # 3 of every answer refused by reason; a PER batch also tags places, so LOC is counted where it occurs
    assert syn["rejected"] == 12 and syn["rejectedBy"] == {"misaligned or off the tag set": 8, "a word empty or holding a space": 4}
    assert syn["written"]["PER"] >= 57 and syn["written"]["LOC"] >= 57 and syn["evaluation"] == "synthesized batch"
    evalset = [json.loads(line) for line in (root / "eval" / "evalset.jsonl").read_text().splitlines()]
    assert len(evalset) == 18 and {r["meta"]["batch"] for r in evalset} == {"eval"}  # 2 x (12 asked - 3 refused)
    assert all(r["meta"]["origin"] == "synthetic" for r in evalset)
    train = [json.loads(line) for line in (root / "attempts" / "travel-i1-a" / "train.jsonl").read_text().splitlines()]
    assert train and all(r["meta"]["origin"] == "synthetic" and r["meta"]["batch"] == "train" for r in train)
    assert not {r["text"] for r in evalset} & {r["text"] for r in train}
    state = json.loads((root / "state.json").read_text())
    frozen_at = json.loads((root / "eval" / "manifest.json").read_text())["frozen_at"]
    assert all(a["status"]["startedAt"] >= frozen_at for a in state["attempts"] if a["spec"]["iteration"] > 0)
    assert state["status"]["bestScore"] > 0.8 > state["status"]["baselineScore"]
    assert "misaligned or off the tag set 8" in (root / "report" / "report.md").read_text()


def explainer(body: dict) -> dict:
    """Answers write_rationales: a sound rationale for most problems, and three a checker must refuse."""
    problems = json.loads(body["messages"][0]["content"].split("<untrusted-data>")[1].split("</untrusted-data>")[0])["problems"]
    out = []
    for p in problems:
        n = int(re.search(r"Question (\d+)", p["input"]).group(1))
        rationale = {3: "The first option looks right, so the answer is A.",  # never reaches B
                     5: "Option y fits.\nAnswer: C",  # its own answer line names another answer
                     7: ""}.get(n, f"Option y is the one asked for in question {n}; that is option B.")
        out.append({"id": p["id"], "rationale": rationale})
    return {"rationales": out}


def test_chain_of_thought_rationales_are_written_for_examples_without_one_and_checked_against_the_answer(
        messages_api, tiny_decoder, write_spec, tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", messages_api.url)
    messages_api.responder = explainer
    rows = [{"text": f"Question {i}: pick y.\n A. x\n B. y\nAnswer:", "label": "B",
             **({"rationale": "y is option B."} if i >= 34 else {})} for i in range(40)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc = {"apiVersion": "pioneer.dev/v1alpha1", "kind": "ModelAdaptation", "metadata": {"name": "qa"},
           "spec": {"task": {"description": "Answer with a letter.", "type": "generation", "answerFormat": "answerLetter"},
                    "data": {"sources": [{"path": "qa.jsonl"}], "evaluation": {"size": 10}, "synthesis": {}},
                    "strategy": {"supervision": "chainOfThought"},
                    "hyperparameters": {"baseModel": tiny_decoder, "method": "lora", "loraRank": 4, "learningRate": 5e-3,
                                        "epochs": 2, "batchSize": 8, "maxLength": 64, "maxNewTokens": 24},
                    "search": {"maxAttempts": 1, "parallelism": 1, "configurationsPerIteration": 1},
                    "artifacts": {"uri": str(tmp_path / "art")}}}
    spec = write_spec(doc)
    assert main(["run", str(spec), "--quiet"]) == 0
    root = tmp_path / "art" / "qa"
    prep = json.loads((root / "data" / "preparation.json").read_text())
    pool = [json.loads(line) for line in (root / "data" / "pool.jsonl").read_text().splitlines()]
    own = sum(int(re.search(r"Question (\d+)", r["text"]).group(1)) >= 34 for r in pool)
    refusable = sum(int(re.search(r"Question (\d+)", r["text"]).group(1)) in (3, 5, 7) for r in pool)
    # only the held-out-free pool is explained, in batches of 10, and each refusal is counted by its reason
    assert prep["synthesis"]["rationales"] == {"needed": 30 - own, "written": 30 - own - refusable, "real": own}
    assert sum(prep["synthesis"]["rationalesRejected"].values()) == refusable
    assert len(messages_api.requests) == -(-(30 - own) // 10)
    assert "<untrusted-data>" in messages_api.requests[0]["messages"][0]["content"]
    train = [json.loads(line) for line in (root / "attempts" / "qa-i1-a" / "train.jsonl").read_text().splitlines()]
    by_n = {int(re.search(r"Question (\d+)", r["text"]).group(1)): r["meta"] for r in train}
    assert all("rationale" not in m for n, m in by_n.items() if n in (3, 5, 7))  # refused: learned directly
    written = [m for n, m in by_n.items() if n < 34 and n not in (3, 5, 7)]
    assert written and all(m["rationale_origin"] == "synthetic" and m["rationale"].endswith("option B.") for m in written)
    metrics = json.loads((root / "attempts" / "qa-i1-a" / "output" / "metrics.json").read_text())
    assert metrics["training"]["supervision"] == "chainOfThought"
    assert metrics["training"]["rationales"] == sum("rationale" in m for m in by_n.values())
    assert "Chain-of-thought rationales" in (root / "report" / "report.md").read_text()
    # a resumed run asks the teacher nothing again
    calls = len(messages_api.requests)
    main(["run", str(spec), "--quiet"])
    assert len(messages_api.requests) == calls


def test_chain_of_thought_without_a_teacher_needs_every_rationale(tiny_decoder, write_spec, tmp_path, capsys):
    rows = [{"text": f"Question {i}: pick y.\n A. x\n B. y\nAnswer:", "label": "B"} for i in range(20)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc = {"apiVersion": "pioneer.dev/v1alpha1", "kind": "ModelAdaptation", "metadata": {"name": "qa"},
           "spec": {"task": {"description": "Answer with a letter.", "type": "generation", "answerFormat": "answerLetter"},
                    "data": {"sources": [{"path": "qa.jsonl"}], "evaluation": {"size": 10}},
                    "strategy": {"supervision": "chainOfThought"}, "hyperparameters": {"baseModel": tiny_decoder},
                    "artifacts": {"uri": str(tmp_path / "art")}}}
    assert main(["run", str(write_spec(doc)), "--quiet"]) == 1
    assert re.search(r"(\d+) of \1 training examples have no 'rationale' field", capsys.readouterr().err)
    assert not (tmp_path / "art" / "qa" / "attempts").exists()  # refused before anything trained


GENERATION = {"description": "d", "type": "generation"}
NER = {"description": "d", "type": "ner", "metric": "entityF1"}


@pytest.mark.parametrize("change, message", [
    ({"task": GENERATION, "data": {"sources": [{"path": "x.jsonl"}], "synthesis": {}}}, "set strategy.supervision: chainOfThought"),
    ({"task": GENERATION, "data": {"sources": [], "synthesis": {}}, "strategy": {"supervision": "chainOfThought"}},
     "explains the sources' examples: give data.sources"),
    ({"strategy": {"supervision": "chainOfThought"}}, "chainOfThought applies to task.type generation"),
    ({"strategy": {"distillation": 1.0}}, "apply to production mode classification"),
    ({"task": NER, "data": {"sources": [], "synthesis": {}}}, "each entity type"),
])
def test_synthesis_and_strategy_values_that_would_do_nothing_are_refused(change, message):
    from pydantic import ValidationError

    from conftest import tiny_adaptation
    from pioneer.api.models import ModelAdaptationSpec

    doc = tiny_adaptation()["spec"] | change
    with pytest.raises(ValidationError, match=message):
        ModelAdaptationSpec.model_validate(doc)
