"""The evaluation set is built before training, kept out of training, frozen, and checked at every evaluation."""

from __future__ import annotations

import pytest

from conftest import tiny_adaptation
from pioneer.api.validation import parse_resource
from pioneer.data.evalset import EvalSetTampered, build_eval_set
from pioneer.data.examples import Example
from pioneer.engine import EVAL_KEY, POOL_KEY, prepare
from pioneer.store import LocalStore, read_jsonl


def test_eval_set_has_positive_negative_and_boundary_slices_covering_every_label():
    pool = [Example(f"turn on the light number {i}", "on") for i in range(40)] + \
           [Example(f"turn off the light number {i}", "off") for i in range(40)] + \
           [Example(f"random chatter about item {i}", "none") for i in range(40)]
    ev, record = build_eval_set(pool, size=30, boundary_share=0.3, negative_label="none", seed=0)
    assert len(ev) == 30
    assert set(record["slices"]) == {"positive", "negative", "boundary"}
    assert record["boundary_pairs"] >= 4
    assert {e.label for e in ev} == {"on", "off", "none"}
    assert all(e.role == "negative" for e in ev if e.label == "none" and e.role != "boundary")


def test_prepare_freezes_the_eval_set_and_keeps_it_out_of_the_pool(tmp_path):
    spec = parse_resource(tiny_adaptation()).spec
    store = LocalStore(tmp_path)
    prepared = prepare(spec, store)
    eval_ids = {r["id"] for r in read_jsonl(store, EVAL_KEY)}
    pool_ids = {r["id"] for r in read_jsonl(store, POOL_KEY)}
    assert eval_ids and pool_ids and not eval_ids & pool_ids
    # a second prepare reuses the frozen set (same hash), it does not rebuild it
    assert prepare(spec, store).eval_sha256 == prepared.eval_sha256


def test_tampering_with_the_frozen_eval_set_is_detected(tmp_path):
    spec = parse_resource(tiny_adaptation()).spec
    store = LocalStore(tmp_path)
    prepare(spec, store)
    path = store.path(EVAL_KEY)
    path.write_text(path.read_text().replace("HassTurnOn", "HassTurnOff", 1))
    with pytest.raises(EvalSetTampered, match="changed since it was frozen"):
        prepare(spec, store)


def test_example_rows_in_bulk_are_the_rows_each_example_writes():
    pairs = [("turn on the lights", "lights_on"), ("what's the weather", "weather"), ("turn on the lights", "lights_off"), ("", "x")]
    assert Example.rows(pairs, role="passing") == [Example(t, y, role="passing").to_row() for t, y in pairs]
