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


def build(failures: list[Example], passing: list[Example], parent_train: list[Example], recipe: DataRecipe,
          replay_share: float) -> tuple[list[Example], list[dict[str, Any]]]:
    """(training set, rule records). ``failures`` carry the corrected label and meta["prediction"]."""
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

    # replay: what the parent knew (its training data) and what it verifiably got right (passing traces outside
    # the regression set), so that retraining from the base model forgets nothing
    source = [ex for ex in parent_train + passing if ex.id not in taken]
    core = len(gold) + len(hard)
    n_replay = min(len(source), round(core * replay_share / max(1e-9, 1 - replay_share)))
    by_label: dict[str, list[Example]] = {}
    for ex in source:
        by_label.setdefault(ex.label, []).append(ex)
    replay: list[Example] = []
    queues = {lab: rng.sample(exs, len(exs)) for lab, exs in sorted(by_label.items())}
    while len(replay) < n_replay and any(queues.values()):  # round-robin over labels: every label is replayed
        for lab in list(queues):
            if queues[lab] and len(replay) < n_replay:
                replay.append(queues[lab].pop().with_role("replay"))
    records.append({"rule": "replay", "description": f"{replay_share:.0%} of the set sampled across labels from the parent's training data and passing traces",
                    "before": len(source), "after": len(replay), "details": {"parent_train": len(parent_train), "passing_traces": len(passing)}})

    training = gold + hard + replay
    # label balance: replay may not push a label above max_label_ratio x the smallest gold/hard-negative label
    core_counts = Counter(ex.label for ex in gold + hard)
    if core_counts:
        cap = max(1, int(min(core_counts.values()) * recipe.max_label_ratio))
        kept, seen = list(gold + hard), Counter(core_counts)
        for ex in replay:
            if seen[ex.label] < cap:
                kept.append(ex)
                seen[ex.label] += 1
        records.append({"rule": "label-balance", "description": f"replay never lifts a label above {recipe.max_label_ratio:g}x the smallest corrected label",
                        "before": len(training), "after": len(kept), "details": {"cap": cap}})
        training = kept
    rng.shuffle(training)
    records.append({"rule": "final-composition", "description": "roles and labels of the curriculum", "before": len(training),
                    "after": len(training), "details": {"roles": dict(Counter(ex.role for ex in training)),
                                                        "labels": len(set(ex.label for ex in training))}})
    return training, records
