"""The adaptation report: what was tried, why, and what came of it (Markdown + self-contained HTML).

Built only from artifacts (state, preparation record, attempt specs, metrics, curation records), so
it can be regenerated at any time with ``pioneer report``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections import Counter
from typing import Any

import matplotlib

matplotlib.use("Agg")
import markdown
import matplotlib.pyplot as plt

from pioneer.api.models import TrainingAttempt
from pioneer.core.graph import Graph, score
from pioneer.layout import EVAL_MANIFEST, EXCLUDED_KEY, PREPARATION_KEY, attempt_key
from pioneer.store import ArtifactStore, read_json, read_jsonl
from pioneer.trainer.run import OUTPUT

REPORT_DIR = "report"


def _fmt(x: float | None, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def plot_search_graph(graph: Graph, tau: float, metric: str) -> bytes:
    fig, ax = plt.subplots(figsize=(8, 4.2))
    pos = {}
    for a in graph.attempts:
        s = score(a)
        if s is not None:
            pos[a.metadata.name] = (a.spec.iteration, s)
    for a in graph.attempts:
        if a.spec.parent in pos and a.metadata.name in pos:
            (x0, y0), (x1, y1) = pos[a.spec.parent], pos[a.metadata.name]
            ax.plot([x0, x1], [y0, y1], color="#bbbbbb", lw=1, zorder=1)
    best = graph.best()
    for name, (x, y) in pos.items():
        is_best = best is not None and name == best.metadata.name
        ax.scatter([x], [y], s=80 if is_best else 40, color="#d62728" if is_best else "#1f77b4", zorder=2)
        ax.annotate(name.rsplit("-", 2)[-2] + "-" + name.rsplit("-", 1)[-1] if "-i" in name else "baseline", (x, y),
                    textcoords="offset points", xytext=(5, 4), fontsize=7)
    failed = [a for a in graph.trained if a.status and a.status.phase == "Failed"]
    for a in failed:
        ax.scatter([a.spec.iteration], [0], marker="x", color="black", zorder=2)
    ax.axhline(tau, ls="--", color="#2ca02c", lw=1, label=f"tau = {tau}")
    ax.set_xticks(range(graph.latest_iteration + 1))
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"{metric} on the frozen evaluation set")
    ax.set_title("Search graph: score per attempt (edges: derived from)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_threshold_curve(curve: list[dict[str, Any]], chosen: float) -> bytes:
    """NER decision threshold sweep: precision, recall and F1 against the threshold."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = [c["threshold"] for c in curve]
    for key in ("precision", "recall", "f1"):
        ax.plot(xs, [c[key] for c in curve], marker="o", ms=3, label=key)
    ax.axvline(chosen, color="grey", ls="--", lw=1, label=f"chosen {chosen}")
    ax.set_xlabel("decision threshold (entity probability mass)")
    ax.set_ylabel("entity-level score")
    ax.legend(fontsize=8)
    return _png(fig)


