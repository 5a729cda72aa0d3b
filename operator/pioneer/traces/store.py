"""The trace store: judged inference traces in SQL (a local SQLite file by default, any SQLAlchemy URL).

A trace is (input, prediction, corrected output, verdict, judge reasoning, judge metadata, model id,
time), plus an optional human override that supersedes the automated verdict. Diagnosis runs SQL
over the ``effective_traces`` view, so it scales without loading every row into memory.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pioneer import defaults as d

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
overrides = sa.Table(
    "trace_overrides", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("trace_id", sa.String(64), nullable=False, index=True),
    sa.Column("verdict", sa.String(8), doc="the person's verdict"),
    sa.Column("corrected", sa.Text, doc="the person's correction (NULL for a bare thumbs up or down)"),
    sa.Column("by", sa.String(256), nullable=False, doc="who: a user name, an e-mail, a service"),
    sa.Column("at", sa.String(32), nullable=False),
    sa.Column("source", sa.String(32), nullable=False, doc="cli | feedback | file"),
    sa.CheckConstraint("verdict IN ('pass', 'fail')", name="override_verdict_values"),
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
    """The store at ``ref``; its table and view are created where missing (so a read-only role can open an existing one)."""
    engine = sa.create_engine(database_url(ref))
    metadata.create_all(engine)
    if "effective_traces" not in sa.inspect(engine).get_view_names():
        view = EFFECTIVE_VIEW
        if engine.dialect.name != "sqlite":
            view = view.replace("CREATE VIEW IF NOT EXISTS", "CREATE OR REPLACE VIEW")
        with engine.begin() as conn:
            conn.execute(sa.text(view))
    return engine


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
EXPORT_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".parquet")


def resolve_reference(ref: str) -> str:
    """``${NAME}`` in a trace-store reference is read from the environment (a Secret's keys in a cluster), so no
    password has to sit in a spec. A missing variable is named, its value never shown."""
    missing = [m for m in _ENV_REF.findall(ref) if m not in os.environ]
    if missing:
        raise ValueError(f"the trace store reference needs environment variable(s) {missing} (a credentialsSecret key in a cluster)")
    return _ENV_REF.sub(lambda m: os.environ[m.group(1)], ref)


def open_source(ref: str, workdir: Path | None = None) -> sa.Engine:
    """A trace store to read: a SQLite file, a SQLAlchemy URL, or an export on S3 (JSONL, CSV or Parquet) that is
    imported into a temporary SQLite store first (its bad rows are reported, the good ones kept)."""
    ref = resolve_reference(ref)
    if ref.startswith("s3://") and ref.lower().endswith(EXPORT_SUFFIXES):
        import tempfile

        from pioneer.store import split_uri

        folder = Path(tempfile.mkdtemp(prefix="pioneer-traces-", dir=workdir))
        store, key = split_uri(ref)
        local = store.download(key, folder / Path(key).name)
        engine = connect(folder / "traces.db")
        report = import_file(engine, local)
        if report.bad_rows:
            line, problem = report.bad_rows[0]
            print(f"pioneer: {ref}: {len(report.bad_rows)} bad row(s) skipped, first at line {line}: {problem}")
        return engine
    return connect(ref)


@dataclass
class ImportReport:
    added: int = 0
    duplicates: int = 0
    updated: int = 0
    bad_rows: list[tuple[int, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "duplicates": self.duplicates, "updated": self.updated,
                "bad_rows": [{"line": n, "error": e} for n, e in self.bad_rows]}


class TraceRecord(BaseModel):
    """One judged inference trace as ``pioneer traces import`` and the store take it (``pioneer traces schema``).

    Unknown keys are kept in ``meta``; empty strings in optional columns count as absent (CSV)."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=False)
    id: str | None = Field(default=None, max_length=64, description="Stable id; derived from input, prediction and time when absent.")
    input: str = Field(description="The model's input text (ner: words separated by single spaces).")
    prediction: str | None = Field(default=None, description="What the deployed model answered (ner: one BIO tag per word).")
    corrected: str | None = Field(default=None, description="The correct output according to the judge or a person.")
    verdict: Literal["pass", "fail"] | None = Field(default=None, description="The judge's verdict: pass, fail, or absent (not judged yet).")
    judge_reasoning: str | None = Field(default=None, description="Why the judge decided so.")
    judge_meta: dict[str, Any] | None = Field(default=None, description="The judge's metadata (a JSON object).")
    model_id: str | None = Field(default=None, max_length=256, description="Model and revision that answered, e.g. intents@2.")
    created_at: str | None = Field(default=None, max_length=32, description="RFC 3339 time of the inference.")
    human_verdict: Literal["pass", "fail"] | None = Field(default=None, description="A person's verdict; supersedes verdict.")
    human_corrected: str | None = Field(default=None, description="A person's correction; supersedes corrected.")
    meta: dict[str, Any] | None = Field(default=None, description="Anything else (a JSON object); unknown columns land here.")

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, row: Any) -> Any:
        if not isinstance(row, dict):
            raise ValueError("expected an object")
        row = {k: (None if v == "" and k != "input" else v) for k, v in row.items()}
        if "metadata" in row and row.get("meta") is None:
            row["meta"] = row.pop("metadata")
        for key in ("verdict", "human_verdict"):
            if isinstance(row.get(key), str):
                row[key] = row[key].strip().lower()
        for key in ("judge_meta", "meta"):
            if isinstance(row.get(key), str):
                try:
                    row[key] = json.loads(row[key])
                except json.JSONDecodeError:
                    raise ValueError(f"{key} is not valid JSON") from None
        if isinstance(row.get("id"), int) and not isinstance(row.get("id"), bool):
            row["id"] = str(row["id"])
        return row


