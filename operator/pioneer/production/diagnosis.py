"""Failure diagnosis (paper §2.6): triage fixable vs. external failures, and a taxonomy of clusters.

Trace text is data: detectors look at it, nothing ever follows it. Triage without an LLM:
input detectors (empty, gibberish, prompt injection / jailbreak patterns), labels outside the task,
off-domain inputs and unsupported corrections (embedding k-NN against trusted examples), inputs that
look more like the off-task traffic found so far than like the task, and confident learning (cleanlab)
on out-of-fold predictions of a TF-IDF model to catch wrong corrections.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pioneer import defaults as d
from pioneer.layout import now
from pioneer.production.conformal import adjusted, by_group, min_p, p_values, reference_by_group

INJECTION = re.compile(
    # the lookahead names every alternative's first letter: a position that starts none of them fails at once, which
    # halves the scan of a million-trace log (a test checks that each alternative starts with one of these letters)
    r"(?=[adfghijsuwy])(?:"
    r"(ignore|disregard|forget)\s+(all\s+|any\s+|your\s+)?(the\s+)?(previous|prior|above|earlier)\s+(instructions|prompts?|rules)"
    r"|system\s+prompt|you\s+are\s+now\s+(in\s+)?(dan|developer\s+mode)|jailbreak|act\s+as\s+an?\s+unrestricted"
    r"|\b(developer|god)\s+mode\b|\bunrestricted\s+(ai|assistant|model)\b"
    r"|\b(with\s+no|without(\s+any)?)\s+(restrictions|rules|filters|guidelines)\b|\bhave\s+no\s+(rules|restrictions)\b"
    r")",
    re.IGNORECASE,
)
_WORD_CHARACTER = re.compile(r"\w")
_LATIN_WORD = re.compile(r"[A-Za-z]+")
_NO_VOWEL_WORD = re.compile(r"(?<![A-Za-z])[B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{4,}(?![A-Za-z])")  # a [A-Za-z]+ word of 4+ letters, no vowel


def input_flags(text: str, digits_are_content: bool = False) -> list[str]:
    """Detector findings for one input; an empty list means nothing suspicious.

    ``digits_are_content``: count digits with letters when judging gibberish (news text for NER holds score
    tables and datelines such as "BEIJING 1996-08-27", which are not noise).
    """
    stripped = (text or "").strip()
    if not _WORD_CHARACTER.search(stripped):
        return ["empty"]
    flags = []
    if INJECTION.search(stripped):
        flags.append("injection")
    words = _LATIN_WORD.findall(stripped)
    letters = len("".join(words)) + (sum(c.isdigit() for c in stripped) if digits_are_content else 0)
    if len(stripped) >= 8 and (letters / len(stripped) < 0.4 or (words and len(_NO_VOWEL_WORD.findall(stripped)) / len(words) > 0.5)):
        flags.append("gibberish")
    return flags


# reasons that say the *input* is not a request for the task (as opposed to a wrong correction of a good input)
OFF_TASK_REASONS = ("adversarial-or-malformed-input", "off-domain-input", "off-task-neighbourhood")
STATISTICAL_REASONS = ("off-domain-input", "unsupported-correction", "suspected-label-error", "off-task-neighbourhood")
LABEL_DOUBTS = ("unsupported-correction", "suspected-label-error")  # flags that doubt the correction, not the input
MIN_REFERENCE = 20  # trusted examples needed before the embedding checks run
BLOCK_ROWS = 512  # similarity rows computed at a time (memory is BLOCK_ROWS x reference size, never N x N)


def _top_k_mean(sims: np.ndarray, k: int, counts: np.ndarray | None = None) -> np.ndarray:
    """Row-wise mean of the k largest finite values (fewer when a row has fewer); NaN for a row with none.
    ``counts[j]`` (default 1) is how many copies column j stands for: the k largest are taken with repetition."""
    if sims.shape[1] == 0:
        return np.full(sims.shape[0], np.nan)
    if counts is None:
        k = min(k, sims.shape[1])
        top = np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:]
    else:
        # the k largest copies are copies of the k largest columns; NaN ranks above every number, as in np.partition
        columns = min(k, sims.shape[1])
        k = min(k, int(counts.sum()))
        picked = np.argpartition(sims, sims.shape[1] - columns, axis=1)[:, -columns:]
        values = np.take_along_axis(sims, picked, axis=1)
        order = np.argsort(values, axis=1)[:, ::-1]  # largest first (NaN sorts last: first here)
        values, copies = np.take_along_axis(values, order, axis=1), counts[np.take_along_axis(picked, order, axis=1)]
        slot_of = (np.cumsum(copies, axis=1)[:, :, None] <= np.arange(k)[None, None, :]).sum(axis=1)  # copy s -> its column
        top = np.take_along_axis(values, slot_of, axis=1)
    # sorted: the mean does not depend on the columns' order (the same neighbours give the same float, bit for bit)
    top = np.sort(top, axis=1)
    finite = np.isfinite(top)
    with np.errstate(invalid="ignore"):
        return np.where(finite.any(axis=1), np.where(finite, top, 0.0).sum(axis=1) / np.maximum(finite.sum(axis=1), 1), np.nan)


def top_k_similar(queries: np.ndarray, keys: np.ndarray, k: int, exclude: Callable[[int, int], list[list[int]]] | None = None,
                  block: int = BLOCK_ROWS, counts: np.ndarray | None = None) -> np.ndarray:
    """Mean similarity of each query to its k most similar keys, exact, ``block`` queries at a time (memory is block x
    keys, never queries x keys). ``exclude(start, stop)`` lists, per query of the block, the keys it may not count;
    ``counts[j]`` says key j stands for that many identical keys (a log repeats its inputs: each is compared once)."""
    out = np.full(len(queries), np.nan)
    for start in range(0, len(queries), block):
        sims = np.asarray(queries[start:start + block], dtype=np.float32) @ keys.T
        if exclude is not None:
            for row, cols in enumerate(exclude(start, start + len(sims))):
                sims[row, cols] = -np.inf
        out[start:start + len(sims)] = _top_k_mean(sims, k, counts)
    return out


@dataclass
class LabelSupport:
    """How well trusted examples support an input (embedding k-NN), and how unusual that is (conformal p-values).

    For an input and a label, *support* is the mean similarity to the k nearest trusted examples of that
    label; *domain* the same over all labels; the *margin* of a (text, label) pair is its label's support
    minus the best other label's. The trusted examples score themselves leave-one-out (an example, and any
    copy of its text, never votes for itself), which gives each score's distribution on clean data: a trace's
    p-value is the share of trusted examples whose score is at least as low as the trace's.
    The k-NN is exact: similarities are computed ``BLOCK_ROWS`` rows at a time against the reference (memory grows
    with the reference, not with the traces, never with their square); each label's examples are one contiguous
    block of the reference's columns.
    """

    embed: Callable[[list[str]], np.ndarray]
    texts: list[str]
    labels: list[str]
    k: int = d.TRIAGE_SUPPORT_K
    own: tuple[np.ndarray, np.ndarray] | None = None  # the reference's (domain, margin) from an earlier run (pinned)
    domain_only: bool = False  # a space that screens passing traces: the reference's margins are never read (NaN)

    def __post_init__(self) -> None:
        matrix = np.asarray(self.embed(self.texts), dtype=np.float32)  # in the reference's order: only while scoring it below
        self.classes = sorted(set(self.labels))
        # the reference's columns grouped by label (stable): a label's support is a slice, not a gather
        index = {c: i for i, c in enumerate(self.classes)}
        codes = np.array([index[y] for y in self.labels], dtype=int)
        order = np.argsort(codes, kind="stable")
        self._by_label = matrix[order]  # the one copy kept
        bounds = np.searchsorted(codes[order], np.arange(len(self.classes) + 1))
        self.columns = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        self._where = where = np.empty(len(order), dtype=int)  # an example's row in the grouped matrix
        where[order] = np.arange(len(order))
        self._positions: dict[str, list[int]] = {}
        for j, t in enumerate(self.texts):
            self._positions.setdefault(t, []).append(int(where[j]))
        if self.own is not None:
            self.reference_domain, self.reference_margin = self.own
        elif self.domain_only:
            self.reference_domain = self.supports(matrix, self.texts, per_label_rows=np.zeros(len(matrix), dtype=bool))[1]
            self.reference_margin = np.full(len(matrix), np.nan)
        else:
            per_label, self.reference_domain = self.supports(matrix, self.texts)
            self.reference_margin = self.margins(per_label, self.labels)

    def supports(self, vectors: np.ndarray, texts: list[str], per_label_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(support of each input by each class, n x len(classes); similarity of each input to the domain).
        A trusted example with the same text as the input does not vote (an input an earlier revision trained on
        cannot vouch for itself). ``per_label_rows`` (a boolean mask) limits the per-class supports to those rows (the
        others get NaN): a passing trace needs only its domain similarity."""
        n = len(vectors)
        per_label = np.full((n, len(self.classes)), np.nan)
        domain = np.full(n, np.nan)
        wanted = np.ones(n, dtype=bool) if per_label_rows is None else per_label_rows
        for start in range(0, n, BLOCK_ROWS):
            sims = np.asarray(vectors[start:start + BLOCK_ROWS], dtype=np.float32) @ self._by_label.T
            for row, t in enumerate(texts[start:start + BLOCK_ROWS]):
                sims[row, self._positions.get(t, [])] = -np.inf
            domain[start:start + len(sims)] = _top_k_mean(sims, self.k)
            rows = np.flatnonzero(wanted[start:start + len(sims)])
            if len(rows):
                some = sims if len(rows) == len(sims) else sims[rows]
                for c, cols in enumerate(self.columns):
                    per_label[start + rows, c] = _top_k_mean(some[:, cols], self.k)
        return per_label, domain

    def vectors(self, mask: np.ndarray) -> np.ndarray:
        """The embeddings of the reference examples ``mask`` selects, in the reference's order."""
        return self._by_label[self._where[mask]]

    def margins(self, per_label: np.ndarray, labels: list[str]) -> np.ndarray:
        """Support of each row's label minus the best other label's (0 when no other label has support); NaN where the
        label has no trusted example."""
        index = {c: i for i, c in enumerate(self.classes)}
        rows = np.arange(len(labels))
        cls = np.array([index.get(lab, -1) for lab in labels], dtype=int)
        known = cls >= 0
        own = np.full(len(labels), np.nan)
        own[known] = per_label[rows[known], cls[known]]
        others = per_label.copy()
        others[rows[known], cls[known]] = np.nan
        finite = np.isfinite(others).any(axis=1) if others.shape[1] else np.zeros(len(labels), dtype=bool)
        best_other = np.zeros(len(labels))
        best_other[finite] = np.nanmax(others[finite], axis=1)
        return np.where(np.isfinite(own), own - best_other, np.nan)

    def best_label(self, per_label: np.ndarray) -> list[str | None]:
        finite = np.isfinite(per_label).any(axis=1) if per_label.shape[1] else np.zeros(len(per_label), dtype=bool)
        top = np.argmax(np.where(np.isfinite(per_label), per_label, -np.inf), axis=1) if per_label.shape[1] else np.zeros(len(per_label), dtype=int)
        return [self.classes[int(c)] if f else None for c, f in zip(top, finite)]


