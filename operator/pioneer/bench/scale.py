"""``pioneer bench scale``: how the trace store and the production preparation grow with a deployment's log.

A deployed model (revision 1, a small cold start on CLINC150's 150 intents) serves N judged traces of realistic
shape: CLINC150 utterances (never the parent's training examples) through the perturbation library at Table 12's
rates with ``--poison`` of the traffic poisoned, and a share of failures (``--failure-share``: the answer is another
intent; the judge's correction is what the log carries). For each N, in a fresh process (its own peak RSS):

- import: ``pioneer traces import`` of a JSONL file into a new SQLite store (rows/s), and into PostgreSQL with
  ``--postgres-url``;
- the SQL diagnosis queries (failure count, per-label pass rates);
- the production preparation (``production.prepare``: triage, taxonomy, gate sets), seconds and peak RSS;
- the incremental preparation: a second repair's preparation after 1% new traces.

Writes a JSON (``"runs": {"N": {...}}``) and a cost-growth table with the fitted exponent of time and memory in N.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pioneer.bench.common import deploy_first_revision, fresh_workdir

PARENT_PER_INTENT = 5
DEPLOYED = "clinc-scale"


def parent_spec(intents: list[str]) -> dict:
    return {
        "apiVersion": "pioneer.dev/v1alpha1", "kind": "ModelAdaptation", "metadata": {"name": "clinc-scale-v1"},
        "spec": {"task": {"description": "Route an assistant request to its intent.", "metric": "accuracy", "labels": intents},
                 "data": {"sources": [{"path": "parent-train.jsonl"}], "evaluation": {"size": 150}},
                 "hyperparameters": {"learningRate": 3e-4, "epochs": 1, "maxLength": 32, "batchSize": 32},
                 "gate": {"tau": 0.001}, "search": {"maxAttempts": 1, "parallelism": 1, "configurationsPerIteration": 1},
                 "artifacts": {"uri": "artifacts"}, "deployedModel": DEPLOYED}}


def repair_spec(intents: list[str], db: str, name: str, embedding_precision: str = "float32", fit_processes: int = 1,
                embeddings: str = "auto") -> dict:
    from pioneer.api.validation import parse_resource

    return parse_resource({
        "apiVersion": "pioneer.dev/v1alpha1", "kind": "ModelAdaptation", "metadata": {"name": name},
        "spec": {"mode": "production", "task": {"description": "Route an assistant request to its intent.", "metric": "accuracy",
                                                "labels": intents},
                 "data": {"sources": [{"traces": db}]}, "production": {"triage": {"embeddingPrecision": embedding_precision,
                                                                                      "fitProcesses": fit_processes,
                                                                                      "embeddings": embeddings}},
                 "artifacts": {"uri": "artifacts"}, "deployedModel": DEPLOYED}}).spec


def generate(path: Path, n: int, corpus: list[tuple[str, str]], intents: list[str], seed: int, failure_share: float, poison: float,
             start: int = 0) -> dict[str, int]:
    """Write ``n`` judged traces (ids from ``start``) to ``path`` as JSONL; return counts of what was generated."""
    from pioneer.bench.perturbations import perturb, rates_for

    rng = random.Random(f"scale-{seed}-{start}")
    rates = rates_for(poison)
    counts = {"traces": 0, "failing": 0, "poisoned": 0}
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(start, start + n):
            text, truth = corpus[rng.randrange(len(corpus))]
            s = perturb(text, truth, intents, rng, rates)[0]
            fails = rng.random() < failure_share
            prediction = rng.choice([x for x in intents if x != s.reference]) if fails else s.reference
            fh.write(json.dumps({"id": f"t{i:08d}", "input": s.text, "prediction": prediction, "corrected": s.reference,
                                 "verdict": "fail" if fails else "pass", "judge_reasoning": "exact match against the logged answer",
                                 "model_id": f"{DEPLOYED}@1", "created_at": "2026-12-01T00:00:00Z"}, ensure_ascii=False) + "\n")
            counts["traces"] += 1
            counts["failing"] += fails
            counts["poisoned"] += s.poisoned
    return counts


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class TreeRss(threading.Thread):
    """Samples the resident memory of this process and every process under it (the label-quality fits run in worker
    processes) every ``interval`` seconds with psutil; ``peak`` is the largest sum seen."""

    def __init__(self, interval: float = 0.25):
        super().__init__(daemon=True)
        self.interval, self.peak, self._done = interval, 0, threading.Event()

    @staticmethod
    def _tree_rss(root: int) -> int:
        import psutil

        total = 0
        me = psutil.Process(root)
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:  # a worker that exited between the listing and the reading
                continue
        return total

    def run(self) -> None:
        while not self._done.wait(self.interval):
            self.peak = max(self.peak, self._tree_rss(os.getpid()))

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak


def measure(n: int, work: Path, corpus: list[tuple[str, str]], intents: list[str], args: dict[str, Any]) -> dict[str, Any]:
    """Everything measured at one N (runs in its own process)."""
    from pioneer import deploy
    from pioneer.production.prepare import prepare
    from pioneer.store import LocalStore
    from pioneer.traces import calibration
    from pioneer.traces import store as trace_store

    folder = work / f"n{n}"
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"traces": n}
    t = time.monotonic()
    out["generated"] = generate(folder / "traces.jsonl", n, corpus, intents, args["seed"], args["failure_share"], args["poison"])
    out["generate_seconds"] = round(time.monotonic() - t, 2)

    db = folder / "traces.db"
    engine = trace_store.connect(db)
    t = time.monotonic()
    report = trace_store.import_file(engine, folder / "traces.jsonl")
    seconds = time.monotonic() - t
    out["import_seconds"], out["import_rows_per_second"] = round(seconds, 2), round(report.added / seconds, 1)
    out["imported"] = report.added
    if args.get("postgres_url"):
        pg = trace_store.connect(args["postgres_url"])
        with pg.begin() as conn:
            conn.execute(trace_store.traces.delete())
        t = time.monotonic()
        pg_report = trace_store.import_file(pg, folder / "traces.jsonl")
        seconds = time.monotonic() - t
        out["postgres_import_rows_per_second"] = round(pg_report.added / seconds, 1)
        pg.dispose()
    t = time.monotonic()
    failures = trace_store.count_failures(engine, f"{DEPLOYED}@1")
    history = calibration.label_history(engine)
    out["sql_diagnosis_seconds"] = round(time.monotonic() - t, 3)
    out["sql_failures"], out["sql_labels"] = failures, len(history)

    registry = LocalStore(work / "parent" / "artifacts")
    deployed = deploy.load(registry, DEPLOYED)

    def prepared(name: str) -> tuple[float, dict]:
        store = LocalStore(folder / name)
        sampler = TreeRss()
        sampler.start()
        t = time.monotonic()
        result = prepare(repair_spec(intents, str(db), name, args["embedding_precision"], args["fit_processes"], args["embeddings"]), store, deployed, f"DeployedModel {DEPLOYED}")
        seconds = time.monotonic() - t
        tree_peaks.append(sampler.stop())
        return seconds, result.record

    tree_peaks: list[int] = []
    seconds, record = prepared("repair-1")
    out["prepare_seconds"] = round(seconds, 2)
    out["peak_rss_bytes"] = _peak_rss()
    out["peak_rss_tree_bytes"] = tree_peaks[0]  # with the worker processes, sampled every 0.25 s
    out["prepared"] = {k: record[k] for k in ("traces", "failing", "passing", "fixable", "external", "regression_set", "cross_checkpoint_set")}
    out["triage_reference"] = record["triage"].get("reference")

    extra = max(1, n // 100)
    generate(folder / "new.jsonl", extra, corpus, intents, args["seed"], args["failure_share"], args["poison"], start=n)
    trace_store.import_file(engine, folder / "new.jsonl")
    seconds, record = prepared("repair-2")
    out["incremental_traces"] = extra
    out["incremental_prepare_seconds"] = round(seconds, 2)
    out["incremental_share_of_first"] = round(seconds / out["prepare_seconds"], 4)
    out["peak_rss_bytes_after_incremental"] = _peak_rss()
    return out


def _child(n: int, work: str, corpus, intents, args, result_path: str) -> None:
    try:
        result = measure(n, Path(work), corpus, intents, args)
    except Exception as exc:  # the parent reports it; one N failing (memory, time) must not hide the others
        import traceback

        result = {"traces": n, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
    Path(result_path).write_text(json.dumps(result, indent=2))


def exponent(ns: list[int], values: list[float]) -> float | None:
    """Least-squares slope of log(value) on log(N): cost grows as N^slope."""
    import numpy as np

    pairs = [(math.log(n), math.log(v)) for n, v in zip(ns, values) if v and v > 0]
    if len(pairs) < 2:
        return None
    x, y = np.array(pairs).T
    return round(float(np.polyfit(x, y, 1)[0]), 3)


def growth_table(runs: dict[str, dict]) -> str:
    ok = [r for r in runs.values() if "error" not in r]
    ns = [r["traces"] for r in ok]
    lines = ["| N | import rows/s | prepare s | peak RSS MiB (with worker processes) | incremental prepare s (share of first) |",
             "|---|---|---|---|---|"]
    for r in ok:
        tree = r.get("peak_rss_tree_bytes")
        lines.append(f"| {r['traces']:,} | {r['import_rows_per_second']:,.0f} | {r['prepare_seconds']:.1f} | "
                     f"{r['peak_rss_bytes'] / 2**20:,.0f}" + (f" ({tree / 2**20:,.0f})" if tree else "") +
                     f" | {r['incremental_prepare_seconds']:.1f} ({r['incremental_share_of_first']:.0%}) |")
    for r in runs.values():
        if "error" in r:
            lines.append(f"| {r['traces']:,} | failed: {r['error'][:120]} | | | |")
    lines.append("")
    lines.append(f"fitted exponent in N: import time {exponent(ns, [r['import_seconds'] for r in ok])}, "
                 f"prepare time {exponent(ns, [r['prepare_seconds'] for r in ok])}, peak RSS {exponent(ns, [r['peak_rss_bytes'] for r in ok])}")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from pioneer.runner.display import Display

    data_file = Path(args.data_dir) / "clinc150" / "data_full.json"
    if not data_file.is_file():
        print(f"scale: {data_file} not found; pass --data-dir pointing at the shared datasets folder", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    work = fresh_workdir(args, out)
    data = json.loads(data_file.read_text())
    pool = [(t, y) for t, y in data["train"] + data["val"] + data["test"]]
    intents = sorted({y for _, y in pool})
    rng = random.Random(args.seed)
    rng.shuffle(pool)
    parent, taken, corpus = [], {}, []
    for t, y in pool:
        if taken.get(y, 0) < PARENT_PER_INTENT:
            parent.append((t, y))
            taken[y] = taken.get(y, 0) + 1
        else:
            corpus.append((t, y))
    (work / "parent").mkdir()
    (work / "parent" / "parent-train.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in parent))
    print(f"scale: deploying the parent (150 intents x {PARENT_PER_INTENT} examples)", file=sys.stderr)
    _, deployed = deploy_first_revision(parent_spec(intents), work / "parent", Display())
    if deployed is None:
        print("scale: the parent was not promoted", file=sys.stderr)
        return 1
    child_args = {"seed": args.seed, "failure_share": args.failure_share, "poison": args.poison, "postgres_url": args.postgres_url,
                  "embedding_precision": args.embedding_precision, "fit_processes": args.fit_processes, "embeddings": args.triage_embeddings}
    result: dict[str, Any] = {"benchmark": "scale", "corpus": len(corpus), "intents": len(intents), "failure_share": args.failure_share,
                              "poison": args.poison,
                              "embedding_precision": args.embedding_precision, "fit_processes": args.fit_processes,
                              "triage_embeddings": args.triage_embeddings, "runs": {}}
    if args.triage_embeddings != "encoder":  # distilled once here, so no N's preparation is timed with it
        from pioneer import defaults
        from pioneer.data.static_embeddings import distill

        t = time.monotonic()
        distill(defaults.BASE_MODEL, log=lambda m: print(f"scale: {m}", file=sys.stderr))
        result["static_distillation_seconds"] = round(time.monotonic() - t, 1)
    ctx = multiprocessing.get_context("spawn")
    for n in args.traces:
        print(f"scale: N = {n:,}", file=sys.stderr)
        path = work / f"result-{n}.json"
        proc = ctx.Process(target=_child, args=(n, str(work), corpus, intents, child_args, str(path)))
        started = time.monotonic()
        proc.start()
        proc.join(args.timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()
            run_result = {"traces": n, "error": f"over --timeout {args.timeout} s"}
        elif not path.is_file():
            run_result = {"traces": n, "error": f"the measuring process died (exit {proc.exitcode}; memory?)"}
        else:
            run_result = json.loads(path.read_text())
        run_result["wall_seconds"] = round(time.monotonic() - started, 1)
        result["runs"][str(n)] = run_result
        print(json.dumps({k: v for k, v in run_result.items() if not isinstance(v, dict) and k != "traceback"}), file=sys.stderr)
        out.write_text(json.dumps(result, indent=2) + "\n")  # every N is kept as soon as it is measured
    table = growth_table(result["runs"])
    result["growth_table"] = table
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(table)
    print(table)
    return 0 if all("error" not in r for r in result["runs"].values()) else 1
