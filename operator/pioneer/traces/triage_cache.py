"""What a preparation computed about traces, kept in the trace store so the next repair of the same parent reuses it.

Four tables beside the traces:

- ``triage_reference``: the trusted reference a triage drew for one parent (model hash, seed, bound, embedding
  space), pinned with its members (text, label, the verified trace's id) and the members' own calibration
  scores. The next preparation for that parent tests its new traces against the same reference, as long as
  every verified member is still a passing trace with the same answer (a person's override voids it).
- ``triage_scores``: per reference digest, text and checked label, the scores a trace got against it (domain
  similarity, label margin, best label, label quality). A trace scored once is not scored again.
- ``triage_models``: per reference digest, the label-quality model fitted on it (skops, which loads only the types it
  trusts: no pickle), so a later preparation scores its new failures without fitting it again.
- ``model_answers``: per deployed model (content hash) and text, the model's answer (the live probes and the
  second look ask the same model the same texts again).

The decisions themselves (Benjamini-Hochberg over every trace) are always taken again: a p-value depends on
the whole family. A store the preparation may only read serves what it has; what it cannot write is recorded.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import sqlalchemy as sa

from pioneer import defaults as d
from pioneer.traces.embedding_cache import _chunks, text_key
from pioneer.traces.store import insert_ignoring_duplicates

metadata = sa.MetaData()
references = sa.Table(
    "triage_reference", metadata,
    sa.Column("key", sa.String(64), primary_key=True, doc="sha256 of (parent model hash, seed, bound, embedding space, method)"),
    sa.Column("digest", sa.String(64), nullable=False, doc="sha256 of the members: what the scores are keyed by"),
    sa.Column("members", sa.JSON, nullable=False, doc="[text, label, verified trace id or null (the parent's example)]"),
    sa.Column("parent_examples", sa.Integer, nullable=False),
    sa.Column("scores", sa.JSON, nullable=False, doc="the members' own scores: domain, margin, quality (null = none)"),
    sa.Column("created_at", sa.String(32), nullable=False),
)
scores = sa.Table(
    "triage_scores", metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("text_sha256", sa.String(64), primary_key=True),
    sa.Column("label", sa.String(256), primary_key=True, doc="the label checked: a failure's correction, a passing answer"),
    sa.Column("domain", sa.Float), sa.Column("margin", sa.Float), sa.Column("best", sa.String(256)), sa.Column("quality", sa.Float),
)
models = sa.Table(
    "triage_models", metadata,
    sa.Column("digest", sa.String(64), primary_key=True, doc="the reference the model was fitted on"),
    sa.Column("model", sa.LargeBinary, nullable=False, doc="the fitted label-quality model, skops format (no pickle)"),
)
answers = sa.Table(
    "model_answers", metadata,
    sa.Column("model_sha256", sa.String(64), primary_key=True),
    sa.Column("text_sha256", sa.String(64), primary_key=True),
    sa.Column("answer", sa.JSON, nullable=False),
)
SCORE_FIELDS = ("domain", "margin", "best", "quality")


def _finite(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _nan(x: Any) -> Any:
    return math.nan if x is None else x


def digest_of(members: list[list[Any]], method: str) -> str:
    return hashlib.sha256(json.dumps([method, members], ensure_ascii=False).encode("utf-8", "surrogatepass")).hexdigest()


def reference_key(parent_sha256: str, seed: int, bound: int, space: str, method: str) -> str:
    return hashlib.sha256(json.dumps([parent_sha256, seed, bound, space, method]).encode()).hexdigest()


def _floats(values: tuple) -> np.ndarray:
    return np.array(values, dtype=float)  # SQL NULL (None) -> NaN


class StoredScores:
    """Scores read back from ``triage_scores``, as columns: ``row[(text, label)]`` is the pair's position in ``domain``,
    ``margin``, ``quality`` (NaN where none was stored) and ``best``."""

    def __init__(self, row: dict[tuple[str, str], int], domain: np.ndarray, margin: np.ndarray, best: list[str | None],
                 quality: np.ndarray):
        self.row, self.domain, self.margin, self.best, self.quality = row, domain, margin, best, quality

    @classmethod
    def of(cls, rows: list, by_key: dict[tuple[str, str], tuple[str, str]]) -> StoredScores:
        """From (text sha256, label, domain, margin, best, quality) rows, keeping those ``by_key`` maps to an asked pair."""
        pairs = [by_key.get((h, label)) for h, label, *_ in rows]
        kept = [j for j, pair in enumerate(pairs) if pair is not None]
        columns = list(zip(*[rows[j] for j in kept])) or [()] * 6
        return cls({pairs[j]: n for n, j in enumerate(kept)}, _floats(columns[2]), _floats(columns[3]), list(columns[4]),
                   _floats(columns[5]))

    @classmethod
    def none(cls) -> StoredScores:
        return cls({}, np.empty(0), np.empty(0), [], np.empty(0))

    def __len__(self) -> int:
        return len(self.row)

    def __contains__(self, pair: tuple[str, str]) -> bool:
        return pair in self.row

    def __iter__(self):
        return iter(self.row)

    def __getitem__(self, pair: tuple[str, str]) -> tuple[float, float, str | None, float]:
        """(domain, margin, best, quality) of one pair."""
        n = self.row[pair]
        return float(self.domain[n]), float(self.margin[n]), self.best[n], float(self.quality[n])

    def texts(self) -> list[str]:
        return [t for t, _ in self.row]


class TriageCache:
    """The tables of one trace store (any SQLAlchemy engine); counts what it served and stored."""

    def __init__(self, engine: sa.Engine, chunk: int = d.EMBEDDING_CACHE_CHUNK):
        self.engine, self.chunk = engine, chunk
        self.counts = {"scores_reused": 0, "scores_stored": 0, "answers_reused": 0, "answers_stored": 0}
        self.write_error: str | None = None
        try:
            metadata.create_all(engine)
        except sa.exc.SQLAlchemyError as exc:  # a read-only role: read what is there, store nothing
            self.write_error = str(getattr(exc, "orig", exc)).splitlines()[0]

    def _write(self, do: Callable[[Any], None]) -> None:
        if self.write_error:
            return
        try:
            with self.engine.begin() as conn:
                do(conn)
        except (sa.exc.SQLAlchemyError, ValueError) as exc:
            self.write_error = str(getattr(exc, "orig", exc)).splitlines()[0]

    def _read(self, query) -> list:
        try:
            with self.engine.connect() as conn:
                return conn.execute(query).fetchall()
        except sa.exc.SQLAlchemyError:  # no table (a read-only store that never had one): nothing cached
            return []

    # --- the pinned reference --------------------------------------------------------------------------------------
    def pinned(self, key: str) -> dict[str, Any] | None:
        rows = self._read(sa.select(references).where(references.c.key == key))
        return dict(rows[0]._mapping) if rows else None

    def pin(self, key: str, digest: str, members: list[list[Any]], parent_examples: int, own: dict[str, list], at: str) -> None:
        own = {k: [_finite(float(x)) for x in v] for k, v in own.items()}

        def do(conn):
            conn.execute(references.delete().where(references.c.key == key))
            conn.execute(references.insert().values(key=key, digest=digest, members=members, parent_examples=parent_examples,
                                                    scores=own, created_at=at))
        self._write(do)

    # --- per-trace scores ------------------------------------------------------------------------------------------
    def scores(self, digest: str, pairs: list[tuple[str, str]]) -> StoredScores:
        """The scores of the pairs (text, label) that were scored against this reference before."""
        hashed: dict[str, str] = {}  # a log repeats its inputs: each distinct text is hashed once
        by_key: dict[tuple[str, str], tuple[str, str]] = {}
        for t, lab in pairs:
            if (h := hashed.get(t)) is None:
                h = hashed[t] = text_key(t)
            by_key[(h, lab)] = (t, lab)
        keys = list(hashed.values())
        columns = (scores.c.text_sha256, scores.c.label, scores.c.domain, scores.c.margin, scores.c.best, scores.c.quality)
        stored = self._read(sa.select(sa.func.count()).select_from(scores).where(scores.c.digest == digest))
        if stored and stored[0][0] <= 2 * len(keys):  # most of what this reference scored is asked for: one range scan
            queries = [sa.select(*columns).where(scores.c.digest == digest)]
        else:  # a few texts of many: look them up
            queries = [sa.select(*columns).where(scores.c.digest == digest, scores.c.text_sha256.in_(part)) for part in _chunks(keys, self.chunk)]
        rows = [row for query in queries for row in self._read(query)]
        found = StoredScores.of(rows, by_key)
        self.counts["scores_reused"] += len(found)
        return found

    def put_scores(self, digest: str, rows: list[tuple[str, str, float, float, str | None, float]]) -> None:
        values = [{"digest": digest, "text_sha256": text_key(t), "label": lab, "domain": _finite(float(dm)), "margin": _finite(float(mg)),
                   "best": best, "quality": _finite(float(q))} for t, lab, dm, mg, best, q in rows]

        def do(conn):
            for part in _chunks(values, self.chunk):
                conn.execute(insert_ignoring_duplicates(self.engine, scores), part)
        if values:
            self._write(do)
            if not self.write_error:
                self.counts["scores_stored"] += len(values)

    # --- the label-quality model fitted on a reference -------------------------------------------------------------
    def fitted(self, digest: str, fit: Callable[[], Any]) -> tuple[Any, str]:
        """(the model stored for this reference, or ``fit()``'s, then stored; how it was obtained)."""
        import zipfile

        import skops.io

        rows = self._read(sa.select(models.c.model).where(models.c.digest == digest))
        if rows:
            try:
                return skops.io.loads(rows[0][0], trusted=[]), "reused from the trace store"
            except Exception as exc:  # an unreadable or untrusted blob is a miss: fit again
                why = f"stored model unreadable ({type(exc).__name__}): fitted again"
        else:
            why = "fitted and stored"
        model = fit()
        blob = skops.io.dumps(model, compression=zipfile.ZIP_DEFLATED)

        def do(conn):
            conn.execute(models.delete().where(models.c.digest == digest))
            conn.execute(models.insert().values(digest=digest, model=blob))
        self._write(do)
        return model, why if not self.write_error else f"fitted (not stored: {self.write_error})"

    # --- the deployed model's answers ------------------------------------------------------------------------------
    def memoized_answers(self, model_sha256: str | None, answer: Callable[[list[str]], list[dict[str, Any]]],
                         fields: tuple[str, ...] = ()):
        """``answer`` (texts -> JSON-able answers) asked only for texts this model has not answered before. A stored
        answer that lacks one of ``fields`` (written before the answer carried it) is asked again and replaced."""
        if not model_sha256:
            return answer

        def call(texts: list[str]) -> list[dict[str, Any]]:
            keys = {text_key(t): t for t in texts}
            known: dict[str, dict[str, Any]] = {}
            stale: list[str] = []  # stored answers without one of the fields: replaced below
            for part in _chunks(list(keys), self.chunk):
                for r in self._read(sa.select(answers.c.text_sha256, answers.c.answer)
                                    .where(answers.c.model_sha256 == model_sha256, answers.c.text_sha256.in_(part))):
                    if all(f in r.answer for f in fields):
                        known[keys[r.text_sha256]] = r.answer
                    else:
                        stale.append(r.text_sha256)
            self.counts["answers_reused"] += sum(t in known for t in texts)
            todo = list(dict.fromkeys(t for t in texts if t not in known))
            if todo:
                fresh = dict(zip(todo, answer(todo)))
                known.update(fresh)
                rows = [{"model_sha256": model_sha256, "text_sha256": text_key(t), "answer": a} for t, a in fresh.items()]

                def do(conn):
                    for part in _chunks(stale, self.chunk):
                        conn.execute(answers.delete().where(answers.c.model_sha256 == model_sha256, answers.c.text_sha256.in_(part)))
                    for part in _chunks(rows, self.chunk):
                        conn.execute(insert_ignoring_duplicates(self.engine, answers), part)
                self._write(do)
                if not self.write_error:
                    self.counts["answers_stored"] += len(rows)
            return [known[t] for t in texts]
        return call

    def record(self) -> dict[str, Any]:
        return {**self.counts, **({"write_error": self.write_error} if self.write_error else {})}

