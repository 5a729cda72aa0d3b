"""Production mode for NER: triage, failure taxonomy and repair curriculum on tagged sentences.

A trace's ``input`` is a sentence (words joined by spaces), its ``prediction`` and ``corrected`` output
the BIO tags (joined by spaces). The classification pieces do not apply as they are: a label is a whole
tag sequence, so failures are described by their span errors instead (a spurious ``ORG``, a missed
``PER``, a ``LOC`` read as ``ORG``), and the 2-for-1 hard negative of a failure is the nearest verified
sentence that shows the right behaviour for its error: entity-free (or free of the spurious type) for an
over-prediction, one that holds the missed type for an under-prediction.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any

import numpy as np

from pioneer.api.models import DataRecipe
from pioneer.data.bio import alignment_problem
from pioneer.data.examples import Example
from pioneer.data.similarity import TextIndex
from pioneer.data.sources import entity_types as tag_types
from pioneer.production.diagnosis import Triage, input_flags, length_bucket
from pioneer.trainer.ner_metrics import entity_spans


def _spans(tags: str | None) -> set[tuple[str, int, int]]:
    """The entity spans of a space-joined tag sequence; none for a missing or empty output."""
    return entity_spans(tags.split(" ") if tags and tags.strip() else [])


def span_errors(prediction: str | None, corrected: str) -> list[str]:
    """What the prediction got wrong, span by span: ``spurious T``, ``missed T``, ``T read as U``, ``boundary of T``."""
    got, gold = _spans(prediction), _spans(corrected)
    errors = []
    gold_at = {(s, e): t for t, s, e in gold}
    for t, s, e in sorted(got - gold, key=lambda x: (x[1], x[0])):
        if (s, e) in gold_at:
            errors.append(f"{gold_at[(s, e)]} read as {t}")
        elif any(gs <= e and s <= ge for _, gs, ge in gold):
            errors.append(f"boundary of {t}")
        else:
            errors.append(f"spurious {t}")
    got_at = {(s, e) for _, s, e in got}
    for t, s, e in sorted(gold - got, key=lambda x: (x[1], x[0])):
        if (s, e) not in got_at and not any(ps <= e and s <= pe for _, ps, pe in got):
            errors.append(f"missed {t}")
    return errors


def wrong_and_missed(errors: list[str]) -> tuple[set[str], set[str]]:
    """(types the prediction wrongly tagged, types it missed or mis-bounded) from :func:`span_errors`."""
    avoid, want = set(), set()
    for e in errors:
        words = e.split(" ")
        if words[0] == "spurious":
            avoid.add(words[1])
        elif words[0] in ("missed", "boundary"):
            want.add(words[-1])
        else:  # "U read as T"
            want.add(words[0])
            avoid.add(words[-1])
    return avoid, want


def _word_features(words: list[str], i: int) -> dict[str, Any]:
    w = words[i]
    shape = "".join("X" if c.isupper() else "x" if c.islower() else "d" if c.isdigit() else c for c in w)[:6]
    return {"w=" + w.lower(): 1, "shape=" + shape: 1, "pre=" + w[:3].lower(): 1, "suf=" + w[-3:].lower(): 1, "first": i == 0,
            "prev=" + (words[i - 1].lower() if i else "<s>"): 1, "next=" + (words[i + 1].lower() if i + 1 < len(words) else "</s>"): 1}


def type_confusions(sentences: list[list[str]], tags: list[list[str]], tag_set: list[str], seed: int = 0) -> dict[int, str]:
    """Sentences whose tags cleanlab finds a likely *type* error in: {sentence index: evidence}.

    Confident learning (``cleanlab.token_classification``) on 5-fold out-of-fold word probabilities of a
    logistic regression over word features (the word, its shape, affixes and neighbours), folds by sentence.
    Only a word tagged as an entity that the out-of-fold model reads as an entity of another type counts: an
    entity against ``O`` is what failures are made of (a missed name the small model never saw looks like
    ``O`` to it), a type swap of a name the rest of the data tags consistently is what a wrong correction is.
    """
    from cleanlab.token_classification.filter import find_label_issues
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold

    if len(sentences) < 10:
        return {}
    index = {t: k for k, t in enumerate(tag_set)}
    feats = [[_word_features(ws, i) for i in range(len(ws))] for ws in sentences]
    probs: list[np.ndarray] = [np.zeros((len(ws), len(tag_set))) for ws in sentences]
    for train, held in KFold(min(5, len(sentences)), shuffle=True, random_state=seed).split(sentences):
        vec = DictVectorizer()
        x = vec.fit_transform([f for i in train for f in feats[i]])
        y = [index[t] for i in train for t in tags[i]]
        if len(set(y)) < 2:
            continue
        model = LogisticRegression(max_iter=1000, C=1.0).fit(x, y)
        for i in held:
            probs[i][:, model.classes_] = model.predict_proba(vec.transform(feats[i]))
    given = [[index[t] for t in ts] for ts in tags]
    issues: dict[int, list[int]] = defaultdict(list)
    for i, j in find_label_issues(given, probs, n_jobs=1):  # no fork: see diagnosis._oof_label_issues
        label, read = tags[i][j], tag_set[int(probs[i][j].argmax())]
        if label != "O" and read != "O" and read[2:] != label[2:]:
            issues[i].append(j)
    out: dict[int, str] = {}
    for i, words in issues.items():
        entity_words = sum(t != "O" for t in tags[i])
        if len(words) * 2 >= entity_words:  # most of its entity words: one odd name is a model's doubt, a whole swap is a wrong tagging
            out[i] = ("confident learning (cleanlab, out-of-fold word-feature model) ranks "
                      + ", ".join(f"{sentences[i][j]!r} tagged {tags[i][j]} (read as {tag_set[int(probs[i][j].argmax())]}, "
                                  f"p={probs[i][j].max():.2f})" for j in words[:4])
                      + f" as likely label errors: {len(words)} of the sentence's {entity_words} entity words")
    return out


def triage(failures: list[dict[str, Any]], passing: list[dict[str, Any]], entity_types: list[str],
           reference: list[tuple[str, str]] | None = None, seed: int = 0, confident_learning: bool = True) -> Triage:
    """Fixable vs. external failures ({id, text, prediction, corrected}) and screened passing traces.

    External: inputs the detectors flag (empty, gibberish, injection), corrections that are not a tag
    sequence of the task aligned word for word with the input (the judge answered something else), and
    corrections in which confident learning finds an entity of the wrong type (:func:`type_confusions`), with
    ``reference`` (the parent's tagged sentences) and the passing traces as the data it learns from.
    """
    out = Triage()
    candidates = []
    for f in failures:
        flags = input_flags(f["text"], digits_are_content=True)
        problem = alignment_problem(f["text"].split(" "), (f.get("corrected") or "").split(" "), entity_types)
        if flags:
            out.external.append({**f, "reason": "adversarial-or-malformed-input", "evidence": f"input detectors: {flags}"})
        elif problem:
            out.external.append({**f, "reason": "off-task-correction", "evidence": f"the correction is not a tagging of the input: {problem}"})
        else:
            candidates.append(f)
    for p in passing:
        flags = input_flags(p["text"], digits_are_content=True)
        if flags:
            out.screened.append({**p, "reason": "adversarial-or-malformed-input", "evidence": f"input detectors: {flags}"})
        elif alignment_problem(p["text"].split(" "), p["prediction"].split(" "), entity_types) is None:
            out.kept_passing.append(p)
    suspects: dict[int, str] = {}
    if confident_learning and candidates:
        anchors = [(t, y) for t, y in reference or [] if alignment_problem(t.split(" "), y.split(" "), entity_types) is None]
        anchors += [(p["text"], p["prediction"]) for p in out.kept_passing]
        sentences = [t.split(" ") for t, _ in anchors] + [f["text"].split(" ") for f in candidates]
        tags = [y.split(" ") for _, y in anchors] + [f["corrected"].split(" ") for f in candidates]
        tag_set = ["O"] + [f"{b}-{t}" for t in entity_types for b in "BI"]
        found = type_confusions(sentences, tags, tag_set, seed)
        suspects = {i - len(anchors): why for i, why in found.items() if i >= len(anchors)}
    for i, f in enumerate(candidates):
        if i in suspects:
            out.external.append({**f, "reason": "suspected-label-error", "evidence": suspects[i]})
        else:
            out.fixable.append({**f, "errors": span_errors(f["prediction"], f["corrected"])})
    return out


def taxonomy(result: Triage, top_examples: int = 3) -> list[dict[str, Any]]:
    """Clusters of failures by span error (a sentence joins the cluster of each of its errors), then external reasons."""
    clusters: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for f in result.fixable:
        for error in dict.fromkeys(f["errors"]) or ["tag sequence differs"]:
            clusters[("fixable", error)].append(f)
    for f in result.external:
        clusters[("external", f["reason"])].append(f)
    totals = Counter(e.split(" ")[0] for f in result.fixable for e in f["errors"])
    out = []
    for (fixability, name), members in sorted(clusters.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        fixable = fixability == "fixable"
        out.append({
            "cluster": name, "fixability": fixability, "size": len(members),
            "direction": ("over-prediction" if name.startswith("spurious") else "under-prediction" if name.startswith("missed")
                          else "confusion") if fixable else None,
            "lengths": dict(Counter(length_bucket(m["text"]) for m in members)),
            "evidence": (f"{len(members)} failing sentences with {name!r}; over all fixable failures "
                         f"{totals['spurious']} spurious vs. {totals['missed']} missed entities" if fixable else members[0]["evidence"]),
            "examples": [m["text"][:160] for m in members[:top_examples]],
        })
    return out


def build_curriculum(failures: list[Example], passing: list[Example], parent_train: list[Example], recipe: DataRecipe,
                     replay_share: float, remaining: list[dict[str, Any]] | None = None) -> tuple[list[Example], list[dict[str, Any]]]:
    """(training set, rule records): gold corrections, a hard negative per failure, surgical augmentation, replay.

    ``failures`` carry the corrected tags as label and meta["prediction"]; ``remaining`` are failures a previous
    attempt still gets wrong ({text, label, prediction}).
    """
    rng = random.Random(recipe.seed)
    records: list[dict[str, Any]] = []
    gold, seen = [], set()
    for ex in failures:
        if ex.id not in seen:
            seen.add(ex.id)
            gold.append(ex.with_role("gold"))
    records.append({"rule": "exact-duplicates", "description": "one gold correction per distinct sentence",
                    "before": len(failures), "after": len(gold), "details": {}})
    taken = {ex.id for ex in gold}
    verified = [ex for ex in passing + parent_train if ex.id not in taken]
    index = TextIndex([ex.text for ex in verified]) if verified else None
    verified_types = [tag_types(ex.label) for ex in verified]

    def nearest(text: str, prediction: str, truth: str, k: int) -> list[Example]:
        """The k nearest verified sentences that show the right behaviour for this failure's errors: free of
        the types it wrongly tagged (holding the types it missed when there are such sentences), else holding
        the types it missed or mis-bounded."""
        avoid, want = wrong_and_missed(span_errors(prediction, truth))
        pool = []
        if avoid:
            clean = [i for i, ts in enumerate(verified_types) if not ts & avoid]
            pool = [i for i in clean if verified_types[i] & want] or clean
        elif want:
            pool = [i for i, ts in enumerate(verified_types) if ts & want]
        pool = [i for i in pool if verified[i].id not in taken]
        if not pool or index is None:
            return []
        _, found = index.nearest(index.vectors([text]), pool, k=min(k, len(pool)))
        picks = []
        for i in found[0]:
            ex = verified[int(i)]
            if ex.id not in taken:
                taken.add(ex.id)
                picks.append(ex)
        return picks

    hard: list[Example] = []
    kinds: Counter = Counter()
    if recipe.hard_negative_share > 0:
        for ex in gold:
            for pick in nearest(ex.text, ex.meta.get("prediction", ""), ex.label, 1):
                kinds["entity-free" if not tag_types(pick.label) else "with entities"] += 1
                hard.append(pick.with_role("hard_negative", pair_of=ex.id))
    records.append({"rule": "hard-negatives", "description": "2-for-1: each corrected failure brings the nearest verified sentence "
                    "without the type it over-predicted (or with the type it missed)", "before": 0, "after": len(hard),
                    "details": {"pairs": len(hard), **dict(kinds)}})

    if remaining and recipe.augment_per_pattern:
        added = [pick.with_role("augment", for_failure=f["text"][:80]) for f in remaining
                 for pick in nearest(f["text"], f["prediction"], f["label"], recipe.augment_per_pattern)]
        hard += added
        records.append({"rule": "surgical-augmentation", "description": f"{recipe.augment_per_pattern} verified sentences next to each "
                        f"failure {recipe.augment_from} still got wrong", "before": len(remaining), "after": len(added), "details": {}})

    core = len(gold) + len(hard)
    must = [ex.with_role("replay") for ex in parent_train if ex.id not in taken]
    extra_source = [ex for ex in passing if ex.id not in taken]
    n_extra = min(len(extra_source), max(0, round(core * replay_share / max(1e-9, 1 - replay_share)) - len(must)))
    replay = must + [ex.with_role("replay") for ex in rng.sample(extra_source, n_extra)]
    records.append({"rule": "replay", "description": f"all of the parent's training data, then passing traces until replay is {replay_share:.0%} of the set",
                    "before": len(must) + len(extra_source), "after": len(replay),
                    "details": {"parent_train": len(must), "passing_traces": len(replay) - len(must), "passing_available": len(extra_source)}})
    training = gold + hard + replay
    rng.shuffle(training)
    records.append({"rule": "final-composition", "description": "roles of the curriculum and how many sentences hold no entity",
                    "before": len(training), "after": len(training),
                    "details": {"roles": dict(Counter(ex.role for ex in training)),
                                "entity_free": sum(1 for ex in training if not tag_types(ex.label))}})
    return training, records