def plot_confusion(cm: dict[str, Any], title: str) -> bytes:
    labels, matrix = cm["labels"], cm["matrix"]
    n = len(labels)
    size = min(12, 2.5 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=max(5, 10 - n // 6))
    ax.set_yticks(range(n), labels, fontsize=max(5, 10 - n // 6))
    if n <= 15:
        top = max(max(r) for r in matrix) or 1
        for i in range(n):
            for j in range(n):
                ax.text(j, i, matrix[i][j], ha="center", va="center", fontsize=8, color="white" if matrix[i][j] > top / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _png(fig)


def plot_curation(rules: list[dict[str, Any]]) -> bytes:
    names = [r["rule"] for r in rules]
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(names)))
    ax.barh(names, [r["before"] for r in rules], color="#cccccc", label="before")
    ax.barh(names, [r["after"] for r in rules], color="#1f77b4", label="after", height=0.5)
    ax.invert_yaxis()
    ax.set_xlabel("examples")
    ax.set_title("Data curation: examples before and after each rule")
    ax.legend(loc="lower right")
    return _png(fig)


def _where(store: ArtifactStore, uri: str | None) -> str:
    """A location as the reader should see it: relative to the artifacts folder when it lies inside it (the run
    folder can be moved), else as recorded."""
    from pathlib import Path

    from pioneer.store import LocalStore

    if not uri:
        return "–"
    if isinstance(store, LocalStore) and uri.startswith("/"):
        root, path = store.root.parent, Path(uri)
        if root in path.parents:
            return str(path.relative_to(root))
    return uri


def _synthesis_lines(syn: dict[str, Any]) -> list[str]:
    """What the teacher wrote (rows per label, rationales), what it cost, and what was refused and why."""
    out = []
    if "written" in syn:
        why = f": {_counts(syn['rejectedBy'])}" if syn.get("rejectedBy") else ""
        out += [f"Synthesis (teacher {syn['model']}): real examples per label {_counts(syn['real'])}; written {_counts(syn['written'])} "
                f"({syn['rejected']} rejected{why}); evaluation set: {syn['evaluation']}; {syn['usage']['calls']} calls, "
                f"{syn['usage']['inputTokens']} input + {syn['usage']['outputTokens']} output tokens.", ""]
    if r := syn.get("rationales"):
        use = syn.get("rationaleUsage") or {"calls": 0, "inputTokens": 0, "outputTokens": 0}
        why = f"; refused: {_counts(syn['rationalesRejected'])}" if syn.get("rationalesRejected") else ""
        out += [f"Chain-of-thought rationales: {r['real']} training examples brought their own; the teacher ({syn.get('model', '-')}) "
                f"was asked for {r['needed']} and {r['written']} were kept (each reaches its reference answer){why}; "
                f"{use['calls']} calls, {use['inputTokens']} input + {use['outputTokens']} output tokens.", ""]
    return out


def _counts(value: Any) -> str:
    """``{'short (<=5)': 3, 'long (>15)': 45}`` as ``short (<=5) 3, long (>15) 45``."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def _regressed_rows(store: ArtifactStore, verdict: dict[str, Any], cap: int = 50) -> tuple[list[list[Any]], int]:
    """Each regressed example of the refused (or promoted) candidate: its set, text, the answer that passed
    before, and the candidate's answer (from the candidate's metrics.json)."""
    key = attempt_key(verdict.get("attempt") or "", f"{OUTPUT}/metrics.json")
    if not verdict.get("attempt") or not store.exists(key):
        return [], 0
    metrics = read_json(store, key)
    found = [("regression set", x) for x in metrics.get("regressed_examples") or []]
    found += [("previous checkpoint's set", x) for x in metrics.get("cross_checkpoint_regressed_examples") or []]
    rows = [[where, x.get("id") or "", x.get("text", ""), x.get("label", ""), x.get("prediction", "")] for where, x in found[:cap]]
    return rows, len(found)


def _triage_section(store: ArtifactStore, prep: dict[str, Any]) -> list[str]:
    """Why each trace was set aside: the level and reference of the statistical checks, every exclusion with its
    p-value (the first 25 listed), and the borderline flags taken back."""
    tri = prep.get("triage") or {}
    md = ["### Triage", ""]
    if tri.get("level") is not None:
        md += [f"Statistical checks at false-discovery rate {tri['level']:g} (conformal p-values against {tri.get('reference', 0)} trusted "
               f"examples: {tri.get('parent_examples', 0)} of the parent's training data and {tri.get('verified_passing', 0)} verified "
               f"passing traces; smallest possible p-value {tri.get('smallest_p_value', 1):g}, for a failure as hard as the "
               f"hardest {tri.get('hard_reference', 0)} of them {tri.get('smallest_p_value_hard', 1):g}; Benjamini-Hochberg). "
               f"Borderline flags taken back on a second look: {tri.get('taken_back', 0)}."
               + (f" Second look skipped: {tri['second_look_skipped']}." if tri.get("second_look_skipped") else ""), ""]
    excluded = read_jsonl(store, EXCLUDED_KEY) if store.exists(EXCLUDED_KEY) else []
    if excluded:
        md += [f"Set aside: {len(excluded)} traces ({_counts(Counter(e['reason'] for e in excluded))})"
               + (", the first 25 listed" if len(excluded) > 25 else ""), ""]
        md += [_table(["id", "verdict", "reason", "p-value", "BH-adjusted", "action", "text", "evidence"],
                      [[e["id"], e["verdict"], e["reason"], _fmt(e.get("p_value")), _fmt(e.get("adjusted_p")), e["action"],
                        e["text"][:80], e["evidence"][:240]] for e in excluded[:25]]), ""]
    if tri.get("llm_review"):
        rv = tri["llm_review"]
        dis = tri.get("llm_disagreements") or []
        md += [f"LLM review ({rv['model']}): {rv['reviewed']} failing traces, {rv['usage']['calls']} calls, {rv['usage']['inputTokens']} input + "
               f"{rv['usage']['outputTokens']} output tokens; {len(dis)} disagreement(s) with the statistics"
               + (f"; errors: {'; '.join(rv['errors'])}" if rv["errors"] else "") + ".", ""]
        if dis:
            md += [_table(["id", "statistics", "LLM", "p-value", "outcome", "text", "LLM's reason"],
                          [[x["id"], x["statistics"], x["llm"], _fmt(x.get("p_value")), x["outcome"], x["text"][:80], x["llm_reason"][:160]]
                           for x in dis[:25]]), ""]
    back = next((r["details"].get("taken_back", []) for r in prep.get("rules", []) if r["rule"] == "take-back-borderline"), [])
    if back:
        md += ["Taken back (kept fixable):", "", _table(["id", "flagged as", "text", "evidence"],
                                                        [[b["id"], b["flagged_as"], b["text"][:80], b["evidence"]] for b in back[:25]]), ""]
    return md


def _regression_section(store: ArtifactStore, graph: Graph) -> list[str]:
    """Per candidate: how many previously passing traces it broke, what they are (flipped pairs, the parent's margin on
    them, how near the fixes), and which preservation objectives it trained with (the interpolation's chosen mix)."""
    rows = []
    for a in graph.trained:
        st = a.status
        if st is None or st.phase != "Succeeded":
            continue
        prof = st.regression_profile or {}
        facts = {}
        key = attempt_key(a.metadata.name, f"{OUTPUT}/metrics.json")
        if store.exists(key):
            facts = read_json(store, key).get("training") or {}
        mix = facts.get("interpolation") or {}
        objectives = ", ".join(a.spec.pipeline.strategy.preserving()) or "none"
        if mix.get("alpha") is not None:
            objectives += f" (alpha {mix['alpha']:g}: {mix.get('rule', '')})"
        elif mix.get("skipped"):
            objectives += f" (interpolation skipped: {mix['skipped']})"
        pairs = ", ".join(f"{p['label']} -> {p['prediction']} x{p['count']}" for p in prof.get("pairs", [])[:4]) or "–"
        margin = (f"{prof['parent_margin_median']:.2f} vs {prof['regression_set_margin_median']:.2f}"
                  if prof.get("parent_margin_median") is not None and prof.get("regression_set_margin_median") is not None else "–")
        near = f"{prof['near_fixed_failures']} of {prof['count']}" if prof.get("near_fixed_failures") is not None else "–"
        rows.append([a.metadata.name, st.regressions if st.regressions is not None else "–",
                     st.cross_checkpoint_regressions if st.cross_checkpoint_regressions is not None else "–", objectives, pairs, margin, near])
    if not rows:
        return []
    return ["### Regressions and preservation", "",
            "What each candidate broke among the previously passing traces, and what it trained with to keep them. Margin: the "
            "parent's median margin on the flipped traces vs over the whole regression set (low: fragile boundaries). Near: flips "
            "next to a fixed failure corrected to the label they flipped to (the repair pulled that boundary).", "",
            _table(["attempt", "regressions", "cross-checkpoint", "preservation", "flipped pairs", "parent margin", "near fixes"], rows), ""]


def _evidence(ev: dict[str, Any]) -> str:
    return json.dumps(ev, sort_keys=True, default=str)[:600]


def build(store: ArtifactStore, state: dict[str, Any]) -> dict[str, bytes]:
    """Report files (name -> bytes): report.md, report.html and the plots."""
    ma = state["adaptation"]
    spec, name = ma["spec"], ma["metadata"]["name"]
    attempts = [TrainingAttempt.model_validate(a) for a in state["attempts"]]
    graph = Graph.of(attempts)
    completion = state.get("completion") or {}
    prep = read_json(store, PREPARATION_KEY) if store.exists(PREPARATION_KEY) else {}
    manifest = read_json(store, EVAL_MANIFEST) if store.exists(EVAL_MANIFEST) else {}
    metric, tau = spec["task"].get("metric", "accuracy"), spec.get("gate", {}).get("tau")
    best = graph.best()
    baseline = graph.baseline
    files: dict[str, bytes] = {}
    md: list[str] = [f"# Pioneer report: {name}", ""]

    md += ["## Result", ""]
    md += [_table(["", ""], [
        ["task", spec["task"]["description"]],
        ["mode", spec.get("mode", "coldStart")],
        ["outcome", f"{completion.get('reason', 'in progress')}: {completion.get('message', '')}"],
        ["metric", metric],
        ["baseline (the deployed parent)" if spec.get("mode") == "production" else "baseline (untrained base model)",
         _fmt(score(baseline)) if baseline else "–"],
        ["best", f"{_fmt(score(best))} ({best.metadata.name})" if best else "–"],
        ["target tau", tau],
        ["attempts", f"{len(graph.distinct_trainings)} trained over {graph.latest_iteration} iteration(s); "
                     f"{sum(1 for a in graph.trained if a.status and a.status.phase == 'Failed')} failed"
                     + (f"; {len(graph.trained) - len(graph.distinct_trainings)} reused an identical earlier training "
                        f"({', '.join(f'{a.metadata.name} = {a.status.reused_from}' for a in graph.trained if a.status and a.status.reused_from)})"
                        if len(graph.trained) > len(graph.distinct_trainings) else "")],
        ["best model", _where(store, best.status.model_uri) if best else "–"],
        *([["promoted as", f"`{_where(store, state['lifecycle']['candidate']['modelUri'])}` (content hash `{state['lifecycle']['candidate'].get('modelSha256', '')[:16]}`)"]]
          if (state.get("lifecycle") or {}).get("candidate") and (state.get("gate") or {}).get("passed") else []),
        ["evaluation set", f"{manifest.get('size', '?')} examples ({_counts(manifest.get('slices', {}))}), sha256 `{manifest.get('sha256', '?')[:16]}`, frozen {manifest.get('frozen_at', '?')}"],
    ]), ""]

    verdict = state.get("gate")
    if verdict:
        md += ["## Gate", "", f"**{'PROMOTED' if verdict['passed'] else 'REFUSED'}** — {spec.get('deployedModel')}: {verdict.get('reason', '')}", ""]
        if verdict.get("checks"):  # every check with its own limit; the worst one decides
            md += [_table(["check", "value", "limit", "result", "in words"],
                          [[c["name"], _fmt(c.get("value")) if isinstance(c.get("value"), float) else c.get("value", "–"),
                            c.get("limit", "–"), "pass" if c["passed"] else "FAIL", c.get("message", "")] for c in verdict["checks"]]), ""]
        rows, total = _regressed_rows(store, verdict)
        if rows:
            md += [f"Regressed examples (answered right before, wrong by the candidate): {total}"
                   + (f", the first {len(rows)} listed" if total > len(rows) else ""), ""]
            md += [_table(["set", "id", "text", "answer before (passing)", "candidate's answer"], rows), ""]
        elif verdict.get("regressedExamples"):
            total = verdict.get("regressedExamplesTotal") or len(verdict["regressedExamples"])
            md += [f"Regressed examples (previously passing, now wrong): {total}"
                   + (f", the first {len(verdict['regressedExamples'])} listed" if total > len(verdict["regressedExamples"]) else ""), ""]
            md += [f"- `{x}`" for x in verdict["regressedExamples"][:50]] + [""]
    if prep.get("mode") == "production":
        md += ["## Diagnosis", "",
               f"{prep['traces']} judged traces: {prep['failing']} failing ({prep['fixable']} fixable, {prep['external']} external), "
               f"{prep['passing']} passing. Parent: revision {prep['parent_revision']} ({_where(store, prep['parent_model'])}). "
               f"Regression set {prep['regression_set']}, cross-checkpoint set {prep['cross_checkpoint_set']}.", ""]
        md += [_table(["cluster", "fixability", "size", "live confirmation", "lengths", "evidence", "examples"],
                      [[c["cluster"], c["fixability"], c["size"],
                        "–" if c.get("confirmation_rate") is None else f"{c['confirmation_rate']:.0%} of {c['probes']} probes",
                        _counts(c["lengths"]), c["evidence"], " / ".join(c["examples"])[:240]]
                       for c in prep["taxonomy"][:25]]), ""]
        md += _triage_section(store, prep)

    files["search-graph.png"] = plot_search_graph(graph, tau or 1.0, metric)
    md += ["## Search graph", "", "![search graph](search-graph.png)", ""]
    rows = []
    for a in graph.attempts:
        st = a.status
        slices = ", ".join(f"{k} {v:.3f}" for k, v in (st.slice_scores or {}).items()) if st else ""
        h = a.spec.pipeline.hyperparameters
        rows.append([a.metadata.name, a.spec.iteration, a.spec.parent or "", a.spec.modification, st.phase if st else "",
                     _fmt(st.score if st else None), slices,
                     f"{h.method} lr={h.learning_rate:g} ep={h.epochs:g} n≤{a.spec.pipeline.data.max_examples} hn={a.spec.pipeline.data.hard_negative_share:g}"
                     + (f" +aug({a.spec.pipeline.data.augment_from})" if a.spec.pipeline.data.augment_from else "")])
    md += [_table(["attempt", "iter", "parent", "modification", "phase", metric, "slices (accuracy)", "pipeline"], rows), ""]

    if spec.get("mode") == "production":
        md += _regression_section(store, graph)
    md += ["## Decision log", "", "Every attempt records why the planner chose it and the evidence it rested on.", ""]
    if spec.get("search", {}).get("planner") == "claude":
        from pioneer.core.controller import llm_usage

        spent = llm_usage(attempts) or {"calls": 0, "inputTokens": 0, "outputTokens": 0, "fallbacks": 0}
        model = spec.get("search", {}).get("llm", {}).get("model")
        md += [f"Planner: Claude ({model}), {spent['calls']} call(s), {spent['inputTokens']} input + {spent['outputTokens']} output "
               f"tokens; {spent['fallbacks']} iteration(s) fell back to the deterministic policy (reasons in the evidence).", ""]
    for a in graph.attempts:
        decided = (a.spec.evidence or {}).get("decidedBy")
        md += [f"**{a.metadata.name}** (iteration {a.spec.iteration}, parent {a.spec.parent or '—'}"
               + (f", decided by {decided}" if decided else "") + f"): *{a.spec.modification}*. {a.spec.rationale}", ""]
        if a.spec.evidence:
            md += [f"<sub>evidence: `{_evidence(a.spec.evidence)}`</sub>", ""]
        if a.status and a.status.phase == "Failed":
            md += [f"> failed: {a.status.message}", ""]
    if completion:
        md += [f"**Stop** — {completion.get('reason')}: {completion.get('message')}", ""]
    md += ["", "### Event log", "", "```"] + [f"{e['time']} {e['kind']:<9} {e['message']}" for e in state.get("events", [])] + ["```", ""]

    if best is not None and store.exists(attempt_key(best.metadata.name, f"{OUTPUT}/metrics.json")):
        metrics = read_json(store, attempt_key(best.metadata.name, f"{OUTPUT}/metrics.json"))
        md += [f"## Best model: {best.metadata.name}", ""]
        if "confusion_matrix" in metrics:
            files["confusion-matrix.png"] = plot_confusion(metrics["confusion_matrix"], f"{best.metadata.name} on the evaluation set")
            md += ["![confusion matrix](confusion-matrix.png)", ""]
        if metrics.get("threshold_curve"):
            files["threshold-curve.png"] = plot_threshold_curve(metrics["threshold_curve"], metrics["threshold"])
            md += [f"Entity-level precision {metrics['precision']:.3f}, recall {metrics['recall']:.3f}; "
                   f"false positives {metrics['false_positives']}, false negatives {metrics['false_negatives']} "
                   f"(FP:FN {metrics['fp_fn_ratio']}); decision threshold {metrics['threshold']} chosen on the evaluation set.", "",
                   "![threshold sweep](threshold-curve.png)", ""]
        if "format_failure_rate" in metrics:
            md += [f"Format failures (no answer could be read): {metrics['format_failure_rate']:.1%}.", ""]
        if metrics.get("per_label"):
            md += [_table(["label", "precision", "recall", "f1", "support"],
                          [[lab, _fmt(v["precision"], 3), _fmt(v["recall"], 3), _fmt(v["f1"], 3), v["support"]]
                           for lab, v in metrics["per_label"].items()]), ""]
        if metrics.get("failure_patterns"):
            md += ["Remaining confusions (true -> predicted): " + ", ".join(
                f"{p['label']} -> {p['prediction']} x{p['count']}" for p in metrics["failure_patterns"][:10]), ""]

    rules = list(prep.get("rules", []))
    best_curation = None
    if best is not None and store.exists(attempt_key(best.metadata.name, "curation.json")):
        best_curation = read_json(store, attempt_key(best.metadata.name, "curation.json"))
    md += ["## Data curation", "", f"Loaded {prep.get('loaded', prep.get('traces', '?'))} examples; labels {prep.get('labels', [])}.", ""]
    if syn := prep.get("synthesis"):
        md += _synthesis_lines(syn)
    if rules:
        files["curation.png"] = plot_curation(rules + [r for r in (best_curation or {}).get("rules", []) if r["rule"] == "label-balance"])
        md += ["![curation](curation.png)", ""]
    md += ["### Pool cleaning and evaluation hold-out (once, before any training)", ""]
    md += [_table(["rule", "what it does", "before", "after", "details"],
                  [[r["rule"], r["description"], r["before"], r["after"], _evidence(r["details"])[:300]] for r in rules]), ""]
    if best_curation:
        md += [f"### Training set of {best.metadata.name} ({best_curation['size']} examples)", ""]
        md += [_table(["rule", "what it does", "before", "after", "details"],
                      [[r["rule"], r["description"], r["before"], r["after"], _evidence(r["details"])[:300]] for r in best_curation["rules"]]), ""]

    text = "\n".join(md)
    files["report.md"] = text.encode()
    body = to_html(text)

    def inline(m: re.Match) -> str:
        data = files.get(m.group(1))
        return f'src="data:image/png;base64,{base64.b64encode(data).decode()}"' if data else m.group(0)

    body = re.sub(r'src="([^"]+\.png)"', inline, body)
    body = re.sub(r'src="(?!data:image/png;base64,)[^"]*"', 'src=""', body)  # nothing is fetched from elsewhere
    files["report.html"] = (
        "<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(f"Pioneer report: {name}") + "</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ddd;padding:4px 8px;vertical-align:top}"
        "th{background:#f5f5f5}img{max-width:100%}pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:12px}"
        "code{font-size:12px}</style></head><body>" + body + "</body></html>"
    ).encode()
    return files


def to_html(text: str) -> str:
    """Markdown to HTML where every piece of user or trace text stays text: raw HTML is escaped, never passed
    through, and links can only be plain web or relative links (no javascript: or data: URLs)."""
    md = markdown.Markdown(extensions=["tables", "fenced_code"])
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    body = md.convert(text)
    return re.sub(r'href="(?!https?://|#|[\w./-]+(?:#[\w-]*)?")[^"]*"', 'href="#"', body)


def write(store: ArtifactStore, state: dict[str, Any]) -> str:
    """Write the report into the adaptation's artifacts; return the location of report.html."""
    for fname, data in build(store, state).items():
        store.write_bytes(f"{REPORT_DIR}/{fname}", data)
    return store.uri(f"{REPORT_DIR}/report.html")
