"""Embeddings for triage: each distinct text computed once, kept in the trace store for the next repair."""

import sqlite3

import numpy as np

from pioneer.data.embeddings import encoder_embedder, memoized
from pioneer.production.diagnosis import bounded_reference
from pioneer.traces import store as trace_store
from pioneer.traces.embedding_cache import EmbeddingCache


class CountingEmbedder:
    """A deterministic stand-in model: a text's vector comes from its characters; every text it embeds is counted."""

    def __init__(self, space="toy|v1"):
        self.space, self.seen = space, []

    def __call__(self, texts):
        self.seen += list(texts)
        out = np.zeros((len(texts), 8), dtype=np.float32)
        for i, t in enumerate(texts):
            for j, ch in enumerate(t):
                out[i, j % 8] += ord(ch) / 100
        return out


def test_a_second_preparation_embeds_only_the_texts_the_store_has_not_seen(tmp_path):
    engine = trace_store.connect(tmp_path / "traces.db")
    first_model = CountingEmbedder()
    first = memoized(first_model, EmbeddingCache(engine))
    vectors = first(["turn on the light", "turn on the light", "what time is it"])
    assert first_model.seen == ["turn on the light", "what time is it"]  # a repeated input is embedded once
    assert first.counts == {"texts": 3, "distinct": 2, "computed": 2}

    later_model = CountingEmbedder()
    later = memoized(later_model, EmbeddingCache(engine))  # another process: only the trace store is shared
    again = later(["what time is it", "turn on the light", "set an alarm"])
    assert later_model.seen == ["set an alarm"]
    np.testing.assert_array_equal(again[:2], vectors[[2, 0]])
    assert later.cache_record() == {"hits": 2, "stored": 1}


def test_vectors_of_another_embedding_space_are_never_served(tmp_path):
    engine = trace_store.connect(tmp_path / "traces.db")
    memoized(CountingEmbedder("model-a|max_length=64"), EmbeddingCache(engine))(["hello there"])
    other = CountingEmbedder("model-a|max_length=32")
    memoized(other, EmbeddingCache(engine))(["hello there"])
    assert other.seen == ["hello there"]


def test_a_read_only_trace_store_serves_what_it_holds_and_records_why_it_stored_nothing(tmp_path):
    path = tmp_path / "traces.db"
    memoized(CountingEmbedder(), EmbeddingCache(trace_store.connect(path)))(["known text"])
    read_only = trace_store.sa.create_engine("sqlite://", creator=lambda: sqlite3.connect(f"file:{path}?mode=ro", uri=True))
    model = CountingEmbedder()
    embed = memoized(model, EmbeddingCache(read_only))
    embed(["known text", "new text"])
    assert model.seen == ["new text"]
    record = embed.cache_record()
    assert record["hits"] == 1 and record["stored"] == 0 and "readonly" in record["write_error"]