def _problem(exc: ValidationError) -> str:
    def one(e: dict) -> str:
        where = ".".join(str(p) for p in e["loc"]) or "row"
        if e["type"] == "missing":
            return f"missing {where!r}"
        if e["type"] == "literal_error":
            return f"{where} must be 'pass' or 'fail', got {e.get('input')!r}"[:120]
        got = "" if isinstance(e.get("input"), dict) else f", got {e.get('input')!r}"[:80]
        return f"{where}: {e['msg'].removeprefix('Value error, ')}{got}"
    return "; ".join(one(e) for e in exc.errors())


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """Validate (types included) and normalise one trace row; raises ValueError naming the problem."""
    try:
        rec = TraceRecord.model_validate(row)
    except ValidationError as exc:
        raise ValueError(_problem(exc)) from None
    meta = dict(rec.meta or {})
    for key, value in (rec.model_extra or {}).items():  # extra columns are kept as metadata, not dropped
        meta[key] = value
    out = {k: getattr(rec, k) for k in FIELDS}
    out["id"] = rec.id or str(uuid.uuid5(uuid.NAMESPACE_URL, json.dumps([rec.input, rec.prediction, rec.created_at])))
    try:
        out["meta"] = json.loads(json.dumps(meta)) if meta else None
    except (TypeError, ValueError):
        raise ValueError("meta is not JSON-serialisable") from None
    return out


def _json_row(raw: bytes) -> Any:
    """One JSONL line parsed, or the ValueError naming why it is not UTF-8 JSON."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ValueError(f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})")
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        return ValueError(f"invalid JSON ({exc.msg})")
    except RecursionError:
        return ValueError("JSON nested too deeply")


def _binary_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(number, line) of a file read as a stream, split and numbered as ``bytes.splitlines`` does, a leading BOM dropped."""
    n = 0
    with open(path, "rb") as fh:
        for chunk in fh:
            for raw in chunk.splitlines():  # a lone CR also ends a line
                n += 1
                yield n, raw[3:] if n == 1 and raw.startswith(b"\xef\xbb\xbf") else raw


def _decoded_lines(path: Path, report_bad) -> list[str]:
    """The file's lines as text; a line that is not UTF-8 is reported by number and left empty."""
    lines = []
    for n, raw in enumerate(path.read_bytes().splitlines(keepends=True), 1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            report_bad(n, f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})")
            lines.append("\n")
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    return lines


def _rows(path: Path) -> Iterator[tuple[int, Any]]:
    suffix = path.suffix.lower()
    bad: list[tuple[int, str]] = []
    if suffix in (".jsonl", ".ndjson"):  # lines as bytes: import_file parses them (fast path first)
        for n, raw in _binary_lines(path):
            if raw.strip():
                yield n, raw
    elif suffix == ".csv":
        text = "".join(_decoded_lines(path, lambda n, e: bad.append((n, e))))
        yield from ((m, ValueError(e)) for m, e in bad)
        reader = csv.DictReader(io.StringIO(text), strict=True)
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:  # e.g. an unterminated quote: nothing after it can be trusted
                yield start, ValueError(f"CSV: {exc} (a quote opened here is never closed?)")
                break
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