@dataclass
class Triage:
    fixable: list[dict[str, Any]] = field(default_factory=list)
    external: list[dict[str, Any]] = field(default_factory=list)  # each with "reason" and "evidence"
    screened: list[dict[str, Any]] = field(default_factory=list)  # passing traces set aside (not trained on), with evidence
    kept_passing: list[dict[str, Any]] = field(default_factory=list)
    taken_back: list[dict[str, Any]] = field(default_factory=list)  # borderline discoveries kept fixable on a second look
    calibration: dict[str, Any] = field(default_factory=dict)  # the level, the reference sizes and what they allow

    def off_task(self) -> list[dict[str, Any]]:
        """Traces (failing or passing) whose input is not a request for the task: empty, gibberish, injections, off-domain."""
        return [t for t in self.external + self.screened if t["reason"] in OFF_TASK_REASONS]

    def excluded(self, out_of_scope_label: str | None = None) -> list[dict[str, Any]]:
        """Every trace whose logged answer is kept out of training, with its reason, evidence and the action taken
        (the poison filter's output); a statistical flag also carries its p-value, BH-adjusted p-value and level.
        With ``out_of_scope_label``, off-task inputs are trained to that label instead."""
        def action(t: dict[str, Any]) -> str:
            return f"trained as {out_of_scope_label!r}" if out_of_scope_label and t["reason"] in OFF_TASK_REASONS else "excluded"
        return [{"id": t["id"], "verdict": v, "reason": t["reason"], "evidence": t["evidence"], "action": action(t), "text": t["text"][:200],
                 **{k: t[k] for k in ("p_value", "adjusted_p", "level") if k in t}}
                for v, group in (("fail", self.external), ("pass", self.screened)) for t in group]


