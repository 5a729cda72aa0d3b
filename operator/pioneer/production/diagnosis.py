"""Failure diagnosis (paper §2.6): triage fixable vs. external failures, and a taxonomy of clusters.

Trace text is data: detectors look at it, nothing ever follows it. Triage without an LLM:
input detectors (empty, gibberish, prompt injection / jailbreak patterns), labels outside the task,
off-domain inputs and unsupported corrections (embedding k-NN against trusted examples), inputs that
look more like the off-task traffic found so far than like the task, and confident learning (cleanlab)
on out-of-fold predictions of a TF-IDF model to catch wrong corrections.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

INJECTION = re.compile(
    r"(ignore|disregard|forget)\s+(all\s+|any\s+|your\s+)?(the\s+)?(previous|prior|above|earlier)\s+(instructions|prompts?|rules)"
    r"|system\s+prompt|you\s+are\s+now\s+(in\s+)?(dan|developer\s+mode)|jailbreak|act\s+as\s+an?\s+unrestricted"
    r"|\b(developer|god)\s+mode\b|\bunrestricted\s+(ai|assistant|model)\b"
    r"|\b(with\s+no|without(\s+any)?)\s+(restrictions|rules|filters|guidelines)\b|\bhave\s+no\s+(rules|restrictions)\b",
    re.IGNORECASE,
)
_VOWELS = set("aeiouAEIOU")


def input_flags(text: str, digits_are_content: bool = False) -> list[str]:
    """Detector findings for one input; an empty list means nothing suspicious.

    ``digits_are_content``: count digits with letters when judging gibberish (news text for NER holds score
    tables and datelines such as "BEIJING 1996-08-27", which are not noise).
    """
    stripped = (text or "").strip()
    if not re.search(r"\w", stripped):
        return ["empty"]
    flags = []
    if INJECTION.search(stripped):
        flags.append("injection")
    words = re.findall(r"[A-Za-z]+", stripped)
    letters = sum(len(w) for w in words) + (sum(c.isdigit() for c in stripped) if digits_are_content else 0)
    if len(stripped) >= 8 and (letters / len(stripped) < 0.4 or (words and sum(1 for w in words if not set(w) & _VOWELS and len(w) > 3) / len(words) > 0.5)):
        flags.append("gibberish")
    return flags


SUPPORT_K = 5  # neighbours that vote on whether a label is supported
NEIGHBOURHOOD_K = 3  # off-task traces that vote on whether an input belongs with them
NEIGHBOURHOOD_MIN = 5  # off-task traces needed before their neighbourhood is used as evidence
# reasons that say the *input* is not a request for the task (as opposed to a wrong correction of a good input)
OFF_TASK_REASONS = ("adversarial-or-malformed-input", "off-domain-input", "off-task-neighbourhood")
SUPPORT_QUANTILE = 0.05  # a trace is less supported than 95% of the trusted examples are by their own label


@dataclass
class LabelSupport:
    """How well trusted examples of a label support an input (embedding k-NN), with calibrated thresholds.

    ``support(text, label)`` is the mean similarity of the input to the k nearest trusted examples of that
    label; ``domain(text)`` the same over all labels. Thresholds come from the trusted examples themselves
    (leave-one-out): a correction is unsupported when the input is less like that label's examples than
    95% of them are like each other; an input is off-domain by the same rule over all labels.
    """

    embed: Callable[[list[str]], np.ndarray]
    texts: list[str]
    labels: list[str]

    def __post_init__(self) -> None:
        from pioneer.data.embeddings import top_k_mean

        self.matrix = self.embed(self.texts)
        self.label_array = np.asarray(self.labels)
        loo = self.matrix @ self.matrix.T
        np.fill_diagonal(loo, -np.inf)
        own = np.array([top_k_mean(loo[i:i + 1, self.label_array == lab], SUPPORT_K)[0] for i, lab in enumerate(self.labels)])
        own[~np.isfinite(own)] = np.nan  # a label with a single trusted example has no leave-one-out support
        anyk = top_k_mean(np.where(np.isinf(loo), -1.0, loo), SUPPORT_K)
        self.domain_threshold = float(np.quantile(anyk, SUPPORT_QUANTILE))
        overall = float(np.nanquantile(own, SUPPORT_QUANTILE)) if np.isfinite(own).any() else 0.0
        self.label_threshold = {}
        for lab in set(self.labels):
            mine = own[self.label_array == lab]
            mine = mine[np.isfinite(mine)]
            # a label whose own examples are diverse (an out-of-scope class) gets its own, lower bar
            self.label_threshold[lab] = min(overall, float(np.quantile(mine, 2 * SUPPORT_QUANTILE))) if len(mine) >= 5 else overall

    def scores(self, vectors: np.ndarray, labels: list[str], texts: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(support of each input by its label, similarity of each input to the domain); ``vectors`` = ``embed(texts)``.

        With ``texts``, a trusted example with the same text as the input does not vote for it (leave-one-out, as
        the thresholds are calibrated): a logged input that an earlier revision trained on cannot support itself.
        """
        from pioneer.data.embeddings import top_k_mean

        if not len(vectors):
            return np.zeros(0), np.zeros(0)
        sims = vectors @ self.matrix.T
        if texts is not None:
            position: dict[str, list[int]] = {}
            for j, t in enumerate(self.texts):
                position.setdefault(t, []).append(j)
            for i, t in enumerate(texts):
                sims[i, position.get(t, [])] = -1.0
        support = np.array([top_k_mean(sims[i:i + 1, self.label_array == lab], SUPPORT_K)[0] if lab in self.label_threshold else 0.0
                            for i, lab in enumerate(labels)])
        return support, top_k_mean(sims, SUPPORT_K)