_PARTIAL = "__partial__"


def import_file(engine: sa.Engine, path: str | Path, batch: int = d.TRACE_IMPORT_BATCH, upsert: bool = False) -> ImportReport:
    """Import traces, keeping every good row; bad rows are reported with their line numbers.

    An id already in the store counts as a duplicate, unless ``upsert``: then the fields the new row gives (a
    correction or a verdict that arrived later) replace the stored ones, and the fields it leaves out are kept.
    Rows go in by batches through the bulk path (:func:`insert_new`: ``COPY`` on PostgreSQL)."""
    path = Path(path)
    report = ImportReport()
    pending: list[tuple[int, dict[str, Any]]] = []

    def flush() -> None:
        if not pending:
            return
        fresh = pending
        if upsert:
            fresh = []
            with engine.begin() as conn:
                ids = [r["id"] for _, r in pending]
                existing = {r[0] for r in conn.execute(sa.select(traces.c.id).where(traces.c.id.in_(ids)))}
            for line, r in pending:
                partial = r.pop(_PARTIAL, False)
                if r["id"] in existing:
                    given = {k: v for k, v in r.items() if v is not None and k not in ("id", "input")}
                    with engine.begin() as conn:
                        conn.execute(traces.update().where(traces.c.id == r["id"]).values(**given))
                    report.updated += 1
                elif partial:
                    report.bad_rows.append((line, f"no trace {r['id']!r} to update (a new trace needs 'input')"))
                else:
                    fresh.append((line, r))
        fresh = [(line, _stored_values(r) if isinstance(r, dict) else r) for line, r in fresh]
        try:
            added = insert_new(engine, [v for _, v in fresh])
            report.added += added
            report.duplicates += len(fresh) - added
        except sa.exc.SQLAlchemyError:  # one row the database refuses must not cost the batch: insert one by one
            for line, v in fresh:
                try:
                    added = insert_new(engine, [v])
                    report.added += added
                    report.duplicates += 1 - added
                except sa.exc.SQLAlchemyError as exc:
                    report.bad_rows.append((line, f"refused by the database: {str(getattr(exc, 'orig', exc)).splitlines()[0]}"))
        pending.clear()

    for line, row in _rows(path):
        if isinstance(row, Exception):
            report.bad_rows.append((line, str(row)))
            continue
        if not upsert and (plain := _plain_values(row)) is not None:
            pending.append((line, plain))
        else:
            if isinstance(row, bytes):
                row = _json_row(row)
                if isinstance(row, Exception):
                    report.bad_rows.append((line, str(row)))
                    continue
            if not isinstance(row, dict):
                report.bad_rows.append((line, "expected an object"))
                continue
            try:
                if upsert and "input" not in row and row.get("id") not in (None, ""):  # a later correction for a logged trace
                    pending.append((line, {**_clean({**row, "input": ""}), "input": None, _PARTIAL: True}))
                else:
                    cleaned = _clean(row)
                    pending.append((line, cleaned if upsert else _stored_values(cleaned)))
            except ValueError as exc:
                report.bad_rows.append((line, str(exc)))
        if len(pending) >= batch:
            flush()
    flush()
    report.bad_rows.sort()
    return report


NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class PlainTrace(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A trace row that needs no normalising: every key a column, an id, each value already as stored (no empty strings,
    verdicts in lower case, no JSON columns). A clean log's rows are all of this kind; msgspec checks it in C, and a row
    it refuses goes through :class:`TraceRecord`, which normalises it or names its problem. Both store the same values."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    input: str
    prediction: NonEmpty | None = None
    corrected: NonEmpty | None = None
    verdict: Literal["pass", "fail"] | None = None
    judge_reasoning: NonEmpty | None = None
    model_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    created_at: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] | None = None
    human_verdict: Literal["pass", "fail"] | None = None
    human_corrected: NonEmpty | None = None