def _quality_model(seed: int):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True),
                         LogisticRegression(max_iter=2000, C=5.0))


def _quality_classes(ref_labels: list[str]) -> list[str] | None:
    counts = Counter(ref_labels)
    return sorted(counts) if len(counts) >= 2 and min(counts.values()) >= 2 else None


def _fold_probabilities(texts: list[str], y: np.ndarray, train: np.ndarray | None, test: np.ndarray | None, seed: int,
                        classes: int) -> tuple[np.ndarray | None, Any]:
    """One fit of the label-quality model: on ``train``, its probabilities on ``test`` (every class a column); with
    ``train`` None, on every example (the model itself)."""
    if train is None:
        return None, _quality_model(seed).fit(texts, y)
    model = _quality_model(seed).fit([texts[i] for i in train], y[train])
    probs = np.zeros((len(test), classes))
    probs[:, model.classes_] = model.predict_proba([texts[i] for i in test])
    return probs, None


def _fit_all(splits: list[tuple], texts: list[str], y: np.ndarray, seed: int, classes: int, processes: int) -> list[tuple]:
    """``_fold_probabilities`` for every split, in order. With ``processes`` above 1, in a pool of fresh processes (no more
    than the splits and the CPUs this process may use, cgroup quotas included) that is shut down before this returns,
    so no idle worker outlives the triage or holds its exit."""
    from joblib import cpu_count

    jobs = min(len(splits), cpu_count(), processes)
    if jobs <= 1:
        return [_fold_probabilities(texts, y, train, test, seed, classes) for train, test in splits]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    n = len(splits)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_fold_probabilities, [texts] * n, [y] * n, [a for a, _ in splits], [b for _, b in splits], [seed] * n,
                             [classes] * n))


def _reference_quality(ref_texts: list[str], ref_labels: list[str], seed: int, fit_all: bool = False,
                       processes: int = d.TRIAGE_FIT_PROCESSES) -> tuple[np.ndarray | None, Any]:
    """Label quality (cleanlab self-confidence) of each trusted example under a TF-IDF + logistic regression model that
    was not trained on it (out of 5 folds): the distribution a trace's label quality is compared with. Low where the
    model doubts the label. None when the reference cannot be split (a label with fewer than 2 examples). With
    ``fit_all``, also the model fitted on every trusted example (what scores the traces), fitted beside the folds.
    The fits run in up to ``processes`` processes; the result does not depend on how many."""
    from cleanlab.rank import get_label_quality_scores
    from sklearn.model_selection import StratifiedKFold

    classes = _quality_classes(ref_labels)
    if classes is None:
        return None, None
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[lab] for lab in ref_labels])
    folds = min(5, min(Counter(ref_labels).values()))
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)) + ([(None, None)] if fit_all else [])
    fitted = _fit_all(splits, ref_texts, y, seed, len(classes), processes)
    probs = np.zeros((len(y), len(classes)))
    for (_, test), (part, _) in zip(splits, fitted):
        if test is not None:
            probs[test] = part
    return get_label_quality_scores(y, probs, method="self_confidence"), (fitted[-1][1] if fit_all else None)


def _trace_quality(ref_texts: list[str], ref_labels: list[str], texts: list[str], labels: list[str], seed: int,
                   fitted_for: Callable[[Callable[[], Any]], tuple[Any, str]] | None = None, prefitted: Any = None) -> tuple[np.ndarray, str | None]:
    """Label quality of each (text, label) under the model fitted on all trusted examples, and how the model was
    obtained (``fitted_for(fit)``: a cache of models per reference). The traces never train the model, so its cost is
    bounded by the reference, and a poisoned trace cannot vouch for others like it. NaN for a trace whose label the
    reference does not hold."""
    from cleanlab.rank import get_label_quality_scores

    quality = np.full(len(texts), np.nan)
    classes = _quality_classes(ref_labels)
    if classes is None:
        return quality, None
    index = {c: i for i, c in enumerate(classes)}
    known = [i for i, lab in enumerate(labels) if lab in index]
    if not known:
        return quality, None

    def fit():  # ``prefitted``: fitted beside the reference's folds (the same model)
        return prefitted if prefitted is not None else _quality_model(seed).fit(ref_texts, np.array([index[lab] for lab in ref_labels]))
    fitted, how = fitted_for(fit) if fitted_for is not None else (fit(), "fitted")
    given = np.array([index[labels[i]] for i in known])
    quality[known] = get_label_quality_scores(given, fitted.predict_proba([texts[i] for i in known]), method="self_confidence")
    return quality, how


DETECTORS_VERSION = "detectors-2"  # bump when input_flags decides differently: a stored score says its text passed these detectors
SCORES_VERSION = f"conformal-bh/knn-k{d.TRIAGE_SUPPORT_K}/char-wb-2-4-lr-c5-5fold/{DETECTORS_VERSION}"  # cached scores of another version never mix