@dataclass
class Triage:
    fixable: list[dict[str, Any]] = field(default_factory=list)
    external: list[dict[str, Any]] = field(default_factory=list)  # each with "reason" and "evidence"
    screened: list[dict[str, Any]] = field(default_factory=list)  # passing traces set aside (not trained on), with evidence
    kept_passing: list[dict[str, Any]] = field(default_factory=list)

    def off_task(self) -> list[dict[str, Any]]:
        """Traces (failing or passing) whose input is not a request for the task: empty, gibberish, injections, off-domain."""
        return [t for t in self.external + self.screened if t["reason"] in OFF_TASK_REASONS]

    def excluded(self, out_of_scope_label: str | None = None) -> list[dict[str, Any]]:
        """Every trace whose logged answer is kept out of training, with its reason, evidence and the action taken
        (the poison filter's output). With ``out_of_scope_label``, off-task inputs are trained to that label instead."""
        def action(t: dict[str, Any]) -> str:
            return f"trained as {out_of_scope_label!r}" if out_of_scope_label and t["reason"] in OFF_TASK_REASONS else "excluded"
        return [{"id": t["id"], "verdict": v, "reason": t["reason"], "evidence": t["evidence"], "action": action(t), "text": t["text"][:200]}
                for v, group in (("fail", self.external), ("pass", self.screened)) for t in group]


def _oof_label_issues(texts: list[str], labels: list[str], seed: int) -> np.ndarray:
    """Boolean mask of likely label errors: cleanlab on 5-fold out-of-fold probabilities of TF-IDF + logistic regression."""
    from cleanlab.filter import find_label_issues
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    classes = sorted(set(labels))
    counts = Counter(labels)
    if len(classes) < 2 or min(counts.values()) < 2:
        return np.zeros(len(labels), dtype=bool)
    y = np.array([classes.index(lab) for lab in labels])
    folds = min(5, min(counts.values()))
    model = make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True),
                          LogisticRegression(max_iter=2000, C=5.0))
    probs = cross_val_predict(model, texts, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed), method="predict_proba")
    # n_jobs=1: cleanlab's process pool forks, which can deadlock a process that runs threads (an operator, a server)
    return find_label_issues(labels=y, pred_probs=probs, filter_by="both", n_jobs=1)


