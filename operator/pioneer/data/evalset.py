"""The held-out evaluation set: built before any training, frozen, content-hashed (paper §2.5, eq. 7).

E = positives U negatives U boundary pairs. Every evaluation recomputes the hash of the frozen
file and refuses to score against a set that changed (:class:`EvalSetTampered`).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from typing import Any

from pioneer.data.examples import DataError, Example
from pioneer.data.similarity import TextIndex, cross_label_pairs

MAX_EVAL_SHARE = 0.3  # never hold out more than this share of the pool
MAX_LABEL_HELD_OUT = 0.5  # ... nor more than half of any label's examples


class EvalSetTampered(RuntimeError):
    """The evaluation set's content no longer matches the hash recorded when it was frozen."""


def serialize(examples: list[Example]) -> bytes:
    """Canonical JSONL bytes: the hash is taken over exactly these bytes."""
    return "".join(json.dumps(ex.to_row(), ensure_ascii=False, sort_keys=True) + "\n" for ex in examples).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify(data: bytes, expected_sha256: str, where: str = "evaluation set") -> None:
    actual = sha256(data)
    if actual != expected_sha256:
        raise EvalSetTampered(
            f"{where} changed since it was frozen: sha256 {actual[:12]}... != recorded {expected_sha256[:12]}...; "
            "scores against it would not be comparable, so the evaluation is refused"
        )


def capped_size(size: int, pool_size: int, least: int = 1) -> tuple[int, list[str]]:
    """The evaluation size actually used (never above MAX_EVAL_SHARE of the pool) and a note when it was cut."""
    cap = int(pool_size * MAX_EVAL_SHARE)
    notes = [f"requested evaluation size {size} > {MAX_EVAL_SHARE:.0%} of the pool; using {cap}"] if size > cap else []
    size = min(size, cap)
    if size < least:
        raise DataError(f"too few examples ({pool_size}) to hold out an evaluation set of at least {least}")
    return size, notes


def _allocate(total: int, counts: dict[str, int], caps: dict[str, int]) -> dict[str, int]:
    """Split ``total`` over labels proportionally to ``counts``, every label at least a small floor, none above its cap."""
    labels = sorted(counts)
    floor = max(1, total // (4 * len(labels)))
    alloc = {lab: min(caps[lab], floor) for lab in labels}
    rest = total - sum(alloc.values())
    while rest > 0:
        room = {lab: caps[lab] - alloc[lab] for lab in labels if caps[lab] > alloc[lab]}
        if not room:
            break
        weight = sum(counts[lab] for lab in room)
        grant = {lab: max(1, int(rest * counts[lab] / weight)) for lab in room}
        for lab in sorted(room, key=lambda x: (-counts[x], x)):
            give = min(grant[lab], room[lab], rest)
            alloc[lab] += give
            rest -= give
            if rest == 0:
                break
    return alloc


def build_eval_set(
    pool: list[Example],
    size: int,
    boundary_share: float,
    negative_label: str | None,
    seed: int,
    index: TextIndex | None = None,
) -> tuple[list[Example], dict[str, Any]]:
    """Choose the evaluation set from ``pool``; returns (examples with slice roles, record of what was done)."""
    labels = [ex.label for ex in pool]
    counts = Counter(labels)
    if len(counts) < 2:
        raise DataError(f"need at least two labels to build an evaluation set, found {sorted(counts)}")
    size, notes = capped_size(size, len(pool))
    caps = {lab: int(c * MAX_LABEL_HELD_OUT) for lab, c in counts.items()}
    thin = sorted(lab for lab, cap in caps.items() if cap == 0)
    if thin:
        raise DataError(f"label(s) {thin} have fewer than 2 examples: one must be held out and one trained on")
    index = index or TextIndex([ex.text for ex in pool])
    rng = random.Random(seed)

    chosen: dict[int, str] = {}
    taken = Counter()
    n_boundary = int(size * boundary_share) // 2 * 2
    for _sim, a, b in cross_label_pairs(index, labels, list(range(len(pool)))):
        if len(chosen) + 2 > n_boundary:
            break
        if a in chosen or b in chosen or taken[labels[a]] >= caps[labels[a]] or taken[labels[b]] >= caps[labels[b]]:
            continue
        for p in (a, b):
            chosen[p] = "boundary"
            taken[labels[p]] += 1

    remaining = size - len(chosen)
    room = {lab: caps[lab] - taken[lab] for lab in counts}
    alloc = _allocate(remaining, {lab: counts[lab] for lab in counts}, room)
    by_label: dict[str, list[int]] = {}
    for p, lab in enumerate(labels):
        if p not in chosen:
            by_label.setdefault(lab, []).append(p)
    for lab in sorted(by_label):
        for p in rng.sample(by_label[lab], min(alloc.get(lab, 0), len(by_label[lab]))):
            chosen[p] = "negative" if lab == negative_label else "positive"

    eval_set = [pool[p].with_role(role) for p, role in sorted(chosen.items())]
    record = {
        "size": len(eval_set),
        "slices": dict(Counter(ex.role for ex in eval_set)),
        "labels": dict(sorted(Counter(ex.label for ex in eval_set).items())),
        "boundary_pairs": sum(1 for ex in eval_set if ex.role == "boundary") // 2,
        "notes": notes,
    }
    return eval_set, record


def build_random_eval_set(pool: list[Example], size: int, seed: int) -> tuple[list[Example], dict[str, Any]]:
    """A seeded random sample (generation: answers are free text, so there are no label strata)."""
    size, notes = capped_size(size, len(pool))
    picked = sorted(random.Random(seed).sample(range(len(pool)), size))
    eval_set = [pool[i].with_role("positive") for i in picked]
    return eval_set, {"size": len(eval_set), "slices": {"positive": len(eval_set)}, "labels": {}, "notes": notes}