def _pinned_reference(cache: Any, key: str | None, passing: list[dict[str, Any]], answers: list[str],
                      record: dict[str, Any]) -> dict[str, Any] | None:
    """The reference an earlier preparation pinned for this parent, while every verified member still passes with the same
    answer (``answers[j]`` is ``passing[j]``'s); None (and why, in ``record``) otherwise. A member passed the input
    detectors when it was drawn, and the key holds their version: its text passes them still."""
    if cache is None or not key:
        return None
    pin = cache.pinned(key)
    if pin is None:
        record["reuse"] = {"reference": "drawn now and pinned for the next preparation of this parent"}
        return None
    wanted = {trace for _, _, trace in pin["members"] if trace is not None}
    passing_now = {t["id"]: answer for t, answer in zip(passing, answers) if t["id"] in wanted}
    stale = sum(1 for _, label, trace in pin["members"] if trace is not None and passing_now.get(trace) != label)
    if stale:
        record["reuse"] = {"reference": f"drawn again: {stale} verified member(s) of the pinned reference no longer pass with the same answer"}
        return None
    record["reuse"] = {"reference": f"pinned at {pin['created_at']} ({len(pin['members'])} members), reused"}
    return pin


def _digests(members: list, two_spaces: bool) -> tuple[str, str]:
    """The digests the scores against this reference are stored under: (failures', passing traces'), one where both
    roles share a space."""
    from pioneer.traces.triage_cache import digest_of

    rows = [list(m) for m in members]
    digest = digest_of(rows, SCORES_VERSION)
    return digest, (digest_of(rows, f"{SCORES_VERSION}|passing-space") if two_spaces else digest)


def _stored(cache: Any, digest: str, digest_passing: str, failing: list[tuple[str, str]],
            passing: list[tuple[str, str]]) -> tuple[Any, Any]:
    """The stored scores of the failures' and the passing traces' (text, label) pairs: (failures', passing traces')."""
    if digest_passing == digest:
        known = cache.scores(digest, failing + passing)
        return known, known
    return cache.scores(digest, failing), cache.scores(digest_passing, passing)


def bounded_reference(parent: list[tuple], verified: list[tuple], bound: int, seed: int,
                      record: dict[str, Any]) -> tuple[list[tuple], int]:
    """The trusted reference: the parent's examples, then the verified passing traces; above ``bound`` a seeded uniform
    sample of both alike (their order kept). Returns (reference, how many of it are the parent's) and records the
    bound and the sizes it sampled from in ``record``."""
    total = len(parent) + len(verified)
    if total <= bound:
        return parent + verified, len(parent)
    keep = np.sort(np.random.default_rng(seed).choice(total, size=bound, replace=False))
    from_parent = int(np.searchsorted(keep, len(parent)))
    record["reference_sample"] = {"bound": bound, "parent_examples": len(parent), "verified_passing": len(verified), "kept": bound}
    return [parent[i] if i < len(parent) else verified[i - len(parent)] for i in keep], from_parent


def _score(checker: LabelSupport, todo: list[int], texts: list[str], checked: list[str], nf: int, domain: np.ndarray,
           margin: np.ndarray, best: list[str | None]) -> None:
    """Score the traces ``todo`` against the reference, in place: every trace's domain similarity; a failing trace's
    (index below ``nf``) label margin and best label too. Each distinct text is embedded and compared once,
    ``TRIAGE_SCORE_CHUNK`` texts at a time, and its vectors are let go after its chunk."""
    rows_of: dict[str, list[int]] = {}
    for i in todo:
        rows_of.setdefault(texts[i], []).append(i)
    distinct = list(rows_of)
    for start in range(0, len(distinct), d.TRIAGE_SCORE_CHUNK):
        part = distinct[start:start + d.TRIAGE_SCORE_CHUNK]
        failing = np.array([rows_of[t][0] < nf for t in part], dtype=bool)  # todo is sorted: failures come first
        per_label, similarity = checker.supports(checker.embed(part), part, per_label_rows=failing)
        rows, of, labels = [], [], []
        for j, t in enumerate(part):
            for i in rows_of[t]:
                domain[i] = similarity[j]
                if i < nf:
                    rows.append(i)
                    of.append(j)
                    labels.append(checked[i])
        if rows:
            supports = per_label[of]
            margin[rows] = checker.margins(supports, labels)
            for i, b in zip(rows, checker.best_label(supports)):
                best[i] = b


