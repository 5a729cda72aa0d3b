"""Embeddings kept in the trace store, keyed by the embedding space and the text's SHA-256.

A repair embeds every trace it triages; the next repair of the same deployment sees mostly the same traces.
With the vectors stored beside the traces, a second preparation embeds only the texts it has not seen. The
*space* names the model and how it embeds (``encoder_embedder``'s ``space``): vectors of another model or
another preprocessing never mix. A store the preparation may only read still serves cached vectors; what it
cannot write is recorded, never fatal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import sqlalchemy as sa

from pioneer import defaults as d
from pioneer.traces.store import insert_ignoring_duplicates

metadata = sa.MetaData()
embeddings = sa.Table(
    "embedding_cache", metadata,
    sa.Column("space", sa.String(256), primary_key=True, doc="the embedding model and its preprocessing"),
    sa.Column("text_sha256", sa.String(64), primary_key=True),
    sa.Column("vector", sa.LargeBinary, nullable=False, doc="float32, little-endian"),
)


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class EmbeddingCache:
    """Read and write vectors of one trace store (any SQLAlchemy engine); counts what it served and stored."""

    def __init__(self, engine: sa.Engine, chunk: int = d.EMBEDDING_CACHE_CHUNK):
        self.engine, self.chunk = engine, chunk
        self.hits = self.stored = 0
        self.write_error: str | None = None
        try:
            metadata.create_all(engine)
        except sa.exc.SQLAlchemyError as exc:  # a read-only role: read what is there, store nothing
            self.write_error = str(getattr(exc, "orig", exc)).splitlines()[0]

    def get(self, space: str, texts: list[str]) -> dict[str, np.ndarray]:
        keys = {text_key(t): t for t in texts}
        found: dict[str, np.ndarray] = {}
        try:
            with self.engine.connect() as conn:
                for part in _chunks(list(keys), self.chunk):
                    rows = conn.execute(sa.select(embeddings.c.text_sha256, embeddings.c.vector)
                                        .where(embeddings.c.space == space, embeddings.c.text_sha256.in_(part)))
                    for k, blob in rows:
                        found[keys[k]] = np.frombuffer(blob, dtype="<f4")
        except sa.exc.SQLAlchemyError:  # no table (a read-only store that never had one): nothing cached
            return {}
        self.hits += len(found)
        return found

    def put(self, space: str, texts: list[str], vectors: np.ndarray) -> None:
        if self.write_error or not texts:
            return
        rows = [{"space": space, "text_sha256": text_key(t), "vector": np.asarray(v, dtype="<f4").tobytes()} for t, v in zip(texts, vectors)]
        try:
            with self.engine.begin() as conn:
                for part in _chunks(rows, self.chunk):
                    conn.execute(insert_ignoring_duplicates(self.engine, embeddings), part)
            self.stored += len(rows)
        except (sa.exc.SQLAlchemyError, ValueError) as exc:  # read-only, or a database without idempotent inserts
            self.write_error = str(getattr(exc, "orig", exc)).splitlines()[0]

    def record(self) -> dict[str, Any]:
        return {"hits": self.hits, "stored": self.stored, **({"write_error": self.write_error} if self.write_error else {})}