def triage(failures: list[dict[str, Any]], passing: list[dict[str, Any]], labels: list[str], seed: int = 0,
           confident_learning: bool = True, reference: list[tuple[str, str]] | None = None,
           embed: Callable[[list[str]], np.ndarray] | None = None, out_of_scope_label: str | None = None) -> Triage:
    """Split failing traces ({id, text, prediction, corrected}) into fixable and external, with evidence, and
    screen passing traces ({id, text, prediction}) with the same input checks: a passing verdict does not
    make an injection or an off-domain query good training data.

    ``reference``: trusted (text, label) examples, the parent's training data. A failing trace whose correction
    they do not support (:class:`LabelSupport`, in the space of ``embed``; character n-grams by default) is
    set aside as off-domain or as an unsupported correction, a passing trace unlike the whole task as
    off-domain; with ``out_of_scope_label``, an input that its label's examples do not support and the
    out-of-scope examples support better than any in-scope label's is off-domain too (trusted out-of-scope examples, such as those an
    earlier revision learnt from routed traffic, would otherwise make it look like the task); then any trace that sits with the off-task traffic found so far is off-task too
    (:func:`_off_task_neighbourhood`). The trusted examples also anchor the confident-learning model.
    An off-task trace whose logged answer already is ``out_of_scope_label`` is kept as it is (a failing one is
    fixable as corrected, a passing one is kept); it still counts as off-task traffic for the neighbourhood.
    """
    out = Triage()
    reference = [(t, y) for t, y in (reference or []) if y in labels]
    traces = failures + passing
    checked = [f.get("corrected") or "" for f in failures] + [p.get("prediction") or "" for p in passing]
    checker = support = domain = vectors = oos_support = in_scope_support = None
    if len(reference) >= 20 and len({y for _, y in reference}) >= 2:
        from pioneer.data.embeddings import tfidf_embedder

        checker = LabelSupport(embed or tfidf_embedder([t for t, _ in reference]), [t for t, _ in reference], [y for _, y in reference])
        vectors = checker.embed([t["text"] for t in traces]) if traces else np.zeros((0, checker.matrix.shape[1]))
        support, domain = checker.scores(vectors, checked, [t["text"] for t in traces])
        if out_of_scope_label in checker.label_threshold:
            # how much each input looks like the out-of-scope examples, and like the best-supporting in-scope label
            by_label = {lab: checker.scores(vectors, [lab] * len(traces), [t["text"] for t in traces])[0] for lab in checker.label_threshold}
            oos_support = by_label.pop(out_of_scope_label)
            in_scope_support = np.max(np.vstack(list(by_label.values())), axis=0) if by_label else np.zeros(len(traces))

    def unsupported(i: int) -> tuple[str, str] | None:
        label = checked[i]
        if checker is None or label not in checker.label_threshold:
            return None
        bar = checker.label_threshold[label]
        if support[i] >= bar:
            return None
        if domain[i] < checker.domain_threshold:
            return "off-domain-input", (f"similarity to the task's trusted examples {domain[i]:.3f} < {checker.domain_threshold:.3f} "
                                        f"(5th percentile of their own), and to examples of {label!r} {support[i]:.3f} < {bar:.3f}")
        if oos_support is not None and label != out_of_scope_label and oos_support[i] > in_scope_support[i] \
                and oos_support[i] >= checker.label_threshold[out_of_scope_label]:
            # trusted out-of-scope examples make such an input look in-domain; it still is not a request for the task
            # (a good request with a wrong label is not: some in-scope label supports it better)
            return "off-domain-input", (f"the input is supported by the trusted {out_of_scope_label!r} examples ({oos_support[i]:.3f} >= "
                                        f"{checker.label_threshold[out_of_scope_label]:.3f}) more than by those of any in-scope label "
                                        f"(best {in_scope_support[i]:.3f}; {label!r} {support[i]:.3f} < {bar:.3f})")
        return "unsupported-correction", (f"the {SUPPORT_K} nearest trusted examples of {label!r} have mean similarity "
                                          f"{support[i]:.3f} < {bar:.3f} (calibrated on the parent's training data): "
                                          "the input does not look like that label")

    reasons: dict[int, tuple[str, str]] = {}  # trace index -> (reason, evidence); traces without one are kept
    for i, t in enumerate(traces):
        flags = input_flags(t["text"])
        failing = i < len(failures)
        if flags:
            reasons[i] = ("adversarial-or-malformed-input", f"input detectors: {flags}")
        elif failing and t.get("corrected") not in labels:
            reasons[i] = ("off-task-correction", f"corrected output {t.get('corrected')!r} is not a task label")
        elif (found := unsupported(i)) and (failing or found[0] == "off-domain-input"):
            reasons[i] = found  # a passing trace is set aside only when the input is unlike the whole task
    if checker is not None:
        reasons.update(_off_task_neighbourhood(reasons, vectors, domain))
    # off-task traces already answered with the out-of-scope label: kept as they are, after confident learning
    answered = {i for i, (reason, _) in reasons.items() if reason in OFF_TASK_REASONS and out_of_scope_label and checked[i] == out_of_scope_label}
    candidates = []
    for i, t in enumerate(traces):
        if i in answered:
            continue
        if i in reasons:
            (out.external if i < len(failures) else out.screened).append({**t, "reason": reasons[i][0], "evidence": reasons[i][1]})
        elif i < len(failures):
            candidates.append(t)
        else:
            out.kept_passing.append(t)
    if confident_learning and candidates:
        anchors = [(t, y) for t, y in reference if y in labels]
        texts = [t for t, _ in anchors] + [p["text"] for p in out.kept_passing] + [f["text"] for f in candidates]
        given = [y for _, y in anchors] + [p["prediction"] for p in out.kept_passing] + [f["corrected"] for f in candidates]
        issues = _oof_label_issues(texts, given, seed)[len(anchors) + len(out.kept_passing):]
        for f, is_issue in zip(candidates, issues):
            if is_issue:
                out.external.append({**f, "reason": "suspected-label-error",
                                     "evidence": "confident learning (cleanlab, out-of-fold TF-IDF model) ranks the correction as a likely label error"})
            else:
                out.fixable.append(f)
    else:
        out.fixable = candidates
    for i in sorted(answered):
        (out.fixable if i < len(failures) else out.kept_passing).append(traces[i])
    return out