def triage(failures: list[dict[str, Any]], passing: list[dict[str, Any]], labels: list[str], seed: int = 0,
           confident_learning: bool = True, reference: list[tuple[str, str]] | None = None,
           embed: Callable[[list[str]], np.ndarray] | None = None, out_of_scope_label: str | None = None,
           embed_passing: Callable[[list[str]], np.ndarray] | None = None, fdr: float = d.TRIAGE_FDR, ranked: Callable[[list[str]], list[list[str]]] | None = None,
           reference_max: int = d.TRIAGE_REFERENCE_MAX, cache: Any = None, cache_key: str | None = None,
           fit_processes: int = d.TRIAGE_FIT_PROCESSES) -> Triage:
    """Split failing traces ({id, text, prediction, corrected}) into fixable and external, with evidence, and
    screen passing traces ({id, text, prediction}) with the same input checks: a passing verdict does not
    make an injection or an off-domain query good training data.

    Rules that need no statistics come first: input detectors (empty, gibberish, injection) and corrections
    that are not a task label. The statistical checks then give each trace a conformal p-value against the
    trusted reference (``reference``, the parent's training data, embedded with ``embed``; character n-grams
    by default) and flag by Benjamini-Hochberg at level ``fdr``, failing and passing traces as two families:

    * failing traces: how unlike the task the input is (domain similarity) and how little the trusted
      examples of its correction support it against the best other label (margin), combined into one p-value
      calibrated on the trusted examples; with ``confident_learning``, the cleanlab label quality of the
      correction on out-of-fold probabilities, calibrated on the trusted examples and the passing traces
      (Bonferroni across the two references);
    * passing traces: the domain similarity only (their answer was verified).

    A flagged failure is off-domain when its domain p-value is the smaller, or (with ``out_of_scope_label``)
    when the trusted out-of-scope examples support it best; an unsupported correction or a suspected label
    error otherwise. Once the flags hold enough off-task traffic (detectors and off-domain), a second BH pass
    at ``fdr * TRIAGE_NEIGHBOURHOOD_LEVEL_FRACTION`` asks of every failure still kept whether it sits closer to that traffic than trusted
    examples do (off-task neighbourhood). A discovery whose adjusted p-value is above ``fdr *
    TRIAGE_BORDERLINE_FRACTION`` is borderline: with ``ranked`` (the deployed model's labels per input, most
    probable first) a borderline label doubt whose correction the model ranks near the top is taken back as
    fixable (a confusion the model nearly got right, not a wrong label), recorded in ``taken_back``
    (see :func:`_second_look`).
    An off-task trace whose logged answer already is ``out_of_scope_label`` is kept as it is (a failing one is
    fixable as corrected, a passing one is kept); it still counts as off-task traffic for the neighbourhood.

    With ``cache`` (a :class:`pioneer.traces.triage_cache.TriageCache`) and ``cache_key`` (the parent, seed, bound and
    embedding space), the reference drawn the first time is pinned and reused while every verified member still
    passes with the same answer, and each trace's scores against it are computed once: a later preparation scores only
    its new traces (and fits the label-quality model only when there are new failures). BH always runs on all of them.
    A text scored against the pinned reference passed the input detectors then (``DETECTORS_VERSION`` is part of the
    key), so the detectors run only on the texts it has not scored (``calibration["detectors"]`` counts both).

    ``embed_passing`` (default ``embed``) is the space of the passing traces' domain check, with the reference embedded
    in it too: a log is mostly passing traces, which need only that check, so a cheaper space there (a static table)
    bounds the cost of a million traces while failures keep ``embed``. Scores of the two roles are stored apart.
    """
    from pioneer.traces.triage_cache import StoredScores

    out = Triage()
    out.calibration = {"level": fdr, "procedure": "conformal p-values, Benjamini-Hochberg"}
    label_set = set(labels)
    parent_members = [(t, y, None) for t, y in (reference or []) if y in label_set]
    traces = failures + passing
    nf = len(failures)
    texts = [t["text"] for t in traces]
    checked = [f.get("corrected") or "" for f in failures] + [p.get("prediction") or "" for p in passing]
    two_spaces = embed is not None and embed_passing is not None and embed_passing is not embed
    pin = _pinned_reference(cache, cache_key, passing, checked[nf:], out.calibration)
    digest = digest_passing = None
    # the scores of (text, checked label) pairs against this reference, stored by an earlier preparation: the failures'
    # (known) and the passing traces' (known_passing, the same where both roles share one space)
    known = known_passing = StoredScores.none()
    if pin is not None:
        digest, digest_passing = _digests(pin["members"], two_spaces)
        pairs = [(texts[i], checked[i]) if checked[i] in label_set else None for i in range(len(traces))]
        known, known_passing = _stored(cache, digest, digest_passing, [p for p in pairs[:nf] if p], [p for p in pairs[nf:] if p])
    reasons: dict[int, dict[str, Any]] = {}  # trace index -> {reason, evidence[, p_value, adjusted_p, level]}
    # a log repeats its inputs: each distinct text is checked once, and a text scored against this reference before
    # passed these detectors then (their version is in the reference's key)
    flags_of: dict[str, list[str]] = dict.fromkeys(known.texts() + known_passing.texts(), [])  # shared, never changed
    passed_before = len(flags_of)
    for i, text in enumerate(texts):
        flags = flags_of.get(text)
        if flags is None:
            flags = flags_of[text] = input_flags(text)
        if flags:
            reasons[i] = {"reason": "adversarial-or-malformed-input", "evidence": f"input detectors: {flags}"}
        elif i < nf and checked[i] not in label_set:
            reasons[i] = {"reason": "off-task-correction", "evidence": f"corrected output {traces[i].get('corrected')!r} is not a task label"}
    out.calibration["detectors"] = {"version": DETECTORS_VERSION, "texts_checked": len(flags_of) - passed_before,
                                    "texts_passed_before": passed_before}
    tested = [i for i in range(len(traces)) if i not in reasons]
    tested_fail = [i for i in tested if i < nf]
    tested_pass = [i for i in tested if i >= nf]
    if pin is not None:
        members, parent_reference = [tuple(m) for m in pin["members"]], pin["parent_examples"]
    else:
        # the trusted reference: the parent's training data and the passing traces the detectors let through (verified
        # answers of the same traffic, so the checks compare failures with what this deployment really sees)
        verified = [(texts[i], checked[i], traces[i]["id"]) for i in tested_pass if checked[i] in label_set]
        members, parent_reference = bounded_reference(parent_members, verified, reference_max, seed, out.calibration)
        if cache is not None and cache_key:
            digest, digest_passing = _digests(members, two_spaces)
            known, known_passing = _stored(cache, digest, digest_passing, [(texts[i], checked[i]) for i in tested_fail],
                                           [(texts[i], checked[i]) for i in tested_pass])
    reference = [(t, y) for t, y, _ in members]
    # what calibrates which family: never a trusted copy of a trace under test (a text an earlier revision trained on
    # would vouch for itself), and for passing traces the parent's examples alone where there are enough
    fail_texts = {traces[i]["text"] for i in tested_fail}
    pass_texts = {traces[i]["text"] for i in tested_pass}
    fc = np.array([t not in fail_texts for t, _ in reference], dtype=bool)
    parent_only = np.array([j < parent_reference and t not in pass_texts for j, (t, _) in enumerate(reference)], dtype=bool)
    if parent_only.sum() < MIN_REFERENCE:
        parent_only = np.array([t not in pass_texts or j >= parent_reference for j, (t, _) in enumerate(reference)], dtype=bool)

    checker = None
    p_domain = np.full(len(traces), np.nan)
    p_margin = np.full(len(traces), np.nan)
    domain = np.full(len(traces), np.nan)
    margin = np.full(len(traces), np.nan)
    best: list[str | None] = [None] * len(traces)
    quality = np.full(len(traces), np.nan)
    todo: list[int] = []
    for scores, role in ((known, tested_fail), (known_passing, tested_pass)):
        stored = [scores.row.get((texts[i], checked[i]), -1) for i in role]
        todo += [i for i, row in zip(role, stored) if row < 0]
        if hit := [i for i, row in zip(role, stored) if row >= 0]:
            rows = np.array([row for row in stored if row >= 0])
            domain[hit], margin[hit], quality[hit] = scores.domain[rows], scores.margin[rows], scores.quality[rows]
            for i, row in zip(hit, rows.tolist()):
                best[i] = scores.best[row]
    if len(reference) >= MIN_REFERENCE and len({y for _, y in reference}) >= 2:
        from pioneer.data.embeddings import tfidf_embedder

        own = own_passing = None
        if pin is not None:  # the pinned reference's own scores: not computed again
            own = tuple(np.array(pin["scores"][k], dtype=float) for k in ("domain", "margin"))  # JSON null -> NaN
            if two_spaces:
                own_passing = (np.array(pin["scores"]["passing_domain"], dtype=float), np.full(len(reference), np.nan))
        ref_texts, ref_labels = [t for t, _ in reference], [y for _, y in reference]
        checker = LabelSupport(embed or tfidf_embedder(ref_texts), ref_texts, ref_labels, own=own)
        screen = LabelSupport(embed_passing, ref_texts, ref_labels, own=own_passing, domain_only=True) if two_spaces else checker
        # a pair stored from a passing trace holds its domain only: a failure with that text and label is scored again
        classes = set(checker.classes)
        todo = sorted(set(todo) | {i for i in np.flatnonzero(np.isnan(margin[:nf])).tolist() if i not in reasons and checked[i] in classes})
        if two_spaces:
            _score(checker, [i for i in todo if i < nf], texts, checked, nf, domain, margin, best)
            _score(screen, [i for i in todo if i >= nf], texts, checked, nf, domain, margin, best)
        else:
            _score(checker, todo, texts, checked, nf, domain, margin, best)
        # passing traces are calibrated on the parent's examples alone (they are under test here, and a poisoned
        # one that passed would make others like it look ordinary); failures below, on the whole reference
        p_domain = p_values(screen.reference_domain[parent_only], domain)

    p_quality = np.full(len(traces), np.nan)
    quality_reference: np.ndarray | None = None  # the trusted examples' own label quality
    quality_model = prefitted = None
    if confident_learning and tested_fail:
        ref_texts, ref_labels = [t for t, _ in reference], [y for _, y in reference]
        if pin is not None and pin["scores"].get("quality"):
            quality_reference = np.array(pin["scores"]["quality"], dtype=float)
        else:
            quality_reference, prefitted = _reference_quality(ref_texts, ref_labels, seed, fit_all=True, processes=fit_processes)
        if quality_reference is not None:
            in_reference = set(ref_labels)
            ask = [i for i in tested_fail if (texts[i], checked[i]) not in known or (np.isnan(quality[i]) and checked[i] in in_reference)]
            if ask:
                quality[ask], quality_model = _trace_quality(ref_texts, ref_labels, [texts[i] for i in ask], [checked[i] for i in ask], seed,
                                                             (lambda fit: cache.fitted(digest, fit)) if digest else None, prefitted)
            todo = sorted(set(todo) | set(ask))
    if digest:
        for into, role in ((digest, [i for i in todo if i < nf]), (digest_passing, [i for i in todo if i >= nf])):  # one digest in one space
            cache.put_scores(into, [(texts[i], checked[i], domain[i], margin[i], best[i], quality[i]) for i in role])
        if pin is None and checker is not None:
            cache.pin(cache_key, digest, [list(m) for m in members], parent_reference,
                      {"domain": checker.reference_domain.tolist(), "margin": checker.reference_margin.tolist(),
                       "quality": [] if quality_reference is None else quality_reference.tolist(),
                       **({"passing_domain": screen.reference_domain.tolist()} if two_spaces else {})}, now())
        reused = len(known) + (len(known_passing) if two_spaces else 0)
        out.calibration["reuse"] = {**out.calibration.get("reuse", {}), "scored": len(todo), "reused": reused,
                                    "label_quality_model": quality_model or "not needed (no new failure to score)", **cache.record()}

    # one p-value per failing trace: its checks' smallest, calibrated on the trusted examples' own smallest. Failures
    # are harder than clean traffic by selection (the deployed model got them wrong), so each is compared with the
    # trusted examples that are as hard (Mondrian conformal)
    hard_ref = np.zeros(len(reference), dtype=bool)
    hard = np.zeros(len(traces), dtype=bool)
    if checker is not None:
        # "as hard": a margin below the trusted examples' TRIAGE_HARD_SHARE quantile (a bar set by the reference alone)
        bar = float(np.nanquantile(checker.reference_margin, d.TRIAGE_HARD_SHARE)) if np.isfinite(checker.reference_margin).any() else 0.0
        hard_ref = np.nan_to_num(checker.reference_margin, nan=np.inf) <= bar  # ties in: the group is never empty
        hard = np.nan_to_num(margin, nan=np.inf) <= bar
        out.calibration["hard_margin_below"] = round(bar, 4)
    g_ref, g = hard_ref[fc], hard[tested_fail]
    ref_cols, cols = [], []
    if checker is not None:
        ref_domain, ref_margin = checker.reference_domain[fc], checker.reference_margin[fc]
        p_domain[tested_fail] = by_group(ref_domain, g_ref, domain[tested_fail], g)
        p_margin[tested_fail] = by_group(ref_margin, g_ref, margin[tested_fail], g)
        ref_cols += [reference_by_group(ref_domain, g_ref), reference_by_group(ref_margin, g_ref)]
        cols += [p_domain[tested_fail], p_margin[tested_fail]]
    if quality_reference is not None:
        p_quality[tested_fail] = by_group(quality_reference[fc], g_ref, quality[tested_fail], g)
        ref_cols.append(reference_by_group(quality_reference[fc], g_ref))
        cols.append(p_quality[tested_fail])
    p_fail = np.full(len(traces), np.nan)
    if cols:
        p_fail[tested_fail] = by_group(min_p(ref_cols), g_ref, min_p(cols), g) if len(cols) > 1 else cols[0]
    out.calibration.update({"reference": len(reference), "parent_examples": parent_reference,
                            "verified_passing": len(reference) - parent_reference,
                            "hard_reference": int(hard_ref.sum()), "smallest_p_value": round(1 / (len(reference) + 1), 6),
                            "smallest_p_value_hard": round(1 / (int(hard_ref.sum()) + 1), 6), "checks": len(cols)})
    adjusted_p = np.full(len(traces), np.nan)
    if tested_fail:
        adjusted_p[tested_fail] = adjusted(p_fail[tested_fail])
    if tested_pass:
        adjusted_p[tested_pass] = adjusted(p_domain[tested_pass])
    final_p = np.where(np.arange(len(traces)) < nf, p_fail, p_domain)
    # each failure's domain similarity against every trusted example (not only the as-hard ones): what names a flag off-domain
    p_domain_all = np.full(len(traces), np.nan)
    if checker is not None and tested_fail:
        p_domain_all[tested_fail] = p_values(checker.reference_domain[fc], domain[tested_fail])
    p_domain_all[tested_pass] = p_domain[tested_pass]

    def describe(i: int) -> dict[str, Any]:
        label = checked[i]
        stats = {"p_value": round(float(final_p[i]), 6), "adjusted_p": round(float(adjusted_p[i]), 6), "level": fdr}
        how = f"p={final_p[i]:.4f}, BH-adjusted {adjusted_p[i]:.4f} <= level {fdr:g}"
        # what the flag says about the trace: the input is not a request for the task (off-domain: routed to the
        # out-of-scope label where there is one) when it is unusual next to every trusted example, or when the trusted
        # out-of-scope examples support it best; otherwise its correction is what is wrong
        if i >= nf or (np.isfinite(p_domain_all[i]) and p_domain_all[i] <= fdr):
            return {"reason": "off-domain-input", **stats, "evidence": (
                f"similarity to the task's {checker.k} nearest trusted examples {domain[i]:.3f}: lower than in "
                f"{p_domain_all[i]:.1%} of the trusted examples (domain check; {how})")}
        if out_of_scope_label and label != out_of_scope_label and best[i] == out_of_scope_label:
            return {"reason": "off-domain-input", **stats, "evidence": (
                f"the input is supported best by the trusted {out_of_scope_label!r} examples, and {label!r} falls "
                f"short of them by {-margin[i]:.3f} ({how})")}
        checks = {"margin": p_margin[i], "label quality": p_quality[i]}
        smallest = min(((v, k) for k, v in checks.items() if np.isfinite(v)), default=(1.0, "label quality"))[1]
        if smallest == "margin":
            against = (f"ahead of the next label by only {margin[i]:.3f}" if best[i] == label else
                       f"{margin[i]:+.3f} against the best other label ({best[i]!r})")
            return {"reason": "unsupported-correction", **stats, "evidence": (
                f"the {checker.k} nearest trusted examples of {label!r} support the input {against}: {p_margin[i]:.1%} of "
                f"the trusted examples {'as hard as this input' if hard[i] else 'above the hard bar'} are as unlike their own label ({how})")}
        return {"reason": "suspected-label-error", **stats, "evidence": (
            f"confident learning (cleanlab self-confidence {quality[i]:.3f} on out-of-fold TF-IDF probabilities) "
            f"doubts {label!r} more than for {p_quality[i]:.1%} of the trusted and verified examples ({how})")}

    with np.errstate(invalid="ignore"):
        discovered = np.flatnonzero(adjusted_p <= fdr).tolist()  # NaN (a trace no check tested) is never at or below
    for i in discovered:
        reasons[i] = describe(i)
    if checker is not None:
        # the neighbourhood is calibrated on the parent's in-scope examples: its out-of-scope ones are off-task traffic
        in_scope = parent_only & fc & np.array([y != out_of_scope_label for _, y in reference], dtype=bool)
        reasons.update(_off_task_neighbourhood(reasons, texts, checker, domain, nf, fdr,
                                               in_scope if in_scope.sum() >= MIN_REFERENCE else parent_only))
    _second_look(out, reasons, traces, checked, nf, fdr, ranked, len(labels))
    # off-task traces already answered with the out-of-scope label: kept as they are
    answered = {i for i, r in reasons.items() if r["reason"] in OFF_TASK_REASONS and out_of_scope_label and checked[i] == out_of_scope_label}
    for i, t in enumerate(traces):
        if i in reasons and i not in answered:
            (out.external if i < nf else out.screened).append({**t, **reasons[i]})
        elif i < nf:  # with its p-value where a check ran: how unusual a kept failure is (the LLM review reads it)
            out.fixable.append({**t, "p_value": round(float(final_p[i]), 6)} if np.isfinite(final_p[i]) else t)
        else:
            out.kept_passing.append(t)
    return out


