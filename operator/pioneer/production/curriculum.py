"""The repair curriculum (paper §2.3, §2.6): gold corrections + hard negatives + replay, under the quality controls.

Training restarts from the base model, so the curriculum must carry what the parent knew: the replay
slice samples the parent's own training data.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from pioneer.api.models import DataRecipe
from pioneer.data import curation
from pioneer.data.examples import Example
from pioneer.data.similarity import TextIndex
from pioneer.layout import FAILURES_KEY, PARENT_TRAIN_KEY, PASSING_KEY
from pioneer.store import ArtifactStore, read_jsonl


def build(failures: list[Example], passing: list[Example], parent_train: list[Example], recipe: DataRecipe,
          replay_share: float, remaining: list[dict[str, Any]] | None = None) -> tuple[list[Example], list[dict[str, Any]]]:
    """(training set, rule records). ``failures`` carry the corrected label and meta["prediction"].

    ``remaining``: failures a previous attempt still gets wrong ({text, label, prediction}); surgical
    augmentation adds ``recipe.augment_per_pattern`` nearby verified examples of the right label for each.
    """
    rng = random.Random(recipe.seed)
    records: list[dict[str, Any]] = []
    gold, gold_records = curation.remove_exact_duplicates([ex.with_role("gold") for ex in failures])
    records += [r.to_dict() for r in gold_records]
    taken = {ex.id for ex in gold}

    # 2-for-1: each failure brings the nearest example of the label the model wrongly chose
    candidates = [ex for ex in passing + parent_train if ex.id not in taken]
    hard: list[Example] = []
    if candidates and recipe.hard_negative_share > 0:
        index = TextIndex([ex.text for ex in candidates] + [ex.text for ex in gold])
        by_label: dict[str, list[int]] = {}
        for i, ex in enumerate(candidates):
            by_label.setdefault(ex.label, []).append(i)
        for j, ex in enumerate(gold):
            wrong = ex.meta.get("prediction")
            pool = [i for i in by_label.get(wrong, []) if candidates[i].id not in taken]
            if not pool:
                continue
            _, nearest = index.nearest(index.matrix[len(candidates) + j], pool, k=1)
            pick = candidates[int(nearest[0][0])]
            taken.add(pick.id)
            hard.append(pick.with_role("hard_negative", pair_of=ex.id))
    records.append({"rule": "hard-negatives", "description": "2-for-1: each corrected failure brings the nearest example of the label it was confused with",
                    "before": 0, "after": len(hard), "details": {"pairs": len(hard)}})

    if remaining and recipe.augment_per_pattern:
        extra = [ex for ex in passing + parent_train if ex.id not in taken]
        added = []
        if extra:
            index = TextIndex([ex.text for ex in extra])
            for f in remaining:
                pool = [i for i, ex in enumerate(extra) if ex.label == f["label"] and ex.id not in taken]
                if not pool:
                    continue
                _, nearest = index.nearest(index.vectors([f["text"]]), pool, k=min(recipe.augment_per_pattern, len(pool)))
                for i in nearest[0]:
                    ex = extra[int(i)]
                    if ex.id not in taken:
                        taken.add(ex.id)
                        added.append(ex.with_role("augment", for_failure=f["text"][:80]))
        hard += added
        records.append({"rule": "surgical-augmentation", "description": f"{recipe.augment_per_pattern} verified examples of the right label next to each failure {recipe.augment_from} still got wrong",
                        "before": len(remaining), "after": len(added), "details": {}})

    # replay: what the parent knew (its training data) and what it verifiably got right (passing traces outside
    # the regression set). Training restarts from the base model, so all of the parent's training data is
    # replayed; passing traces fill the set up to ``replay_share``, smallest labels first, so that replay evens
    # out the label counts instead of adding to the largest ones.
    core = len(gold) + len(hard)
    must = [ex.with_role("replay", source="parent") for ex in parent_train if ex.id not in taken]
    known = taken | {ex.id for ex in must}  # a passing trace the parent already trained on is replayed once
    extra_source = [ex for ex in passing if ex.id not in known]
    n_extra = min(len(extra_source), max(0, round(core * replay_share / max(1e-9, 1 - replay_share)) - len(must)))
    queues: dict[str, list[Example]] = {}
    for ex in rng.sample(extra_source, len(extra_source)):
        queues.setdefault(ex.label, []).append(ex)
    counts = Counter(ex.label for ex in gold + hard + must)
    for lab in queues:
        counts.setdefault(lab, 0)
    replay: list[Example] = list(must)
    while len(replay) - len(must) < n_extra and any(queues.values()):
        lab = min((lab for lab in queues if queues[lab]), key=lambda lab: (counts[lab], lab))
        replay.append(queues[lab].pop().with_role("replay", source="passing"))
        counts[lab] += 1
    source = must + extra_source
    records.append({"rule": "replay", "description": f"all of the parent's training data, then passing traces (smallest labels first) until replay is {replay_share:.0%} of the set",
                    "before": len(source), "after": len(replay), "details": {"parent_train": len(must), "passing_traces": len(replay) - len(must), "passing_available": len(extra_source)}})
    training = gold + hard + replay
    final = Counter(ex.label for ex in training)
    records.append({"rule": "label-balance", "description": f"replay evens out labels; gold corrections and hard negatives are never dropped (target ratio {recipe.max_label_ratio:g}x)",
                    "before": len(training), "after": len(training),
                    "details": {"max_label_ratio": round(max(final.values()) / max(1, min(final.values())), 2) if final else None}})
    rng.shuffle(training)
    records.append({"rule": "final-composition", "description": "roles and labels of the curriculum", "before": len(training),
                    "after": len(training), "details": {"roles": dict(Counter(ex.role for ex in training)),
                                                        "labels": len(set(ex.label for ex in training))}})
    return training, records


def sources(store: ArtifactStore) -> tuple[list[Example], list[Example], list[Example]]:
    """The curriculum's inputs that production preparation froze: fixable failures, passing traces, parent data."""
    def load(key: str) -> list[Example]:
        return [Example.from_row(r) for r in read_jsonl(store, key)] if store.exists(key) else []
    return load(FAILURES_KEY), load(PASSING_KEY), load(PARENT_TRAIN_KEY)
