"""Triage that grows with the log: exact k-NN in blocks, scores per distinct text, traces streamed from the store.

The numbers a preparation computes at a million traces must be the numbers the plain definition gives: the mean
similarity to the k nearest trusted examples (all of them, or one label's), a trusted copy of the input's own
text never voting. These tests hold the blocked, grouped, chunked computation to a dense one written from the
definition.
"""

from __future__ import annotations

import multiprocessing
import random
import sqlite3

import numpy as np
import pytest
import sqlalchemy as sa

import smart_home
from pioneer import defaults as d
from pioneer.data.embeddings import memoized
from pioneer.production import diagnosis
from pioneer.production.diagnosis import LabelSupport, _reference_quality, top_k_similar, triage
from pioneer.traces import store as trace_store
from pioneer.traces.embedding_cache import EmbeddingCache


def random_unit_vectors(texts: list[str], dim: int = 16) -> np.ndarray:
    """A deterministic embedder: each text gets a fixed random unit vector (its own seed)."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, t in enumerate(texts):
        v = np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(dim)
        out[i] = v / np.linalg.norm(v)
    return out


def dense_mean_top_k(sims: np.ndarray, k: int) -> np.ndarray:
    """The definition: mean of a row's k largest finite similarities (NaN when it has none)."""
    out = np.full(len(sims), np.nan)
    for r, row in enumerate(sims):
        finite = np.sort(row[np.isfinite(row)])[::-1][:k]
        if len(finite):
            out[r] = finite.mean()
    return out


