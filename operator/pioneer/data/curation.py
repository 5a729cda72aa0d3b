"""Data curation (paper §2.3): pool cleaning once per adaptation, then a training set per recipe.

Every rule returns what it changed, so the report can say why an example is in or out.
All functions are pure: same inputs and seed, same output.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import ks_2samp

from pioneer.api.models import DataRecipe
from pioneer.data.examples import Example
from pioneer.data.similarity import TextIndex, cross_label_pairs

_SPACE = re.compile(r"\s+")
N_LENGTH_BUCKETS = 5


@dataclass
class RuleRecord:
    rule: str
    description: str
    before: int
    after: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "description": self.description, "before": self.before, "after": self.after,
                "changed": self.before - self.after if self.before >= self.after else self.after - self.before,
                "details": self.details}


def normalise(text: str) -> str:
    return _SPACE.sub(" ", text.strip().lower())


# --------------------------------------------------------------------------- pool cleaning


def remove_exact_duplicates(examples: list[Example]) -> tuple[list[Example], list[RuleRecord]]:
    """Keep the first of identical (normalised) texts; drop texts that occur with conflicting labels."""
    groups: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        groups[normalise(ex.text)].append(ex)
    kept, conflicts, dupes = [], [], 0
    for group in groups.values():
        labels = {ex.label for ex in group}
        if len(labels) > 1:
            conflicts.append({"text": group[0].text[:120], "labels": dict(Counter(ex.label for ex in group))})
            continue
        kept.append(group[0])
        dupes += len(group) - 1
    records = [
        RuleRecord("exact-duplicates", "identical inputs (after case and whitespace folding) kept once",
                   len(examples), len(examples) - dupes, {"removed": dupes}),
        RuleRecord("conflicting-labels", "inputs seen with different labels dropped (label noise)",
                   len(examples) - dupes, len(kept), {"removed": len(conflicts), "examples": conflicts[:10]}),
    ]
    return kept, records


def remove_near_duplicates(examples: list[Example], similarity: float, index: TextIndex | None = None) -> tuple[list[Example], RuleRecord]:
    """Drop an example when an earlier one with the same label is at least ``similarity`` alike."""
    index = index or TextIndex([ex.text for ex in examples])
    by_label: dict[str, list[int]] = defaultdict(list)
    for p, ex in enumerate(examples):
        by_label[ex.label].append(p)
    dropped: set[int] = set()
    samples = []
    for positions in by_label.values():
        for p, nbrs in zip(positions, index.neighbours_within(positions, similarity)):
            if p in dropped:
                continue
            for q in nbrs:
                if q > p and q not in dropped:
                    dropped.add(q)
                    if len(samples) < 10:
                        samples.append({"kept": examples[p].text[:100], "dropped": examples[q].text[:100]})
    kept = [ex for p, ex in enumerate(examples) if p not in dropped]
    return kept, RuleRecord("near-duplicates", f"same-label inputs with char n-gram cosine >= {similarity} kept once",
                            len(examples), len(kept), {"removed": len(dropped), "examples": samples})


def remove_eval_leakage(pool: list[Example], eval_set: list[Example], similarity: float) -> tuple[list[Example], RuleRecord]:
    """Keep the evaluation set out of training: its examples and their near-duplicates leave the pool."""
    eval_ids = {ex.id for ex in eval_set}
    rest = [ex for ex in pool if ex.id not in eval_ids]
    index = TextIndex([ex.text for ex in rest] + [ex.text for ex in eval_set])
    sims, _ = index.nearest(index.matrix[: len(rest)], list(range(len(rest), len(rest) + len(eval_set))), k=1)
    leak = {i for i, s in enumerate(sims[:, 0]) if s >= similarity} if len(eval_set) else set()
    kept = [ex for i, ex in enumerate(rest) if i not in leak]
    return kept, RuleRecord("eval-leakage", f"pool inputs with cosine >= {similarity} to an evaluation example removed",
                            len(pool), len(kept), {"held_out": len(pool) - len(rest), "near_eval_removed": len(leak)})


# --------------------------------------------------------------------------- training set per recipe


def length_buckets(lengths: list[int], reference: list[int]) -> list[int]:
    edges = np.quantile(reference, np.linspace(0, 1, N_LENGTH_BUCKETS + 1)[1:-1]) if reference else []
    return [int(np.searchsorted(edges, n, side="right")) for n in lengths]


def sample_matching_lengths(candidates: list[Example], k: int, reference: list[int], rng: random.Random) -> list[Example]:
    """Sample k examples whose word-length distribution follows ``reference`` (stratified by length quantile)."""
    if k >= len(candidates):
        return list(candidates)
    buckets = length_buckets([len(ex.text.split()) for ex in candidates], reference)
    ref_buckets = Counter(length_buckets(reference, reference))
    by_bucket: dict[int, list[Example]] = defaultdict(list)
    for ex, b in zip(candidates, buckets):
        by_bucket[b].append(ex)
    total_ref = sum(ref_buckets.values())
    chosen: list[Example] = []
    for b in sorted(by_bucket):
        want = round(k * ref_buckets.get(b, 0) / total_ref)
        chosen += rng.sample(by_bucket[b], min(want, len(by_bucket[b])))
    chosen_ids = {ex.id for ex in chosen}
    leftovers = [ex for ex in candidates if ex.id not in chosen_ids]
    if len(chosen) < k:
        chosen += rng.sample(leftovers, k - len(chosen))
    return chosen[:k]


def _balance_caps(counts: Counter, ratio: float) -> dict[str, int]:
    smallest = min(counts.values())
    return {lab: min(c, int(smallest * ratio)) for lab, c in counts.items()}


def build_training_set(
    pool: list[Example],
    recipe: DataRecipe,
    failures: dict[str, list[dict[str, Any]]] | None = None,
    reference_lengths: list[int] | None = None,
) -> tuple[list[Example], list[dict[str, Any]]]:
    """The training set a recipe defines, and one record per rule.

    ``failures`` maps an attempt name (``recipe.augment_from``) to its wrong evaluation predictions
    ({"text", "label", "prediction"}); they only steer which *pool* examples are added.
    """
    rng = random.Random(recipe.seed)
    records: list[RuleRecord] = []
    reference = reference_lengths or [len(ex.text.split()) for ex in pool]
    index = TextIndex([ex.text for ex in pool])
    labels = [ex.label for ex in pool]
    counts = Counter(labels)

    # 1. label balance: no label above max_label_ratio x the smallest one
    caps = _balance_caps(counts, recipe.max_label_ratio)
    # 2. size: scale every cap down when the recipe asks for fewer examples
    total_cap = sum(caps.values())
    if total_cap > recipe.max_examples:
        scale = recipe.max_examples / total_cap
        caps = {lab: max(1, int(c * scale)) for lab, c in caps.items()}
    records.append(RuleRecord("label-balance", f"no label above {recipe.max_label_ratio:g}x any other; at most {recipe.max_examples} examples",
                              len(pool), sum(caps.values()), {"pool": dict(sorted(counts.items())), "target": dict(sorted(caps.items()))}))

    # 3. hard negatives by the 2-for-1 rule: the most confusable cross-label pairs enter together
    chosen: dict[int, str] = {}
    per_label = Counter()
    hard_budget = int(sum(caps.values()) * recipe.hard_negative_share)
    pairs_used = 0
    if hard_budget:
        for _sim, gold, hard in cross_label_pairs(index, labels, list(range(len(pool)))):
            if sum(1 for r in chosen.values() if r == "hard_negative") >= hard_budget:
                break
            if gold in chosen or hard in chosen:
                continue
            if per_label[labels[gold]] >= caps[labels[gold]] or per_label[labels[hard]] >= caps[labels[hard]]:
                continue
            chosen[gold], chosen[hard] = "gold", "hard_negative"
            per_label[labels[gold]] += 1
            per_label[labels[hard]] += 1
            pairs_used += 1
    n_hard = sum(1 for r in chosen.values() if r == "hard_negative")
    records.append(RuleRecord("hard-negatives", "2-for-1 rule: each confusable case enters with its nearest other-label counterpart",
                              0, n_hard, {"pairs": pairs_used, "target_share": recipe.hard_negative_share}))

    # 4. gold fill, with lengths matched to the real input distribution
    for lab in sorted(counts):
        want = caps[lab] - per_label[lab]
        candidates = [pool[p] for p in range(len(pool)) if labels[p] == lab and p not in chosen]
        picked = (sample_matching_lengths(candidates, want, reference, rng) if recipe.length_matching
                  else rng.sample(candidates, min(want, len(candidates))))
        pos_of = {ex.id: p for p, ex in enumerate(pool)}
        for ex in picked:
            chosen[pos_of[ex.id]] = "gold"

    # 5. surgical augmentation: 2-3 pool examples per remaining failure pattern, each with a hard negative
    added = []
    for attempt in ([recipe.augment_from] if recipe.augment_from else []):
        patterns: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for f in (failures or {}).get(attempt, []):
            patterns[(f["label"], f["prediction"])].append(f)
        for (true, pred), fails in sorted(patterns.items()):
            want = recipe.augment_per_pattern
            queries = index.vectors([f["text"] for f in fails])
            for role, lab in (("augment", true), ("hard_negative", pred)):
                free = [p for p in range(len(pool)) if labels[p] == lab and p not in chosen]
                if not free:
                    continue
                sims, nbrs = index.nearest(queries, free, k=min(len(free), want))
                ranked = sorted(((s, int(n)) for srow, nrow in zip(sims, nbrs) for s, n in zip(srow, nrow)), reverse=True)
                got = 0
                for s, n in ranked:
                    if got >= want:
                        break
                    if n not in chosen:
                        chosen[n] = role
                        got += 1
                        added.append({"pattern": f"{true}->{pred}", "role": role, "text": pool[n].text[:100], "similarity": round(s, 3)})
    if recipe.augment_from:
        records.append(RuleRecord("surgical-augmentation", f"{recipe.augment_per_pattern} pool examples per failure pattern of {recipe.augment_from}, each with a hard negative",
                                  0, len(added), {"patterns": sorted({a['pattern'] for a in added}), "added": added[:30]}))

    training = [pool[p].with_role(role) for p, role in sorted(chosen.items())]
    rng.shuffle(training)
    final_counts = Counter(ex.label for ex in training)
    lengths = [len(ex.text.split()) for ex in training]
    ks = ks_2samp(lengths, reference) if lengths and reference else None
    records.append(RuleRecord("length-matching", "training input lengths follow the real input distribution (two-sample KS test)",
                              len(training), len(training),
                              {"ks_statistic": round(float(ks.statistic), 4) if ks else None,
                               "p_value": round(float(ks.pvalue), 4) if ks else None,
                               "train_median_words": float(np.median(lengths)) if lengths else None,
                               "real_median_words": float(np.median(reference)) if reference else None,
                               "enabled": recipe.length_matching}))
    ratio = max(final_counts.values()) / max(1, min(final_counts.values())) if final_counts else 0
    records.append(RuleRecord("final-composition", "labels and roles of the training set", len(training), len(training),
                              {"labels": dict(sorted(final_counts.items())), "roles": dict(Counter(ex.role for ex in training)),
                               "max_label_ratio": round(ratio, 2)}))
    return training, [r.to_dict() for r in records]


def build_sampled_training_set(pool: list[Example], recipe: DataRecipe, failures: dict[str, list[dict[str, Any]]] | None = None
                               ) -> tuple[list[Example], list[dict[str, Any]]]:
    """Generation: a seeded sample of up to ``max_examples`` (answers are free text: no label balance or pairs),
    with lengths matched to the real inputs, plus the pool examples nearest to each failure of ``augment_from``."""
    rng = random.Random(recipe.seed)
    reference = [len(ex.text.split()) for ex in pool]
    want = min(recipe.max_examples, len(pool))
    picked = sample_matching_lengths(pool, want, reference, rng) if recipe.length_matching else rng.sample(pool, want)
    chosen = {ex.id: ex.with_role("gold") for ex in picked}
    records = [RuleRecord("sample", f"seeded sample of at most {recipe.max_examples} examples"
                          + (", lengths matched to the real inputs" if recipe.length_matching else ""), len(pool), len(chosen))]
    fails = (failures or {}).get(recipe.augment_from or "", [])
    free = [ex for ex in pool if ex.id not in chosen]
    added = 0
    if fails and free and recipe.augment_per_pattern:
        index = TextIndex([ex.text for ex in free])
        _, nbrs = index.nearest(index.vectors([f["text"] for f in fails]), list(range(len(free))), k=min(len(free), recipe.augment_per_pattern))
        for row in nbrs:
            for n in row:
                if free[int(n)].id not in chosen:
                    chosen[free[int(n)].id] = free[int(n)].with_role("augment")
                    added += 1
        records.append(RuleRecord("surgical-augmentation", f"{recipe.augment_per_pattern} nearest pool examples per failure of {recipe.augment_from}",
                                  0, added, {"failures": len(fails)}))
    training = list(chosen.values())
    rng.shuffle(training)
    return training, [r.to_dict() for r in records]