_JSON_COLUMNS = [c.name for c in traces.columns if isinstance(c.type, sa.JSON)]
_PLAIN_COLUMNS = list(PlainTrace.__struct_fields__)
_COLUMNS = _PLAIN_COLUMNS + _JSON_COLUMNS  # the bulk insert's column order
assert set(_COLUMNS) == FIELDS, "PlainTrace must name every non-JSON column of the traces table"
_NO_JSON = ("null",) * len(_JSON_COLUMNS)  # SQLAlchemy's JSON type stores None as JSON null
_plain_line = msgspec.json.Decoder(PlainTrace)


def _plain_values(row: Any) -> tuple | None:
    """The stored values of a JSONL line (bytes or text) or a row that is a :class:`PlainTrace`, else None."""
    try:
        trace = _plain_line.decode(row) if isinstance(row, (bytes, str)) else msgspec.convert(row, PlainTrace)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return msgspec.structs.astuple(trace) + _NO_JSON


def _stored_values(row: dict[str, Any]) -> tuple:
    """A cleaned row (:func:`_clean`) as the bulk insert takes it, JSON columns serialised as SQLAlchemy's JSON type does."""
    return tuple(row[c] for c in _PLAIN_COLUMNS) + tuple(
        "null" if row[c] is None else json.dumps(row[c]) for c in _JSON_COLUMNS)


def insert_new(engine: sa.Engine, values: list[tuple]) -> int:
    """Insert rows (:func:`_stored_values` tuples) whose id is not stored yet in one bulk statement; the number written. A
    duplicate id, stored or earlier in ``values``, is skipped (ON CONFLICT DO NOTHING), so NOT NULL and the database's other
    refusals still raise.

    PostgreSQL: ``COPY`` (psycopg) into a transaction-scoped temporary table, then one INSERT ... SELECT. SQLite: one
    executemany through the driver."""
    if not values:
        return 0
    names = ", ".join(_COLUMNS)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            with conn.connection.driver_connection.cursor() as cur:
                cur.execute("CREATE TEMPORARY TABLE pioneer_import (LIKE traces) ON COMMIT DROP")
                with cur.copy(f"COPY pioneer_import ({names}) FROM STDIN") as copy:
                    for v in values:
                        copy.write_row(v)
                cur.execute(f"INSERT INTO traces ({names}) SELECT {names} FROM pioneer_import ON CONFLICT (id) DO NOTHING")
                return cur.rowcount
        marks = ", ".join(["%s" if engine.dialect.paramstyle in ("format", "pyformat") else "?"] * len(_COLUMNS))
        return conn.exec_driver_sql(f"INSERT INTO traces ({names}) VALUES ({marks}) ON CONFLICT (id) DO NOTHING", values).rowcount


def add(engine: sa.Engine, rows: Iterable[dict[str, Any]]) -> int:
    cleaned = [_clean(r) for r in rows]
    with engine.begin() as conn:
        conn.execute(traces.insert(), cleaned)
    return len(cleaned)


def insert_ignoring_duplicates(engine: sa.Engine, table: sa.Table):
    """INSERT that skips rows whose primary key exists (SQLite and PostgreSQL: ON CONFLICT DO NOTHING)."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise ValueError(f"idempotent inserts need SQLite or PostgreSQL (this store is {engine.dialect.name})")
    return insert(table).on_conflict_do_nothing()


def add_new(engine: sa.Engine, rows: Iterable[dict[str, Any]]) -> int:
    """Add traces whose ids are not stored yet (a redelivered event writes nothing twice); the number written."""
    cleaned = [_clean(r) for r in rows]
    if not cleaned:
        return 0
    with engine.begin() as conn:
        return conn.execute(insert_ignoring_duplicates(engine, traces), cleaned).rowcount


@dataclass(frozen=True)
class Override:
    """A person's verdict on one logged trace, as recorded (the automated verdict and correction stay untouched)."""

    trace_id: str
    verdict: str
    corrected: str | None
    by: str
    at: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"trace_id": self.trace_id, "verdict": self.verdict, "corrected": self.corrected, "by": self.by,
                "at": self.at, "source": self.source}


class UnknownTrace(KeyError):
    pass


