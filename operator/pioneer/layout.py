"""Where an adaptation's artifacts lie in its store, and the prepared-data record both modes hand on.

Shared by cold-start preparation (:mod:`pioneer.engine`), production preparation
(:mod:`pioneer.production.prepare`), the report and the adapters, so none of them imports another for a key::

    eval/evalset.jsonl  eval/manifest.json        frozen before any training (the manifest last)
    eval/regression.jsonl  eval/cross.jsonl       production: the gate's other two sets
    data/pool.jsonl  data/preparation.json        cold start: the cleaned pool, and what cleaning did
    data/failures.jsonl  data/passing.jsonl  data/parent_train.jsonl   production: curriculum sources
    attempts/<name>/...                           one folder per attempt
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

EVAL_KEY = "eval/evalset.jsonl"
EVAL_MANIFEST = "eval/manifest.json"
REGRESSION_KEY = "eval/regression.jsonl"
CROSS_KEY = "eval/cross.jsonl"
POOL_KEY = "data/pool.jsonl"
PREPARATION_KEY = "data/preparation.json"
FAILURES_KEY = "data/failures.jsonl"
PASSING_KEY = "data/passing.jsonl"
PARENT_TRAIN_KEY = "data/parent_train.jsonl"
TAXONOMY_KEY = "data/taxonomy.json"
EXCLUDED_KEY = "data/excluded.jsonl"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def attempt_key(name: str, leaf: str = "") -> str:
    return f"attempts/{name}/{leaf}" if leaf else f"attempts/{name}"


@dataclass(frozen=True)
class Prepared:
    """What preparation froze: the label order, the evaluation set and its hash, the pool size, and the record
    of every rule applied (``data/preparation.json``)."""

    labels: list[str]
    eval_uri: str
    eval_sha256: str
    pool_size: int
    record: dict[str, Any]


def reopen(store, what: str = "evaluation set") -> Prepared | None:
    """What an earlier preparation froze, with the evaluation set checked against its manifest; None when nothing is
    frozen yet (the manifest is written last). Both modes' preparations, and the operator, read it back this way."""
    from pioneer.data.evalset import verify
    from pioneer.store import read_json

    if not store.exists(EVAL_MANIFEST):
        return None
    manifest = read_json(store, EVAL_MANIFEST)
    verify(store.read_bytes(EVAL_KEY), manifest["sha256"], f"{what} {store.uri(EVAL_KEY)}")
    return Prepared(manifest["labels"], store.uri(EVAL_KEY), manifest["sha256"], manifest["pool_size"],
                    read_json(store, PREPARATION_KEY))
