"""Production-mode preparation: from judged traces and the deployed parent to frozen gate sets and a diagnosis.

Writes, before any training (and reuses on resume):
    eval/evalset.jsonl      every fixable failing trace, labelled with its correction (the failure set), and with
                            task.outOfScopeLabel every off-task input, labelled with that label
    eval/regression.jsonl   stratified sample of passing traces (30-100% of the failure-set size)
    eval/cross.jsonl        the previous checkpoint's evaluation examples it got right (cross-checkpoint gate)
    data/failures.jsonl data/passing.jsonl data/parent_train.jsonl   curriculum sources
    data/taxonomy.json      clusters with size, examples, fixability and evidence
    data/excluded.jsonl     every trace kept out of training (failing or passing), with reason and evidence
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pioneer import defaults as d
from pioneer.api.models import DeployedModelStatus, ModelAdaptationSpec
from pioneer.core import gate
from pioneer.data.bio import alignment_problem
from pioneer.data.evalset import serialize, sha256
from pioneer.data.examples import DataError, Example, example_id
from pioneer.layout import (
    CROSS_KEY,
    EVAL_KEY,
    EVAL_MANIFEST,
    EXCLUDED_KEY,
    FAILURES_KEY,
    PARENT_TRAIN_KEY,
    PASSING_KEY,
    PREPARATION_KEY,
    REGRESSION_KEY,
    TAXONOMY_KEY,
    Prepared,
    now,
    reopen,
)
from pioneer.production import ner_repair
from pioneer.production.diagnosis import SCORES_VERSION, confirm, taxonomy, triage
from pioneer.store import ArtifactStore, split_uri, write_json, write_jsonl
from pioneer.traces import store as trace_store


def _read_uri_rows(uri: str) -> list[dict]:
    store, key = split_uri(uri)
    return [json.loads(line) for line in store.read_bytes(key).decode().splitlines() if line.strip()]


def parent_preprocessing(model_uri: str) -> dict:
    """The parent's saved preprocessing (``pioneer-model.json``: task type, labels, backend), or {} for a folder without it."""
    from pioneer.inference import PREPROCESSING_FILE

    store, key = split_uri(model_uri.rstrip("/") + "/" + PREPROCESSING_FILE)
    try:
        return json.loads(store.read_bytes(key))
    except (OSError, ValueError):
        return {}


def parent_labels(model_uri: str, fallback: list[str] | None) -> list[str]:
    """The parent's label order (its classifier head), so evaluating the parent keeps its weights meaningful."""
    store, key = split_uri(model_uri.rstrip("/") + "/config.json")
    try:
        config = json.loads(store.read_bytes(key))
        id2label = config.get("id2label") or {}
        return [id2label[str(i)] if str(i) in id2label else id2label[i] for i in range(len(id2label))]
    except (OSError, KeyError, ValueError):
        if fallback:
            return fallback
        raise DataError(f"cannot read the label set of the deployed model at {model_uri}") from None


def embeddings_choice(asked: str, passing: int) -> tuple[str, str]:
    """(the embeddings a triage of ``passing`` passing traces uses, why) for ``production.triage.embeddings`` ``asked``:
    auto is the encoder while the passing traces are few enough to embed in minutes, and hybrid above (the encoder for
    failures, the static table for the passing traces' domain screen)."""
    if asked != "auto":
        return asked, f"embeddings: {asked} (the spec)"
    if passing > d.TRIAGE_HYBRID_ABOVE:
        return "hybrid", f"embeddings: auto, {passing:,} passing traces > {d.TRIAGE_HYBRID_ABOVE:,}: hybrid"
    return "encoder", f"embeddings: auto, {passing:,} passing traces <= {d.TRIAGE_HYBRID_ABOVE:,}: encoder"


def _embedders(base_model: str, engine: sa.Engine, policy, choice: str, record: dict[str, Any]) -> tuple[Any, Any]:
    """The triage's sentence embeddings from the base model, (failing traces', passing traces'), per ``choice``: its
    encoder for both, a static table distilled from it for both, or the encoder for failures and the table for passing
    traces (hybrid; the encoder for both, recorded in ``record``, where no table can be distilled from the model). Each
    distinct text is computed once per space and kept in the trace store (the next repair reads them); (None, None)
    (character n-grams) when the model cannot be loaded."""
    from pioneer.data.embeddings import encoder_embedder, memoized
    from pioneer.traces.embedding_cache import EmbeddingCache

    try:
        encoder = static = None
        store = EmbeddingCache(engine)  # one per store: each space keys its own rows
        if choice in ("encoder", "hybrid"):
            encoder = memoized(encoder_embedder(base_model, precision=policy.embedding_precision), store)
        if choice in ("static", "hybrid"):
            from pioneer.data.static_embeddings import static_embedder

            try:
                static = memoized(static_embedder(base_model), store)
            except (OSError, ValueError) as exc:
                if encoder is None:
                    raise
                record["static_table"] = f"not distilled ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): the encoder embeds the passing traces too"
    except (OSError, ValueError):
        return None, None
    return (encoder or static), (static or encoder)