def _same_output(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.split() == b.split()


def correct(engine: sa.Engine, trace_id: str, *, corrected: str | None = None, verdict: str | None = None, by: str,
            source: str = "cli", at: str | None = None) -> Override:
    """Record a person's correction or verdict for a logged trace; the newest override wins, every one is kept.

    A correction alone decides the verdict (``pass`` when it equals the model's prediction, else ``fail``); a bare
    verdict (a thumbs up or down) keeps the correction empty. The trace's own ``verdict`` and ``corrected`` (the
    judge's) are never overwritten: the ``effective_traces`` view prefers the override."""
    if corrected is not None and not corrected.strip():
        raise ValueError("an empty correction: give the correct output, or a verdict alone")
    if verdict is not None and verdict not in VERDICTS:
        raise ValueError(f"verdict must be 'pass' or 'fail', got {verdict!r}")
    if corrected is None and verdict is None:
        raise ValueError("give a correction, a verdict, or both")
    if not by or not by.strip():
        raise ValueError("say who corrects (--by)")
    at = at or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with engine.begin() as conn:
        row = conn.execute(sa.select(traces.c.prediction).where(traces.c.id == trace_id)).first()
        if row is None:
            raise UnknownTrace(trace_id)
        if verdict is None:
            verdict = "pass" if _same_output(corrected, row.prediction) else "fail"
        if verdict == "pass" and corrected is not None and not _same_output(corrected, row.prediction):
            raise ValueError(f"trace {trace_id}: verdict pass with a correction that differs from the prediction {row.prediction!r}")
        conn.execute(overrides.insert().values(trace_id=trace_id, verdict=verdict, corrected=corrected, by=by.strip()[:256],
                                               at=at, source=source))
        conn.execute(traces.update().where(traces.c.id == trace_id).values(human_verdict=verdict, human_corrected=corrected))
    return Override(trace_id, verdict, corrected, by.strip()[:256], at, source)


def history(engine: sa.Engine, trace_id: str) -> list[Override]:
    """Every override recorded for a trace, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(overrides).where(overrides.c.trace_id == trace_id).order_by(overrides.c.seq)).fetchall()
    return [Override(r.trace_id, r.verdict, r.corrected, r.by, r.at, r.source) for r in rows]


@dataclass(frozen=True)
class ExportFilter:
    """Which traces ``pioneer traces export`` writes; every condition must hold (empty: all)."""

    verdict: Literal["pass", "fail", "unjudged"] | None = None  # the effective verdict (a person's override wins)
    model_id: str | None = None  # exact (``intents@2``) or every revision of a model (``intents@``)
    since: str | None = None  # created_at >= since (RFC 3339 strings compare in time order)
    until: str | None = None  # created_at < until
    overridden: bool | None = None


def _filtered(f: ExportFilter):
    t = traces.c
    effective = sa.func.coalesce(t.human_verdict, t.verdict)
    conds = []
    if f.verdict == "unjudged":
        conds.append(effective.is_(None))
    elif f.verdict:
        conds.append(effective == f.verdict)
    if f.model_id:
        conds.append(t.model_id.startswith(f.model_id, autoescape=True) if f.model_id.endswith("@") else t.model_id == f.model_id)
    if f.since:
        conds.append(t.created_at >= f.since)
    if f.until:
        conds.append(t.created_at < f.until)
    if f.overridden is not None:
        conds.append(t.human_verdict.is_not(None) if f.overridden else t.human_verdict.is_(None))
    return sa.select(traces).where(*conds).order_by(t.created_at, t.id)


def model_filter(model_id: str | None) -> str:
    """SQL (to append to a WHERE clause over effective_traces) keeping one model's traces: ``name@3`` one revision,
    ``name@`` every revision; nothing for None. Its parameters come from :func:`model_params`."""
    if not model_id:
        return ""
    return " AND model_id LIKE :model_prefix ESCAPE '!'" if model_id.endswith("@") else " AND model_id = :model_id"


def model_params(model_id: str | None) -> dict[str, str]:
    if not model_id:
        return {}
    if model_id.endswith("@"):
        return {"model_prefix": re.sub(r"([!%_])", r"!\1", model_id) + "%"}
    return {"model_id": model_id}


def count_failures(engine: sa.Engine, model_id: str) -> int:
    """Judged failures (a person's verdict wins) of one model revision: what a repair trigger counts."""
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT COUNT(*) FROM effective_traces WHERE verdict = 'fail'" + model_filter(model_id)),
                                model_params(model_id)).scalar() or 0)


def iter_traces(engine: sa.Engine, f: ExportFilter = ExportFilter(), chunk: int = 5000) -> Iterator[dict[str, Any]]:
    """Stored trace records (every column, absent ones dropped), streamed from the database in chunks."""
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=chunk).execute(_filtered(f))
        for row in result:
            yield {k: v for k, v in row._mapping.items() if v is not None}