def second_look_rank(labels: int) -> int:
    """How high the deployed model must rank a correction for a borderline label doubt to be taken back: its top
    ``TRIAGE_SECOND_LOOK_SHARE`` of the labels, and never fewer than its top two (its answer and its runner-up)."""
    return max(2, math.ceil(d.TRIAGE_SECOND_LOOK_SHARE * labels))


def _second_look(out: Triage, reasons: dict[int, dict[str, Any]], traces: list[dict[str, Any]], checked: list[str], nf: int,
                 fdr: float, ranked: Callable[[list[str]], list[list[str]]] | None, labels: int) -> None:
    """Take back borderline label doubts on failures whose correction the deployed model ranks near the top.

    A label flip puts a label drawn without regard to the input in the log, so the model ranks it near the top about
    as often as chance (the top eighth of the labels: one time in eight); the right label of a confusion is
    mostly its runner-up or close behind. Only flags that doubt the correction get this look: an input flagged as
    unlike the task has no right label for the model's ranking to vouch for (an off-domain request with a random
    logged answer is its runner-up by chance as often as any other)."""
    bar = fdr * d.TRIAGE_BORDERLINE_FRACTION
    top = second_look_rank(labels)
    borderline = sorted(i for i, r in reasons.items() if i < nf and r["reason"] in LABEL_DOUBTS and r.get("adjusted_p", 0.0) > bar)
    out.calibration["borderline_above"] = bar
    out.calibration["second_look_top"] = top
    if not borderline or ranked is None:
        return
    try:
        orders = ranked([traces[i]["text"] for i in borderline])
    except (OSError, ValueError) as exc:  # the deployed model cannot answer: the flags stand, and the record says why
        out.calibration["second_look_skipped"] = f"the deployed model could not be asked: {str(exc)[:200]}"
        return
    for i, order in zip(borderline, orders):
        order = list(order or [])
        if checked[i] in order[:top]:
            r = reasons.pop(i)
            rank = order.index(checked[i]) + 1
            out.taken_back.append({"id": traces[i]["id"], "text": traces[i]["text"][:200], "flagged_as": r["reason"],
                                   "adjusted_p": r["adjusted_p"], "rule": "ranked-near-the-top", "rank": rank, "evidence": (
                                       f"borderline flag (BH-adjusted p {r['adjusted_p']:.4f} > {bar:g}) taken back: the deployed "
                                       f"model ranks the correction {checked[i]!r} number {rank} of {labels} for this input (top "
                                       f"{top}), a confusion it nearly resolved, not a wrong label")})


