"""The trace store: judged inference traces in SQL (a local SQLite file by default, any SQLAlchemy URL).

A trace is (input, prediction, corrected output, verdict, judge reasoning, judge metadata, model id,
time), plus an optional human override that supersedes the automated verdict. Diagnosis runs SQL
over the ``effective_traces`` view, so it scales without loading every row into memory.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

VERDICTS = ("pass", "fail")
metadata = sa.MetaData()
traces = sa.Table(
    "traces", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("input", sa.Text, nullable=False),
    sa.Column("prediction", sa.Text),
    sa.Column("corrected", sa.Text, doc="correct output according to the judge"),
    sa.Column("verdict", sa.String(8), doc="pass | fail | NULL (not judged yet)"),
    sa.Column("judge_reasoning", sa.Text),
    sa.Column("judge_meta", sa.JSON),
    sa.Column("model_id", sa.String(256)),
    sa.Column("created_at", sa.String(32)),
    sa.Column("human_verdict", sa.String(8), doc="supersedes verdict when set"),
    sa.Column("human_corrected", sa.Text, doc="supersedes corrected when set"),
    sa.Column("meta", sa.JSON),
    sa.CheckConstraint("verdict IS NULL OR verdict IN ('pass', 'fail')", name="verdict_values"),
    sa.CheckConstraint("human_verdict IS NULL OR human_verdict IN ('pass', 'fail')", name="human_verdict_values"),
)
EFFECTIVE_VIEW = """
CREATE VIEW IF NOT EXISTS effective_traces AS
SELECT id, input, prediction, model_id, created_at, judge_reasoning, judge_meta, meta,
       COALESCE(human_verdict, verdict) AS verdict,
       COALESCE(human_corrected, corrected) AS corrected,
       human_verdict IS NOT NULL AS overridden
