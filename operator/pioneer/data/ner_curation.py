"""Evaluation set and training-set rules for NER (paper §2.3, §2.5), on sentences with BIO tags.

An example's ``text`` is its words joined by spaces and its ``label`` the tags joined by spaces.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any

from pioneer.api.models import DataRecipe
from pioneer.data.curation import RuleRecord
from pioneer.data.evalset import capped_size
from pioneer.data.examples import Example
from pioneer.data.similarity import TextIndex


def spans(example: Example) -> list[tuple[str, int, int]]:
    """(type, start, end-exclusive) of each entity, BIO read leniently (an I- after O starts an entity)."""
    from seqeval.metrics.sequence_labeling import get_entities

    return [(t, s, e + 1) for t, s, e in get_entities(example.label.split(" "))]


def entity_values(example: Example) -> list[tuple[str, str]]:
    words = example.text.split(" ")
    return [(t, " ".join(words[s:e])) for t, s, e in spans(example)]


def looks_like_near_miss(example: Example) -> bool:
    """An entity-free sentence with capitalised words past the first: it looks as if it had entities."""
    words = example.text.split(" ")
    return any(w[:1].isupper() for w in words[1:])


def _confusable_values(pool: list[Example]) -> set[str]:
    """Surface forms tagged with more than one entity type somewhere in the pool (e.g. a city and a club)."""
    types: dict[str, set[str]] = defaultdict(set)
    for ex in pool:
        for t, v in entity_values(ex):
            types[v.lower()].add(t)
    return {v for v, ts in types.items() if len(ts) > 1}


def build_ner_eval_set(pool: list[Example], size: int, boundary_share: float, seed: int) -> tuple[list[Example], dict[str, Any]]:
    """Positives (sentences with entities, every type covered), negatives (entity-free) and boundary
    sentences (holding a surface form the pool tags with more than one type)."""
    size, notes = capped_size(size, len(pool), least=2)
    rng = random.Random(seed)
    confusable = _confusable_values(pool)
    with_entities = [i for i, ex in enumerate(pool) if spans(ex)]
    entity_free = [i for i, ex in enumerate(pool) if not spans(ex)]
    boundary = [i for i in with_entities if any(v.lower() in confusable for _, v in entity_values(pool[i]))]
    chosen: dict[int, str] = {}
    for i in rng.sample(boundary, min(len(boundary), int(size * boundary_share))):
        chosen[i] = "boundary"
    n_negative = round((size - len(chosen)) * len(entity_free) / max(1, len(pool)))
    for i in rng.sample(entity_free, min(len(entity_free), n_negative)):
        chosen[i] = "negative"
    # positives: round-robin over entity types (rarest first) so every type is evaluated
    by_type: dict[str, list[int]] = defaultdict(list)
    for i in with_entities:
        if i not in chosen:
            by_type[min(t for t, _, _ in spans(pool[i]))].append(i)
    for members in by_type.values():
        rng.shuffle(members)
    order = sorted(by_type, key=lambda t: len(by_type[t]))
    while len(chosen) < size and any(by_type.values()):
        for t in order:
            if by_type[t] and len(chosen) < size:
                i = by_type[t].pop()
                chosen.setdefault(i, "positive")
    eval_set = [pool[i].with_role(role) for i, role in sorted(chosen.items())]
    types = Counter(t for ex in eval_set for t, _, _ in spans(ex))
    missing = sorted({t for ex in pool for t, _, _ in spans(ex)} - set(types))
    if missing:
        notes.append(f"entity type(s) {missing} are too rare to be evaluated")
    record = {"size": len(eval_set), "slices": dict(Counter(ex.role for ex in eval_set)), "labels": dict(sorted(types.items())),
              "boundary_sentences": sum(ex.role == "boundary" for ex in eval_set), "confusable_surface_forms": len(confusable),
              "notes": notes}
    return eval_set, record


def _substitute(example: Example, span: tuple[str, int, int], value: str) -> Example:
    words, tags = example.text.split(" "), example.label.split(" ")
    t, s, e = span
    new_words = value.split(" ")
    new_tags = [f"B-{t}"] + [f"I-{t}"] * (len(new_words) - 1)
    return Example(" ".join(words[:s] + new_words + words[e:]), " ".join(tags[:s] + new_tags + tags[e:]), role=example.role,
                   meta={**example.meta, "diversified": example.meta.get("diversified", 0) + 1})


def diversify_entities(examples: list[Example], max_repeats: int, rng: random.Random) -> tuple[list[Example], RuleRecord]:
    """No entity value more than ``max_repeats`` times: later occurrences get a same-type substitute that is still under the cap."""
    inventory: dict[str, list[str]] = defaultdict(list)
    for ex in examples:
        for t, v in entity_values(ex):
            inventory[t].append(v)
    inventory = {t: sorted(set(vs)) for t, vs in inventory.items()}
    used: Counter = Counter()
    out, replaced, exhausted = [], Counter(), 0
    for ex in examples:
        for span in reversed(spans(ex)):  # right to left: earlier offsets stay valid
            t, s, e = span
            value = " ".join(ex.text.split(" ")[s:e])
            if used[(t, value)] < max_repeats:
                used[(t, value)] += 1
                continue
            free = [v for v in rng.sample(inventory[t], min(len(inventory[t]), 20)) if used[(t, v)] < max_repeats]
            if not free:
                exhausted += 1
                used[(t, value)] += 1
                continue
            ex = _substitute(ex, span, free[0])
            used[(t, free[0])] += 1
            replaced[t] += 1
        out.append(ex)
    over = sum(1 for c in used.values() if c > max_repeats)
    return out, RuleRecord("entity-diversification", f"no entity value more than {max_repeats} times; later occurrences get a same-type substitute",
                           len(examples), len(out), {"replaced": dict(sorted(replaced.items())), "values_still_over_cap": over,
                                                     "no_substitute_left": exhausted})


def build_ner_training_set(pool: list[Example], recipe: DataRecipe, failures: dict[str, list[dict[str, Any]]] | None = None
                           ) -> tuple[list[Example], list[dict[str, Any]]]:
    """The NER training set a recipe defines, and one record per rule."""
    rng = random.Random(recipe.seed)
    records: list[RuleRecord] = []
    with_entities = [i for i, ex in enumerate(pool) if spans(ex)]
    entity_free = [i for i, ex in enumerate(pool) if not spans(ex)]
    total = min(recipe.max_examples, len(pool))
    # hard negatives: entity-free sentences, the near misses (capitalised words, no entity) first
    n_hard = min(len(entity_free), int(total * recipe.hard_negative_share))
    near = [i for i in entity_free if looks_like_near_miss(pool[i])]
    plain = [i for i in entity_free if not looks_like_near_miss(pool[i])]
    rng.shuffle(near)
    rng.shuffle(plain)
    hard = (near + plain)[:n_hard]
    gold = rng.sample(with_entities, min(len(with_entities), total - len(hard)))
    if len(gold) + len(hard) < total:  # too few entity sentences: fill with more entity-free ones
        hard = (near + plain)[: total - len(gold)]
    chosen = {i: "gold" for i in gold} | {i: "hard_negative" for i in hard}
    records.append(RuleRecord("hard-negatives", "entity-free passages as hard negatives, near misses (capitalised words, no entity) first",
                              len(pool), len(chosen), {"hard_negatives": len(hard), "near_misses": sum(1 for i in hard if i in set(near)),
                                                       "target_share": recipe.hard_negative_share}))
    # surgical augmentation: pool sentences nearest to each failing evaluation sentence
    added = []
    for attempt in [recipe.augment_from] if recipe.augment_from else []:
        fails = (failures or {}).get(attempt, [])
        free = [i for i in range(len(pool)) if i not in chosen]
        if fails and free and recipe.augment_per_pattern:
            index = TextIndex([ex.text for ex in pool])
            sims, nbrs = index.nearest(index.vectors([f["text"] for f in fails]), free, k=min(len(free), recipe.augment_per_pattern))
            for f, srow, nrow in zip(fails, sims, nbrs):
                for sim, n in zip(srow, nrow):
                    if int(n) not in chosen:
                        chosen[int(n)] = "augment"
                        added.append({"failure": f["text"][:80], "added": pool[int(n)].text[:80], "similarity": round(float(sim), 3)})
        records.append(RuleRecord("surgical-augmentation", f"{recipe.augment_per_pattern} nearest pool sentences per failing evaluation sentence of {attempt}",
                                  0, len(added), {"failures": len(fails), "added": added[:30], "pool_left": len(free)}))
    training = [pool[i].with_role(role) for i, role in sorted(chosen.items())]
    rng.shuffle(training)
    if recipe.entity_max_repeats:
        training, rule = diversify_entities(training, recipe.entity_max_repeats, rng)
        records.append(rule)
    types = Counter(t for ex in training for t, _, _ in spans(ex))
    records.append(RuleRecord("final-composition", "entity types and roles of the training set", len(training), len(training),
                              {"labels": dict(sorted(types.items())), "roles": dict(Counter(ex.role for ex in training))}))
    return training, [r.to_dict() for r in records]