def _off_task_neighbourhood(reasons: dict[int, tuple[str, str]], vectors: np.ndarray, domain: np.ndarray) -> dict[int, tuple[str, str]]:
    """Traces that look more like the off-task traffic already found than like the task: {index: (reason, evidence)}.

    Off-task inputs come in families (templated false premises, the same injection reworded); once detectors
    and the domain check have found some of a family, the rest sit next to them and far from every trusted
    example. One pass, no propagation: only traces flagged by a detector or by the domain check vote.
    Suspects are the traces still kept and those set aside as unsupported corrections (an off-task input
    explains that as well). ``vectors`` and ``domain``: every trace's embedding and its similarity to the
    trusted examples.
    """
    from pioneer.data.embeddings import top_k_mean

    seeds = [i for i, (reason, _) in reasons.items() if reason in OFF_TASK_REASONS[:2]]
    if len(seeds) < NEIGHBOURHOOD_MIN:
        return {}
    suspects = [i for i in range(len(vectors)) if i not in reasons or reasons[i][0] == "unsupported-correction"]
    if not suspects:
        return {}
    near_off_task = top_k_mean(vectors[suspects] @ vectors[seeds].T, NEIGHBOURHOOD_K)  # seeds are never suspects
    found = {}
    for i, off in zip(suspects, near_off_task):
        if off > domain[i]:
            evidence = (f"mean similarity to the {NEIGHBOURHOOD_K} nearest off-task traces {off:.3f} > to the task's "
                        f"{SUPPORT_K} nearest trusted examples {domain[i]:.3f}")
            found[i] = ("off-task-neighbourhood", evidence + (f"; and {reasons[i][1]}" if i in reasons else ""))
    return found


def length_bucket(text: str) -> str:
    n = len(text.split())
    return "short (<=5 words)" if n <= 5 else "medium (6-15)" if n <= 15 else "long (>15)"


def taxonomy(result: Triage, top_examples: int = 3) -> list[dict[str, Any]]:
    """Clusters of failures: confusion pairs for the fixable ones, reasons for the external ones."""
    clusters: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for f in result.fixable:
        clusters[("fixable", f"{f['prediction']} -> {f['corrected']}")].append(f)
    for f in result.external:
        clusters[("external", f["reason"])].append(f)
    out = []
    for (fixability, name), members in sorted(clusters.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        out.append({
            "cluster": name, "fixability": fixability, "size": len(members),
            "direction": "over-prediction of " + members[0]["prediction"] if fixability == "fixable" else None,
            "lengths": dict(Counter(length_bucket(m["text"]) for m in members)),
            "evidence": (f"model predicted {members[0]['prediction']!r}, judge corrected to {members[0]['corrected']!r}"
                         if fixability == "fixable" else members[0]["evidence"]),
            "examples": [m["text"][:160] for m in members[:top_examples]],
        })
    return out


_STOP = {"the", "a", "an", "please", "my", "to", "for", "of", "me", "can", "you", "i"}


def probes(text: str) -> list[str]:
    """Deterministic variants of a failing input that keep its meaning: casing/punctuation, politeness, a dropped stopword."""
    plain = re.sub(r"[^\w\s']", "", text).lower().strip()
    words = plain.split()
    dropped = " ".join(w for i, w in enumerate(words) if not (w in _STOP and i == next((j for j, x in enumerate(words) if x in _STOP), -1)))
    variants = [plain, f"please {plain}", f"{plain} thanks", dropped]
    return list(dict.fromkeys(v for v in variants if v and v != text))


def confirm(clusters: list[dict[str, Any]], fixable: list[dict[str, Any]], predict, per_cluster: int = 3) -> list[dict[str, Any]]:
    """Live confirmation (paper §2.6): probe the deployed model with variants of each fixable cluster's failures.

    ``predict(texts) -> labels`` is the deployed model. A cluster is confirmed when the model keeps making the
    same mistake on the variants (a systematic failure, worth a curriculum), not a one-off.
    """
    by_cluster: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in fixable:
        by_cluster[f"{f['prediction']} -> {f['corrected']}"].append(f)
    out = []
    for c in clusters:
        if c["fixability"] != "fixable":
            out.append(c)
            continue
        members = by_cluster.get(c["cluster"], [])[:per_cluster]
        texts = [p for m in members for p in probes(m["text"])]
        wrong = members[0]["prediction"] if members else None
        got = predict(texts) if texts else []
        rate = sum(1 for g in got if g == wrong) / len(got) if got else None
        out.append({**c, "probes": len(texts), "confirmation_rate": None if rate is None else round(rate, 3),
                    "confirmed": rate is not None and rate >= 0.5})
    return out