def _judged_traces(engine: sa.Engine, model_id: str | None, fits) -> tuple[list[dict], list[dict], int]:
    """(failing traces with a correction, passing traces whose answer fits the task, how many judged traces were read),
    streamed from the store ``TRACE_READ_CHUNK`` rows at a time in id order (a million-trace log is never one result
    list). Labels are shared strings: a million traces hold a few hundred distinct answers."""
    failures: list[dict] = []
    passing: list[dict] = []
    shared: dict[str, str] = {}
    judged = 0
    query = sa.text("SELECT id, input, prediction, corrected, verdict FROM effective_traces WHERE verdict IS NOT NULL"
                    + trace_store.model_filter(model_id) + " ORDER BY id")
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=d.TRACE_READ_CHUNK).execute(query, trace_store.model_params(model_id))
        for part in result.partitions(d.TRACE_READ_CHUNK):  # the size named: without it, SQLite's cursor hands out one row at a time
            judged += len(part)
            for trace_id, text, prediction, corrected, verdict in part:
                prediction = shared.setdefault(prediction, prediction) if prediction is not None else None
                if verdict == "fail" and corrected:
                    failures.append({"id": trace_id, "text": text, "prediction": prediction, "corrected": shared.setdefault(corrected, corrected)})
                elif verdict == "pass" and prediction and fits(text, prediction):
                    passing.append({"id": trace_id, "text": text, "prediction": prediction})
    return failures, passing, judged


def _deployed_model(model_uri: str):
    """The deployed model as a function texts -> answers ({output, ranked}), loaded once on first use, with its own
    preprocessing: the live confirmation probes and the triage's second look ask it."""
    loaded = []

    def answer(texts: list[str]) -> list[dict]:
        from pioneer import inference

        if not loaded:
            store, key = split_uri(model_uri)
            local = model_uri if not model_uri.startswith("s3://") else str(store.download_dir(key, Path("/tmp/pioneer-parent") / key))
            loaded.append(inference.load(local))
        return [{"output": a.output, "ranked": list(a.ranked)} for a in loaded[0].predict(texts)]
    return answer


def _llm_review(spec: ModelAdaptationSpec, store: ArtifactStore, tri, labels: list[str]) -> list[dict]:
    """production.triage.llm: Claude's review of every failing trace, combined one way with the statistics (agent.llm_triage)."""
    import os

    from pioneer.agent import llm_triage

    key = os.environ.get("ANTHROPIC_API_KEY")
    if not key:
        raise DataError("spec.production.triage.llm is true, but ANTHROPIC_API_KEY is not set (the preparation needs it)")
    reviewed = llm_triage.review(store, tri.fixable + tri.external, spec.task.description, labels, spec.search.llm.model, key,
                                 spec.search.llm.base_url, spec.search.llm.timeout_seconds)
    tri.fixable, tri.external, disagreements = llm_triage.combine(tri.fixable, tri.external, reviewed, spec.production.triage.fdr)
    tri.calibration["llm_review"] = {"model": reviewed["model"], "reviewed": len(reviewed["verdicts"]), "errors": reviewed["errors"],
                                     "usage": reviewed["usage"]}
    return disagreements