def export(engine: sa.Engine, path: str | Path, f: ExportFilter = ExportFilter()) -> int:
    """Write the traces that pass ``f`` to JSONL, CSV or Parquet (by suffix), in a form ``import`` reads back;
    written to a temporary file and renamed, so a half export never looks like a whole one."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise ValueError(f"{path}: unsupported export type {suffix!r} (jsonl, csv, parquet)")
    tmp = path.with_name(f".{path.name}.partial")
    n = 0
    columns = [c.name for c in traces.columns]
    if suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError("writing Parquet needs pyarrow (pip install pyarrow)") from None
        json_cols = ("judge_meta", "meta")
        schema = pa.schema([(c, pa.string()) for c in columns])
        with pq.ParquetWriter(tmp, schema) as writer:
            batch: list[dict[str, Any]] = []
            for rec in iter_traces(engine, f):
                batch.append({c: (json.dumps(rec[c]) if c in json_cols and c in rec else rec.get(c)) for c in columns})
                if len(batch) >= 5000:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    n, batch = n + len(batch), []
            if batch:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                n += len(batch)
    else:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns) if suffix == ".csv" else None
            if writer:
                writer.writeheader()
            for rec in iter_traces(engine, f):
                if writer:
                    writer.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in rec.items()})
                else:
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
    os.replace(tmp, path)
    return n


class ReadOnlyQuery(ValueError):
    pass


QUERY_TIMEOUT_SECONDS = 30.0
_SQLITE_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
_SQLITE_DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}


def _sqlite_authorizer(code: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None) -> int:
    """Only reading: SELECT, column reads, pure functions and recursive CTEs. ATTACH (and so VACUUM INTO), PRAGMA,
    writes and schema changes are denied by SQLite itself before they run."""
    if code not in _SQLITE_ALLOWED:
        return sqlite3.SQLITE_DENY
    if code == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _SQLITE_DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def query(engine: sa.Engine, sql: str, limit: int | None = None, timeout: float = QUERY_TIMEOUT_SECONDS) -> tuple[list[str], list[tuple]]:
    """Run one read-only SQL statement, bounded in time; writes are refused by the database itself, not by parsing.

    SQLite: a read-only connection with an authorizer that allows only reading, and a progress handler that
    stops the statement after ``timeout`` seconds. PostgreSQL: a READ ONLY transaction with statement_timeout."""
    if engine.dialect.name == "sqlite":
        db = engine.url.database
        ro = sa.create_engine(f"sqlite:///file:{db}?mode=ro&uri=true")
        deadline = time.monotonic() + timeout
        try:
            with ro.connect() as conn:
                raw = conn.connection.driver_connection
                raw.set_authorizer(_sqlite_authorizer)
                raw.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
                try:
                    return _fetch(conn, sql, limit)
                finally:
                    raw.set_authorizer(None)
                    raw.set_progress_handler(None, 0)
        except sa.exc.DatabaseError as exc:
            text = str(exc.orig).lower()
            if "interrupted" in text:
                raise ReadOnlyQuery(f"stopped after {timeout:g} s (statement timeout)") from None
            if "not authorized" in text or "authorization denied" in text or "readonly" in text or "read-only" in text:
                raise ReadOnlyQuery(f"read-only: {exc.orig}") from None
            raise
        finally:
            ro.dispose()
    return _query_server(engine, sql, limit, timeout)


def _query_server(engine: sa.Engine, sql: str, limit: int | None, timeout: float) -> tuple[list[str], list[tuple]]:
    """PostgreSQL: one prepared statement (a second one is refused by the server), in a READ ONLY transaction, bounded
    by statement_timeout. Neither can be undone from inside: a read-write switch after the first query is an error.
    Give ``--db`` a role without superuser rights (superusers can still read and write server files)."""
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("SET TRANSACTION READ ONLY")
        cur.execute(f"SET LOCAL statement_timeout = {int(timeout * 1000)}")
        cur.execute("SELECT 1")  # after a first query the transaction can no longer be switched to read-write
        try:
            cur.execute(sql, prepare=True)  # a prepared statement is exactly one statement: '...; DELETE' is refused
        except Exception as exc:  # the driver's own errors, mapped to what the user did
            state = getattr(exc, "sqlstate", None) or ""
            if state == "57014":
                raise ReadOnlyQuery(f"stopped after {timeout:g} s (statement timeout)") from None
            if state in ("25001", "25006", "42601") or "multiple commands" in str(exc):
                raise ReadOnlyQuery(f"read-only, one statement: {str(exc).splitlines()[0]}") from None
            raise
        if cur.description is None:
            return [], []
        rows = cur.fetchmany(limit) if limit else cur.fetchall()
        return [d[0] for d in cur.description], [tuple(r) for r in rows]
    finally:
        try:
            raw.rollback()
        finally:
            raw.close()


def exists(ref: str | Path) -> bool:
    """Whether a trace store is there to read: a server URL always counts; a SQLite file must exist."""
    url = database_url(ref)
    if not url.startswith("sqlite:"):
        return True
    path = url.removeprefix("sqlite:///")
    return path in ("", ":memory:") or Path(path).is_file()


def _fetch(conn, sql: str, limit: int | None) -> tuple[list[str], list[tuple]]:
    result = conn.execute(sa.text(sql))
    if not result.returns_rows:
        return [], []
    rows = result.fetchmany(limit) if limit else result.fetchall()
    return list(result.keys()), [tuple(r) for r in rows]


def judge_missing(engine: sa.Engine, judge_name: str, batch: int = 500, **judge_kwargs: Any) -> dict[str, int]:
    """Fill missing verdicts of traces that have a reference (``corrected``, or a person's correction) with a
    deterministic judge. A trace a person already judged is left alone: the override decides it."""
    from pioneer.traces.judges import judge

    t = traces.c
    reference = sa.func.coalesce(t.human_corrected, t.corrected)
    unjudged = sa.and_(t.verdict.is_(None), t.human_verdict.is_(None))
    counts = {"judged": 0, "pass": 0, "fail": 0, "no_reference": 0}
    with engine.begin() as conn:
        counts["no_reference"] = conn.execute(
            sa.select(sa.func.count()).select_from(traces).where(unjudged, reference.is_(None))).scalar_one()
        rows = conn.execute(sa.select(t.id, t.prediction, reference).where(unjudged, reference.is_not(None))).fetchall()
        for start in range(0, len(rows), batch):
            for tid, prediction, corrected in rows[start:start + batch]:
                j = judge(judge_name, prediction, corrected, **judge_kwargs)
                conn.execute(traces.update().where(traces.c.id == tid).values(
                    verdict=j.verdict, judge_reasoning=j.reasoning, judge_meta={**j.meta, "score": j.score}))
                counts["judged"] += 1
                counts[j.verdict] += 1
    return counts


def unjudged(engine: sa.Engine, limit: int | None = None) -> list[tuple[str, str, str | None]]:
    """(id, input, prediction) of traces neither a judge nor a person has judged, oldest first."""
    t = traces.c
    query = sa.select(t.id, t.input, t.prediction).where(t.verdict.is_(None), t.human_verdict.is_(None)).order_by(t.id)
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query.limit(limit) if limit else query).fetchall()]


def judge_with_llm(engine: sa.Engine, rows: list[tuple[str, str, str | None]], task: str, labels: list[str] | None,
                   judge, batch: int = 50, on_batch=None) -> dict[str, int]:
    """Judge ``rows`` with ``judge(text, prediction) -> Judgement`` (the LLM judge), committing every ``batch`` traces so an
    interruption loses at most one batch. The judge's correction fills ``corrected`` only where the log has none."""
    from pioneer.traces.judges import JudgeError

    counts = {"judged": 0, "pass": 0, "fail": 0, "errors": 0}
    for start in range(0, len(rows), batch):
        with engine.begin() as conn:
            for tid, text, prediction in rows[start:start + batch]:
                try:
                    j = judge(text, prediction)
                except JudgeError:
                    counts["errors"] += 1
                    continue
                values = {"verdict": j.verdict, "judge_reasoning": j.reasoning, "judge_meta": {**j.meta, "score": j.score}}
                conn.execute(traces.update().where(traces.c.id == tid).values(**values))
                if j.meta.get("corrected"):
                    conn.execute(traces.update().where(traces.c.id == tid, traces.c.corrected.is_(None)).values(corrected=j.meta["corrected"]))
                counts["judged"] += 1
                counts[j.verdict] += 1
        if on_batch:
            on_batch(min(start + batch, len(rows)), len(rows))
    return counts