def _off_task_neighbourhood(reasons: dict[int, dict[str, Any]], texts: list[str], checker: LabelSupport, domain: np.ndarray,
                            nf: int, fdr: float, calibration: np.ndarray) -> dict[int, dict[str, Any]]:
    """Failures that sit closer to the off-task traffic already found than trusted examples do: {index: reason}.

    Off-task inputs come in families (templated false premises, the same injection reworded); once the
    detectors and the domain check have found ``TRIAGE_NEIGHBOURHOOD_MIN`` of them (the seeds), the rest sit
    next to them. The score is an input's similarity to the task minus its similarity to the seeds (k nearest
    of each); the parent's examples (``calibration``) score the same way, so each failure not yet flagged gets a
    conformal p-value, and BH at the same level decides (passing traces, verified answers, are left to the domain
    check: as a family of thousands with few off-task members, BH finds next to nothing there). A failure already flagged
    as an unsupported correction that this check flags too is re-labelled off-task (an off-task input explains
    that as well). What a pass finds joins the seeds of the next (``TRIAGE_NEIGHBOURHOOD_PASSES``).
    """
    k = d.TRIAGE_NEIGHBOURHOOD_K
    level = fdr * d.TRIAGE_NEIGHBOURHOOD_LEVEL_FRACTION
    found: dict[int, dict[str, Any]] = {}
    for _ in range(d.TRIAGE_NEIGHBOURHOOD_PASSES):
        flagged = {**reasons, **found}
        seeds = [i for i, r in flagged.items() if r["reason"] in OFF_TASK_REASONS]
        if len(seeds) < d.TRIAGE_NEIGHBOURHOOD_MIN:
            break
        # off-task traffic repeats itself (templates, the same injection resent): each distinct seed text is one key,
        # counted as often as it was seen
        seed_counts = Counter(texts[i] for i in seeds)
        seed_vectors = checker.embed(list(seed_counts))
        copies = np.fromiter(seed_counts.values(), dtype=np.int64, count=len(seed_counts))
        ref_score = checker.reference_domain[calibration] - top_k_similar(checker.vectors(calibration), seed_vectors, k, counts=copies)
        new: dict[int, dict[str, Any]] = {}
        family = [i for i in range(nf) if i not in flagged or flagged[i]["reason"] == "unsupported-correction"]
        if not family:
            break
        distinct = list(dict.fromkeys(texts[i] for i in family))  # each distinct input compared once
        position = {t: j for j, t in enumerate(distinct)}
        off = top_k_similar(checker.embed(distinct), seed_vectors, k, counts=copies)[[position[texts[i]] for i in family]]
        near = domain[family]
        p = p_values(ref_score, near - off)
        adj = adjusted(p)
        for j, i in enumerate(family):
            if np.isfinite(adj[j]) and adj[j] <= level:
                evidence = (f"mean similarity to the {k} nearest of {len(seeds)} off-task traces {off[j]:.3f} against "
                            f"{near[j]:.3f} to the task's nearest trusted examples; {p[j]:.2%} of the trusted examples sit as "
                            f"close to that traffic (p={p[j]:.4f}, BH-adjusted {adj[j]:.4f} <= level {level:g})")
                new[i] = {"reason": "off-task-neighbourhood", "p_value": round(float(p[j]), 6), "adjusted_p": round(float(adj[j]), 6),
                          "level": level, "evidence": evidence + (f"; and {reasons[i]['evidence']}" if i in reasons else "")}
        if not new:
            break
        found.update(new)
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


