"""The cluster's trace store is PostgreSQL: the same import, view and read-only queries, on a real server."""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa

from pioneer.traces import store as traces


@pytest.fixture
def db(pg_database):
    engine = traces.connect(pg_database)
    traces.add(engine, [{"id": "p1", "input": "lights on", "prediction": "on", "verdict": "pass"},
                        {"id": "p2", "input": "lights off", "prediction": "on", "corrected": "off", "verdict": "fail",
                         "human_corrected": "off please"}])
    return engine


def test_import_keeps_good_rows_and_the_effective_view_applies_human_overrides(db, tmp_path):
    path = tmp_path / "more.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "p3", "input": "dim", "verdict": "pass", "meta": {"k": 1}}, {"id": "bad", "input": "x", "meta": 5},
        {"id": "p1", "input": "lights on"}, {"id": "p4", "input": "warmer", "verdict": "fail", "corrected": "up"},
        {"id": "p4", "input": "warmer", "verdict": "pass"}]))  # the bulk path (COPY), a duplicate in the same batch
    rep = traces.import_file(db, path)
    assert (rep.added, rep.duplicates, [n for n, _ in rep.bad_rows]) == (2, 2, [2])
    _, rows = traces.query(db, "SELECT id, verdict, corrected FROM effective_traces ORDER BY id")
    assert rows == [("p1", "pass", None), ("p2", "fail", "off please"), ("p3", "pass", None), ("p4", "fail", "up")]
    _, meta = traces.query(db, "SELECT meta::text, judge_meta::text FROM traces WHERE id IN ('p3', 'p4') ORDER BY id")
    assert meta == [('{"k": 1}', "null"), ("null", "null")]  # JSON columns as SQLAlchemy's JSON type stores them


@pytest.mark.parametrize("sql", ["DELETE FROM traces", "SELECT 1; DELETE FROM traces", "COMMIT; DELETE FROM traces",
                                 "UPDATE traces SET verdict = 'pass'", "CREATE TABLE x (a int)",
                                 "SET transaction_read_only = off"])
def test_queries_cannot_write_on_the_real_server(sql, db):
    with pytest.raises(traces.ReadOnlyQuery):
        traces.query(db, sql)
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM traces")).scalar_one() == 2


def test_a_long_query_is_stopped_by_statement_timeout(db):
    start = time.monotonic()
    with pytest.raises(traces.ReadOnlyQuery, match="statement timeout"):
        traces.query(db, "SELECT pg_sleep(30)", timeout=1.0)
    assert time.monotonic() - start < 10


def test_a_like_pattern_with_percent_signs_still_works(db):
    _, rows = traces.query(db, "SELECT id FROM traces WHERE input LIKE '%off%'")
    assert rows == [("p2",)]