def prepare(spec: ModelAdaptationSpec, store: ArtifactStore, deployed: DeployedModelStatus | None, where: str,
            base_dir: Path | None = None) -> Prepared:
    """``deployed`` is the target DeployedModel's status as the registry port read it (``where`` names it in errors)."""
    if (frozen := reopen(store, "failure set")) is not None:
        return frozen
    current = gate.current(deployed) if deployed is not None else None
    if current is None:
        raise DataError(f"DeployedModel {spec.deployed_model!r} has no current revision ({where})")
    ner = spec.task.type == "ner"
    disagreements: list[dict] | None = None
    saved = parent_preprocessing(current.model_uri)
    parent_backend = saved.get("backend", d.BACKEND)
    if parent_backend == "gliner2":  # a span extractor has no label head: its labels are the saved task labels (entity types)
        labels = list(saved.get("labels") or spec.task.labels or [])
    else:
        labels = parent_labels(current.model_uri, spec.task.labels)
        if ner:  # the parent's head holds BIO tags; the task's labels are their entity types
            labels = list(dict.fromkeys(t[2:] for t in labels if t[:2] in ("B-", "I-")))
    label_set = set(labels)
    fits = ((lambda text, label: alignment_problem(text.split(" "), label.split(" "), labels) is None) if ner
            else (lambda text, label: label in label_set))

    source = next(src for src in spec.data.sources if src.traces)
    db_ref = source.traces
    if "://" not in db_ref and base_dir is not None and not Path(db_ref).is_absolute():
        db_ref = str(base_dir / db_ref)
    try:
        engine = trace_store.open_source(db_ref)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    failures, passing, judged = _judged_traces(engine, source.model_id, fits)
    if not failures:
        raise DataError(f"no failing traces with a correction in {db_ref}: nothing to repair")

    parent_train = []
    if current.train_uri:
        try:
            parent_train = [Example(r["text"], r["label"], role="parent") for r in _read_uri_rows(current.train_uri) if fits(r["text"], r["label"])]
        except OSError:
            parent_train = []
    if ner:
        tri = ner_repair.triage(failures, passing, labels, reference=[(ex.text, ex.label) for ex in parent_train], seed=spec.search.seed)
        clusters = ner_repair.taxonomy(tri)
        for p in tri.kept_passing:  # the regression set keeps the share of sentences with and without entities
            p["stratum"] = "entity-free" if set(p["prediction"].split(" ")) == {"O"} else "with entities"
    else:
        from pioneer.traces.triage_cache import TriageCache, reference_key

        cache = TriageCache(engine)
        deployed_model = cache.memoized_answers(current.model_sha256, _deployed_model(current.model_uri), fields=("output", "ranked"))
        choice, why = embeddings_choice(spec.production.triage.embeddings, len(passing))
        chosen: dict[str, Any] = {"choice": choice, "why": why}
        embed, embed_passing = (_embedders(spec.hyperparameters.base_model, engine, spec.production.triage, choice, chosen)
                                if parent_train or passing else (None, None))
        seed, bound = spec.search.seed, spec.production.triage.reference_max
        space = None if embed is None else embed.space if embed_passing is embed else f"{embed.space} + passing: {embed_passing.space}"
        key = reference_key(current.model_sha256, seed, bound, space, SCORES_VERSION) if space and current.model_sha256 else None
        tri = triage(failures, passing, labels, seed, reference=[(ex.text, ex.label) for ex in parent_train],
                     embed=embed, embed_passing=embed_passing,
                     out_of_scope_label=spec.task.out_of_scope_label, fdr=spec.production.triage.fdr, reference_max=bound,
                     ranked=lambda texts: [a["ranked"] for a in deployed_model(texts)], cache=cache if key else None, cache_key=key,
                     fit_processes=spec.production.triage.fit_processes)
        if embed is not None:
            tri.calibration["embeddings"] = {**chosen, "space": embed.space, **embed.counts, "trace_store_cache": embed.cache_record()}
            if embed_passing is not embed:
                tri.calibration["embeddings"]["passing"] = {"space": embed_passing.space, **embed_passing.counts,
                                                            "trace_store_cache": embed_passing.cache_record()}
        if spec.production.triage.llm:
            disagreements = _llm_review(spec, store, tri, labels)
        clusters = confirm(taxonomy(tri), tri.fixable, lambda texts: [a["output"] for a in deployed_model(texts)])
        tri.calibration["model_answers"] = {k: v for k, v in cache.record().items() if k.startswith("answers") or k == "write_error"}
    passing = tri.kept_passing
    # what this triage sets aside is not replayed either, even where an earlier revision trained on it
    set_aside = {example_id(t["text"]) for t in tri.external + tri.screened}
    replayable = [ex for ex in parent_train if ex.id not in set_aside]
    dropped_from_replay, parent_train = len(parent_train) - len(replayable), replayable
    failure_set = [Example(f["text"], f["corrected"], role="failure", meta={"trace": f["id"], "prediction": f["prediction"]})
                   for f in tri.fixable]
    out_of_scope = spec.task.out_of_scope_label
    routed = [] if ner or not out_of_scope else tri.off_task()
    if routed and out_of_scope not in labels:
        raise DataError(f"task.outOfScopeLabel {out_of_scope!r} is not a label of the deployed model ({labels})")
    # off-task inputs are corrected to the out-of-scope label (never to the logged answer) and join the failure set
    failure_set += [Example(t["text"], out_of_scope, role="out-of-scope", meta={"trace": t["id"], "prediction": t["prediction"], "reason": t["reason"]})
                    for t in routed]
    size = gate.regression_set_size(len(failure_set), len(passing), spec.gate.regression_set_fraction)
    regression = [Example(p["text"], p["prediction"], role="regression", meta={"trace": p["id"]})
                  for p in gate.stratified_sample(passing, size, "stratum" if ner else "prediction", spec.search.seed)]
    cross: list[Example] = []
    if spec.gate.cross_checkpoint and current.predictions_uri:
        try:
            # behaviour the previous checkpoint got right, less the inputs this triage set aside (nothing to preserve there)
            cross = [Example(r["text"], r["label"], role="cross-checkpoint") for r in _read_uri_rows(current.predictions_uri)
                     if r.get("correct") and fits(r["text"], r["label"]) and example_id(r["text"]) not in set_aside]
        except OSError:
            cross = []

    eval_bytes = serialize(failure_set)
    digest = sha256(eval_bytes)
    record = {
        "mode": "production", "deployed_model": spec.deployed_model, "parent_revision": current.revision,
        "parent_model": current.model_uri, "parent_model_sha256": current.model_sha256, "parent_backend": parent_backend, "labels": labels, "traces": judged, "failing": len(failures),
        "passing": len(passing) + len(tri.screened), "passing_screened": len(tri.screened),
        "fixable": len(tri.fixable), "external": len(tri.external),
        "regression_set": len(regression), "cross_checkpoint_set": len(cross), "parent_train": len(parent_train),
        "taxonomy": clusters, "created_at": now(),
        "triage": {**tri.calibration, "taken_back": len(tri.taken_back),
                   **({"llm_disagreements": disagreements} if disagreements is not None else {})},
        "rules": [{"rule": "triage", "description": "failing traces kept as fixable vs. set aside as external (with evidence)" + (
                       f": input detectors, then statistical checks at false-discovery rate {spec.production.triage.fdr:g} (conformal "
                       "p-values, Benjamini-Hochberg)" if tri.calibration else ": input detectors, alignment, word-level confident learning"),
                   "before": len(failures), "after": len(tri.fixable),
                   "details": {"external": dict(Counter(e["reason"] for e in tri.external)), "calibration": tri.calibration}},
                  {"rule": "take-back-borderline", "description": ("borderline label doubts (BH-adjusted p above "
                                                                   f"{tri.calibration.get('borderline_above', 0):g}) on failures whose correction the "
                                                                   f"deployed model ranks in its top {tri.calibration.get('second_look_top', 2)}, kept fixable"),
                   "before": len(tri.fixable) - len(tri.taken_back), "after": len(tri.fixable),
                   "details": {"taken_back": tri.taken_back[:50]}},
                  {"rule": "screen-passing", "description": "passing traces set aside by the same input detectors (not trained on)",
                   "before": len(passing) + len(tri.screened), "after": len(passing),
                   "details": {"screened": dict(Counter(e["reason"] for e in tri.screened))}},
                  {"rule": "drop-set-aside-from-replay", "description": "the parent's training examples whose input this triage set aside are not replayed",
                   "before": len(parent_train) + dropped_from_replay, "after": len(parent_train), "details": {}},
                  {"rule": "route-off-task", "description": (f"off-task inputs (failing or passing) trained as {out_of_scope!r}, never with their logged answer"
                                                             if out_of_scope else "off-task inputs excluded (task.outOfScopeLabel not set)"),
                   "before": len(tri.off_task()), "after": len(routed), "details": {"reasons": dict(Counter(t["reason"] for t in routed))}}],
        "evaluation": {"size": len(failure_set), "slices": dict(Counter(ex.role for ex in failure_set))},
    }
    write_jsonl(store, FAILURES_KEY, [ex.to_row() for ex in failure_set])
    # passing traces are judge-verified training data, except the regression set: the gate's check stays unseen
    held = {ex.meta["trace"] for ex in regression}
    write_jsonl(store, PASSING_KEY, Example.rows(((p["text"], p["prediction"]) for p in passing if p["id"] not in held), role="passing"))
    write_jsonl(store, PARENT_TRAIN_KEY, [ex.to_row() for ex in parent_train])
    write_json(store, TAXONOMY_KEY, {"clusters": clusters, "external": tri.external[:200]})
    write_jsonl(store, EXCLUDED_KEY, tri.excluded(out_of_scope if routed else None))
    regression_bytes = serialize(regression)
    store.write_bytes(REGRESSION_KEY, regression_bytes)
    store.write_bytes(CROSS_KEY, serialize(cross))
    write_json(store, PREPARATION_KEY, record)
    store.write_bytes(EVAL_KEY, eval_bytes)
    pool = len(passing) + len(parent_train)
    write_json(store, EVAL_MANIFEST, {"sha256": digest, "labels": labels, "size": len(failure_set), "pool_size": pool,
                                      "slices": dict(Counter(ex.role for ex in failure_set)), "frozen_at": now(),
                                      "regression_sha256": sha256(regression_bytes)})
    return Prepared(labels, store.uri(EVAL_KEY), digest, pool, record)