def dense_supports(queries: list[str], reference: list[tuple[str, str]], k: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    texts, labels = [t for t, _ in reference], [y for _, y in reference]
    classes = sorted(set(labels))
    sims = random_unit_vectors(queries) @ random_unit_vectors(texts).T
    for r, q in enumerate(queries):
        sims[r, [j for j, t in enumerate(texts) if t == q]] = -np.inf  # the input's own text never votes
    per_label = np.stack([dense_mean_top_k(sims[:, [j for j, y in enumerate(labels) if y == c]], k) for c in classes], axis=1)
    return per_label, dense_mean_top_k(sims, k), classes


@pytest.fixture
def reference() -> list[tuple[str, str]]:
    rng = random.Random(3)
    rows = [(f"request {i} for {y}", y) for i, y in enumerate(rng.choice("abcdefg") for _ in range(1200))]
    return rows + [("request 7 for " + rows[7][1], "b"), (rows[11][0], rows[11][1])]  # a text twice, one under two labels


def test_blocked_label_support_equals_the_dense_definition_on_every_row_and_label(reference, monkeypatch):
    monkeypatch.setattr(diagnosis, "BLOCK_ROWS", 37)  # many blocks, a ragged last one
    queries = [t for t, _ in reference[:300]] + [f"new input {i}" for i in range(200)]
    checker = LabelSupport(random_unit_vectors, [t for t, _ in reference], [y for _, y in reference])
    per_label, domain = checker.supports(random_unit_vectors(queries), queries)
    want_labels, want_domain, classes = dense_supports(queries, reference, checker.k)
    assert checker.classes == classes
    np.testing.assert_allclose(per_label, want_labels, rtol=0, atol=1e-6)
    np.testing.assert_allclose(domain, want_domain, rtol=0, atol=1e-6)
    # the reference scores itself leave-one-out by the same definition
    own_labels, own_domain, _ = dense_supports([t for t, _ in reference], reference, checker.k)
    np.testing.assert_allclose(checker.reference_domain, own_domain, rtol=0, atol=1e-6)
    margins = checker.margins(own_labels, [y for _, y in reference])
    np.testing.assert_allclose(checker.reference_margin, margins, rtol=0, atol=1e-6)


def test_per_label_supports_are_computed_only_for_the_rows_that_need_them(reference):
    queries = [f"input {i}" for i in range(90)]
    checker = LabelSupport(random_unit_vectors, [t for t, _ in reference], [y for _, y in reference])
    wanted = np.zeros(len(queries), dtype=bool)
    wanted[::3] = True
    some, domain = checker.supports(random_unit_vectors(queries), queries, per_label_rows=wanted)
    every, domain_all = checker.supports(random_unit_vectors(queries), queries)
    np.testing.assert_array_equal(domain, domain_all)
    np.testing.assert_array_equal(some[wanted], every[wanted])
    assert np.isnan(some[~wanted]).all()


def test_margins_and_best_labels_follow_their_definitions_row_by_row():
    checker = LabelSupport(random_unit_vectors, [f"t{i}" for i in range(60)], [["x", "y", "z"][i % 3] for i in range(60)])
    per_label = np.array([[0.5, 0.2, np.nan], [np.nan, np.nan, np.nan], [0.1, 0.4, 0.3], [0.7, np.nan, np.nan]])
    labels = ["x", "x", "z", "x"]
    np.testing.assert_allclose(checker.margins(per_label, labels), [0.3, np.nan, -0.1, 0.7])  # no other support: margin against 0
    assert np.isnan(checker.margins(per_label, ["not a class"] * 4)).all()
    assert checker.best_label(per_label) == ["x", None, "y", "x"]


def test_top_k_similarity_in_blocks_equals_one_dense_product():
    rng = np.random.default_rng(0)
    queries, keys = rng.standard_normal((1000, 8)).astype(np.float32), rng.standard_normal((300, 8)).astype(np.float32)
    np.testing.assert_allclose(top_k_similar(queries, keys, 3, block=64), dense_mean_top_k(queries @ keys.T, 3), atol=1e-5)


def test_top_k_similarity_over_distinct_keys_with_their_counts_equals_it_over_every_copy():
    rng = np.random.default_rng(1)
    for trial in range(200):
        keys = np.round(rng.standard_normal((int(rng.integers(1, 12)), 4)), 1).astype(np.float32)  # rounded: ties
        if trial % 7 == 0:
            keys[0, 0] = np.nan  # a key no query can measure against
        counts = rng.integers(1, 4, size=len(keys))
        queries = np.round(rng.standard_normal((9, 4)), 1).astype(np.float32)
        for k in (1, 3, 5, 40):
            np.testing.assert_allclose(top_k_similar(queries, keys, k, counts=counts),
                                       top_k_similar(queries, np.repeat(keys, counts, axis=0), k), atol=1e-6)


def traffic(seed: int = 0) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    rows = smart_home.sample(40, seed=seed)
    fail = [{"id": f"f{i}", "text": t, "prediction": rng.choice([x for x in smart_home.LABELS if x != y]), "corrected": y}
            for i, (t, y) in enumerate(rows[:60])]
    ok = [{"id": f"p{i}", "text": t, "prediction": y} for i, (t, y) in enumerate(rows[60:260])]
    return fail, ok


def test_scoring_in_chunks_decides_exactly_as_scoring_at_once(monkeypatch):
    failures, passing = traffic()
    reference = smart_home.sample(150, seed=1)

    def decisions():
        res = triage(failures, passing, smart_home.LABELS, seed=0, reference=reference)
        return ({t["id"]: (t["reason"], t["p_value"]) for t in res.external + res.screened},
                [(t["id"], t.get("p_value")) for t in res.fixable])
    at_once = decisions()
    monkeypatch.setattr(d, "TRIAGE_SCORE_CHUNK", 7)
    assert decisions() == at_once


def test_a_pair_stored_from_a_passing_trace_is_scored_again_when_a_failure_needs_its_label_support(tmp_path):
    from pioneer.traces.triage_cache import TriageCache

    engine = trace_store.connect(tmp_path / "t.db")
    reference = smart_home.sample(150, seed=1)
    text, label = "turn the kitchen lights on please", "lights_on"
    passing = [{"id": "p0", "text": text, "prediction": label}] + traffic()[1]
    failures = traffic()[0]
    triage(failures, passing, smart_home.LABELS, reference=reference, cache=TriageCache(engine), cache_key="k")
    again = triage(failures + [{"id": "f-new", "text": text, "prediction": "weather", "corrected": label}], passing, smart_home.LABELS,
                   reference=reference, cache=TriageCache(engine), cache_key="k")
    fresh = triage(failures + [{"id": "f-new", "text": text, "prediction": "weather", "corrected": label}], passing, smart_home.LABELS,
                   reference=reference)
    kept = {t["id"]: t.get("p_value") for t in again.fixable}
    assert kept["f-new"] == {t["id"]: t.get("p_value") for t in fresh.fixable}["f-new"]  # its margin was computed, not read as none


def test_with_a_trace_store_the_embedder_keeps_no_vectors_between_calls(tmp_path):
    calls: list[list[str]] = []

    def model(texts):
        calls.append(list(texts))
        return random_unit_vectors(texts)
    model.space = "toy|v1"
    cache = EmbeddingCache(trace_store.connect(tmp_path / "t.db"))
    embed = memoized(model, cache)
    first = embed(["a", "b", "a"])
    second = embed(["b", "c"])
    assert calls == [["a", "b"], ["c"]]  # each text computed once
    np.testing.assert_array_equal(second[0], first[1])
    assert cache.record()["hits"] == 1  # "b" the second time came from the store, not from the process


def test_the_label_quality_fits_give_the_same_scores_in_parallel_processes_as_in_one():
    reference = smart_home.sample(30, seed=2)
    texts, labels = [t for t, _ in reference], [y for _, y in reference]
    alone, model_alone = _reference_quality(texts, labels, seed=0, fit_all=True, processes=1)
    parallel, model_parallel = _reference_quality(texts, labels, seed=0, fit_all=True, processes=2)
    np.testing.assert_array_equal(alone, parallel)
    np.testing.assert_array_equal(model_alone.predict_proba(texts[:20]), model_parallel.predict_proba(texts[:20]))
    assert multiprocessing.active_children() == []  # the workers are gone: none idles on, none holds the process's exit


def test_the_preparation_streams_judged_traces_in_chunks_and_reads_each_once(tmp_path, monkeypatch):
    from pioneer.production.prepare import _judged_traces

    engine = trace_store.connect(tmp_path / "t.db")
    rows = [{"id": f"t{i:03d}", "input": f"text {i}", "prediction": "a" if i % 3 else "b", "corrected": "b" if i % 3 == 0 else None,
             "verdict": "fail" if i % 3 == 0 else "pass"} for i in range(100)] + [{"id": "u", "input": "unjudged", "prediction": "a"}]
    trace_store.add(engine, rows)
    monkeypatch.setattr(d, "TRACE_READ_CHUNK", 7)
    fetched: list[int] = []  # rows per fetch from the database driver

    class CountingCursor(sqlite3.Cursor):
        def fetchmany(self, *size):
            rows = super().fetchmany(*size)
            fetched.append(len(rows))
            return rows

    class CountingConnection(sqlite3.Connection):
        def cursor(self, factory=CountingCursor):
            return super().cursor(factory)

    reader = sa.create_engine("sqlite://", creator=lambda: sqlite3.connect(tmp_path / "t.db", factory=CountingConnection))
    failures, passing, judged = _judged_traces(reader, None, lambda text, label: label in {"a", "b"})
    assert judged == 100 and len(failures) == 34 and len(passing) == 66
    assert sum(fetched) == 100 and max(fetched) == 7 and len(fetched) <= 100 // 7 + 2  # 7 rows a fetch, not one
    assert [f["id"] for f in failures] == [f"t{i:03d}" for i in range(0, 100, 3)]
    assert failures[0] == {"id": "t000", "text": "text 0", "prediction": "b", "corrected": "b"}


def test_the_spec_s_fit_processes_decide_how_many_processes_fit_the_label_quality_model(monkeypatch):
    import concurrent.futures

    started = []
    real = concurrent.futures.ProcessPoolExecutor

    def counting(workers, **kwargs):
        started.append(workers)
        return real(workers, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", counting)
    reference = smart_home.sample(30, seed=2)
    texts, labels = [t for t, _ in reference], [y for _, y in reference]
    _reference_quality(texts, labels, seed=0, fit_all=True, processes=1)
    assert started == []  # one process: fitted here
    _reference_quality(texts, labels, seed=0, fit_all=True, processes=2)
    from joblib import cpu_count

    assert started == ([2] if cpu_count() >= 2 else [])  # never more processes than CPUs