def test_the_encoder_batches_by_length_and_returns_vectors_in_the_input_order():
    embed = encoder_embedder("minilm", batch_size=2)
    texts = ["a much longer request about the weather in paris next week", "hi", "book a table for two", "ok"]
    together = embed(texts)
    one_by_one = np.concatenate([embed([t]) for t in texts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    assert embed.space == "minilm|max_length=64|mean-pooled|l2"


def test_a_reference_above_its_bound_is_a_seeded_sample_of_parent_and_verified_examples_alike():
    parent = [(f"parent {i}", "a") for i in range(300)]
    verified = [(f"trace {i}", "b") for i in range(700)]
    record = {}
    reference, from_parent = bounded_reference(parent, verified, 200, seed=7, record=record)
    assert len(reference) == 200 and reference == bounded_reference(parent, verified, 200, seed=7, record={})[0]
    assert all(t.startswith("parent") for t, _ in reference[:from_parent]) and all(t.startswith("trace") for t, _ in reference[from_parent:])
    assert 30 < from_parent < 90  # about 30% of the sample, as in the union
    assert record["reference_sample"] == {"bound": 200, "parent_examples": 300, "verified_passing": 700, "kept": 200}
    small = {}
    assert bounded_reference(parent, verified, 5000, seed=7, record=small) == (parent + verified, 300) and small == {}


def test_the_deployed_models_answers_are_asked_once_per_model_and_text(tmp_path):
    from pioneer.traces.triage_cache import TriageCache

    asked: list[list[str]] = []

    def model(texts):
        asked.append(list(texts))
        return [{"output": t.upper(), "runner_up": None} for t in texts]

    engine = trace_store.connect(tmp_path / "t.db")
    answer = TriageCache(engine).memoized_answers("sha-a", model)
    assert [a["output"] for a in answer(["x", "y", "x"])] == ["X", "Y", "X"] and asked == [["x", "y"]]
    again = TriageCache(engine).memoized_answers("sha-a", model)  # another preparation, the same trace store
    assert [a["output"] for a in again(["y", "z"])] == ["Y", "Z"] and asked[-1] == ["z"]
    other = TriageCache(engine).memoized_answers("sha-b", model)  # another model's answers are its own
    other(["x"])
    assert asked[-1] == ["x"]


def test_stored_scores_are_served_per_reference_text_and_label_whether_few_or_most_are_asked(tmp_path):
    import math

    from pioneer.traces.triage_cache import TriageCache

    engine = trace_store.connect(tmp_path / "t.db")
    stored = [(f"request {i}", "lights_on", i / 100, 0.5, "lights_on", float("nan") if i == 3 else 0.9) for i in range(40)]
    TriageCache(engine).put_scores("ref-a", stored)
    TriageCache(engine).put_scores("ref-b", [("request 1", "lights_on", 0.0, 0.0, None, 0.0)])
    # most of what the reference holds is asked for (a repair after a few new traces): read in one range scan
    most = [(t, y) for t, y, *_ in stored[:30]] + [("request 1", "weather"), ("never scored", "lights_on")]
    found = TriageCache(engine).scores("ref-a", most)
    assert set(found) == set(most[:30])  # another label of a stored text, or a new text, is not served
    assert found[("request 7", "lights_on")] == (0.07, 0.5, "lights_on", 0.9) and math.isnan(found[("request 3", "lights_on")][3])
    # a few of many (looked up by key) give the same answers; another reference's scores are its own
    few = TriageCache(engine).scores("ref-a", [("request 7", "lights_on"), ("request 1", "weather")])
    assert list(few) == [("request 7", "lights_on")] and few[("request 7", "lights_on")] == found[("request 7", "lights_on")]
    other = TriageCache(engine).scores("ref-b", [("request 1", "lights_on")])
    assert list(other) == [("request 1", "lights_on")] and other[("request 1", "lights_on")] == (0.0, 0.0, None, 0.0)
    assert len(TriageCache(engine).scores("ref-c", most)) == 0  # a reference never scored serves nothing


def test_a_stored_answer_without_a_field_the_caller_needs_is_asked_again_and_replaced(tmp_path):
    from pioneer.traces.triage_cache import TriageCache

    asked: list[list[str]] = []
    engine = trace_store.connect(tmp_path / "t.db")
    old = TriageCache(engine).memoized_answers("sha-a", lambda texts: [{"output": t.upper()} for t in texts])
    old(["x", "y"])  # answers stored before they carried the ranking

    def model(texts):
        asked.append(list(texts))
        return [{"output": t.upper(), "ranked": [t.upper(), "OTHER"]} for t in texts]

    answer = TriageCache(engine).memoized_answers("sha-a", model, fields=("output", "ranked"))
    assert [a["ranked"] for a in answer(["x", "y"])] == [["X", "OTHER"], ["Y", "OTHER"]] and asked == [["x", "y"]]
    again = TriageCache(engine).memoized_answers("sha-a", model, fields=("output", "ranked"))
    assert again(["x"])[0]["ranked"] == ["X", "OTHER"] and asked == [["x", "y"]]  # replaced in the store, not asked again


def test_bfloat16_embeddings_are_computed_in_bfloat16_close_to_float32_and_cached_in_their_own_space():
    texts = ["what is my account balance", "play some jazz", "set an alarm for 7 am"]
    exact, fast = encoder_embedder("minilm"), encoder_embedder("minilm", precision="bfloat16")
    a, b = exact(texts), fast(texts)
    assert b.dtype == np.float32 and not np.array_equal(a, b)  # computed differently...
    assert (a * b).sum(axis=1).min() > 0.999  # ...to nearly the same vectors
    assert fast.space == exact.space + "|bfloat16"  # never served for float32 requests, nor the reverse
