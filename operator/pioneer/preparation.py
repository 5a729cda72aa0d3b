"""Production preparation as a program of its own: what a preparation Job runs.

The operator never triages traces itself. It writes a request (the spec, and the DeployedModel's status as it
read it from the cluster) to ``prepare/request.json`` in the adaptation's store and starts a Job from the
trainer image, ``python -m pioneer.trainer <request URI>``. The Job runs the triage, embeddings, confident
learning and live probes (:func:`pioneer.production.prepare.prepare`), writes the frozen sets to the store
(the evaluation manifest last) and exits 0; on bad data it writes ``prepare/failure.json`` and exits 1. The
operator reads only these files.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Literal

from pydantic import BaseModel

from pioneer.api.models import DeployedModelStatus, ModelAdaptationSpec
from pioneer.store import ArtifactStore, open_store, read_json, write_json

REQUEST_KEY = "prepare/request.json"
FAILURE_KEY = "prepare/failure.json"


class PreparationRequest(BaseModel):
    kind: Literal["Preparation"] = "Preparation"
    adaptation: str
    spec: ModelAdaptationSpec
    deployed: DeployedModelStatus | None
    where: str  # names the DeployedModel in errors
    store_uri: str  # the adaptation's artifact folder


def failure(store: ArtifactStore) -> str | None:
    """The reason a preparation Job gave up (bad data), or None."""
    if not store.exists(FAILURE_KEY):
        return None
    try:
        rec = read_json(store, FAILURE_KEY)
        return f"{rec.get('error')}: {rec.get('message')}"
    except ValueError:
        return f"{store.uri(FAILURE_KEY)} is unreadable"


def request(store: ArtifactStore, adaptation: str, spec: ModelAdaptationSpec, deployed: DeployedModelStatus | None,
            where: str) -> str:
    """Write the request once (a restarted operator reuses it) and return its URI."""
    if not store.exists(REQUEST_KEY):
        req = PreparationRequest(adaptation=adaptation, spec=spec, deployed=deployed, where=where, store_uri=store.uri(""))
        store.write_bytes(REQUEST_KEY, req.model_dump_json(by_alias=True).encode())
    return store.uri(REQUEST_KEY)


def is_request(data: bytes) -> bool:
    try:
        return json.loads(data).get("kind") == "Preparation"
    except (ValueError, AttributeError):
        return False


def run(data: bytes) -> int:
    """Carry out one request; exit code 0 when the sets are frozen, 1 on bad data (reason in failure.json)."""
    from pioneer.data.evalset import EvalSetTampered
    from pioneer.data.examples import DataError
    from pioneer.production.prepare import prepare
    from pioneer.revisions import ModelTampered
    from pioneer.trainer.base_models import ModelNotFound

    req = PreparationRequest.model_validate_json(data)
    store = open_store(req.store_uri.rstrip("/"))
    store.delete_prefix(FAILURE_KEY)
    try:
        prepared = prepare(req.spec, store, req.deployed, req.where)
    except (DataError, EvalSetTampered, ModelNotFound, ModelTampered, OSError) as exc:
        print(f"pioneer-prepare: {req.adaptation}: {type(exc).__name__}: {exc}", file=sys.stderr)
        write_json(store, FAILURE_KEY, {"error": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()[-4000:]})
        return 1
    rec = prepared.record
    print(f"pioneer-prepare: {req.adaptation}: failure set {rec['evaluation']['size']}, regression set "
          f"{rec.get('regression_set')}, cross-checkpoint set {rec.get('cross_checkpoint_set')}")
    return 0
