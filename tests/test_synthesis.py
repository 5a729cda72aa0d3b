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