FROM traces
"""
FIELDS = {c.name for c in traces.columns}
REQUIRED = ("input",)


def database_url(ref: str | Path) -> str:
    """A SQLAlchemy URL from a URL or a plain file path (-> SQLite)."""
    ref = str(ref)
    return ref if "://" in ref else f"sqlite:///{Path(ref).expanduser().resolve()}"


def connect(ref: str | Path) -> sa.Engine:
    engine = sa.create_engine(database_url(ref))
    metadata.create_all(engine)
    view = EFFECTIVE_VIEW
    if engine.dialect.name != "sqlite":
        view = view.replace("CREATE VIEW IF NOT EXISTS", "CREATE OR REPLACE VIEW")
    with engine.begin() as conn:
        conn.execute(sa.text(view))
    return engine


@dataclass
class ImportReport:
    added: int = 0
    duplicates: int = 0
    bad_rows: list[tuple[int, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "duplicates": self.duplicates,
                "bad_rows": [{"line": n, "error": e} for n, e in self.bad_rows]}


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """Validate and normalise one trace row; raises ValueError naming the problem."""
    unknown = sorted(set(row) - FIELDS - {"metadata"})
    meta = dict(row.get("meta") or row.get("metadata") or {})
    for key in unknown:  # extra columns are kept as metadata, not dropped
        meta[key] = row[key]
    text = row.get("input")
    if not isinstance(text, str):  # an empty string is a real log entry (a user sent nothing); a missing one is not
        raise ValueError("missing 'input'")
    # every column present (None when absent): batched inserts need uniform rows
    out: dict[str, Any] = {k: (None if row.get(k) in (None, "") else row.get(k)) for k in FIELDS}
    out["input"] = text
    for key in ("verdict", "human_verdict"):
        if out[key] is not None:
            value = str(out[key]).strip().lower()
            if value not in VERDICTS:
                raise ValueError(f"{key} must be 'pass' or 'fail', got {out[key]!r}")
            out[key] = value
    if isinstance(out.get("judge_meta"), str):
        try:
            out["judge_meta"] = json.loads(out["judge_meta"])
        except json.JSONDecodeError:
            raise ValueError("judge_meta is not valid JSON") from None
    out["id"] = str(out.get("id") or uuid.uuid5(uuid.NAMESPACE_URL, json.dumps([text, row.get("prediction"), row.get("created_at")])))
    out["meta"] = meta or None
    return out


def _rows(path: Path) -> Iterator[tuple[int, Any]]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as exc:
                yield n, ValueError(f"invalid JSON ({exc.msg})")
    elif suffix == ".csv":
        reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))
        for row in reader:
            if None in row:
                yield reader.line_num, ValueError("more fields than the header has")
            else:
                yield reader.line_num, row
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError("reading Parquet needs pyarrow (pip install pyarrow)") from None
        for n, row in enumerate(pq.read_table(path).to_pylist(), 1):
            yield n, row
    else:
        raise ValueError(f"{path}: unsupported trace file type {suffix!r} (jsonl, csv, parquet)")


def import_file(engine: sa.Engine, path: str | Path, batch: int = 1000) -> ImportReport:
    """Import traces, keeping every good row; bad rows are reported with their line numbers."""
    path = Path(path)
    report = ImportReport()
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        if not pending:
            return
        with engine.begin() as conn:
            ids = [r["id"] for r in pending]
            existing = {r[0] for r in conn.execute(sa.select(traces.c.id).where(traces.c.id.in_(ids)))}
            fresh, seen = [], set()
            for r in pending:
                if r["id"] in existing or r["id"] in seen:
                    report.duplicates += 1
                else:
                    seen.add(r["id"])
                    fresh.append(r)
            if fresh:
                conn.execute(traces.insert(), fresh)
            report.added += len(fresh)
        pending.clear()

    for line, row in _rows(path):
        if isinstance(row, Exception):
            report.bad_rows.append((line, str(row)))
            continue
        if not isinstance(row, dict):
            report.bad_rows.append((line, "expected an object"))
            continue
        try:
            pending.append(_clean(row))
        except ValueError as exc:
            report.bad_rows.append((line, str(exc)))
        if len(pending) >= batch:
            flush()
    flush()
    return report


def add(engine: sa.Engine, rows: Iterable[dict[str, Any]]) -> int:
    cleaned = [_clean(r) for r in rows]
    with engine.begin() as conn:
        conn.execute(traces.insert(), cleaned)
    return len(cleaned)


class ReadOnlyQuery(ValueError):
    pass


def query(engine: sa.Engine, sql: str, limit: int | None = None) -> tuple[list[str], list[tuple]]:
    """Run one read-only SQL statement; writes are refused by the database itself, not by parsing."""
    if engine.dialect.name == "sqlite":
        db = engine.url.database
        ro = sa.create_engine(f"sqlite:///file:{db}?mode=ro&uri=true")
        try:
            with ro.connect() as conn:
                return _fetch(conn, sql, limit)
        except sa.exc.OperationalError as exc:
            if "readonly" in str(exc).lower() or "read-only" in str(exc).lower():
                raise ReadOnlyQuery(f"read-only: {exc.orig}") from None
            raise
        finally:
            ro.dispose()
    with engine.connect() as conn:
        conn.execute(sa.text("SET TRANSACTION READ ONLY"))
        try:
            return _fetch(conn, sql, limit)
        except sa.exc.InternalError as exc:
            raise ReadOnlyQuery(f"read-only: {exc.orig}") from None
        finally:
            conn.rollback()


def _fetch(conn, sql: str, limit: int | None) -> tuple[list[str], list[tuple]]:
    result = conn.execute(sa.text(sql))
    if not result.returns_rows:
        return [], []
    rows = result.fetchmany(limit) if limit else result.fetchall()
    return list(result.keys()), [tuple(r) for r in rows]


def judge_missing(engine: sa.Engine, judge_name: str, batch: int = 500, **judge_kwargs: Any) -> dict[str, int]:
    """Fill missing verdicts of traces that have a reference (``corrected``) with a deterministic judge."""
    from pioneer.traces.judges import judge

    counts = {"judged": 0, "pass": 0, "fail": 0, "no_reference": 0}
    with engine.begin() as conn:
        counts["no_reference"] = conn.execute(
            sa.select(sa.func.count()).select_from(traces).where(traces.c.verdict.is_(None), traces.c.corrected.is_(None))).scalar_one()
        rows = conn.execute(sa.select(traces.c.id, traces.c.prediction, traces.c.corrected)
                            .where(traces.c.verdict.is_(None), traces.c.corrected.is_not(None))).fetchall()
        for start in range(0, len(rows), batch):
            for tid, prediction, corrected in rows[start:start + batch]:
                j = judge(judge_name, prediction, corrected, **judge_kwargs)
                conn.execute(traces.update().where(traces.c.id == tid).values(
                    verdict=j.verdict, judge_reasoning=j.reasoning, judge_meta={**j.meta, "score": j.score}))
                counts["judged"] += 1
                counts[j.verdict] += 1
    return counts