def confirm(clusters: list[dict[str, Any]], fixable: list[dict[str, Any]], predict, per_cluster: int = 3,
            most: int = d.CONFIRM_CLUSTERS) -> list[dict[str, Any]]:
    """Live confirmation (paper §2.6): probe the deployed model with variants of each fixable cluster's failures.

    ``predict(texts) -> labels`` is the deployed model. A cluster is confirmed when the model keeps making the
    same mistake on the variants (a systematic failure, worth a curriculum), not a one-off. The ``most`` largest
    fixable clusters are probed (``clusters`` come largest first); the others say they were not.
    """
    by_cluster: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in fixable:
        by_cluster[f"{f['prediction']} -> {f['corrected']}"].append(f)
    asked: dict[int, tuple[list[str], str | None]] = {}
    for n, c in enumerate(clusters):
        if c["fixability"] == "fixable" and len(asked) < most:
            members = by_cluster.get(c["cluster"], [])[:per_cluster]
            asked[n] = ([p for m in members for p in probes(m["text"])], members[0]["prediction"] if members else None)
    every = [t for texts, _ in asked.values() for t in texts]
    answers = iter(predict(every) if every else [])  # one call: the model batches all probes at once
    out = []
    for n, c in enumerate(clusters):
        if n not in asked:
            out.append(c if c["fixability"] != "fixable" else
                       {**c, "probes": 0, "confirmation_rate": None, "confirmed": None, "not_probed": f"beyond the {most} largest fixable clusters"})
            continue
        texts, wrong = asked[n]
        got = [next(answers) for _ in texts]
        rate = sum(1 for g in got if g == wrong) / len(got) if got else None
        out.append({**c, "probes": len(texts), "confirmation_rate": None if rate is None else round(rate, 3),
                    "confirmed": rate is not None and rate >= 0.5})
    return out
