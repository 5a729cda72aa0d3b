"""Each curation rule does what the paper's quality controls say, and records what it changed."""

from __future__ import annotations

from collections import Counter

from pioneer.api.models import DataRecipe
from pioneer.data import curation
from pioneer.data.examples import Example

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()


def sentence(i: int, n_words: int, topic: str) -> str:
    return f"{topic} " + " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] + str((i + k) % 97) for k in range(n_words))


def recipe(**kw) -> DataRecipe:
    base = dict(max_examples=1000, hard_negative_share=0.0, max_label_ratio=3.0, length_matching=False,
                near_duplicate_similarity=0.92, seed=0)
    return DataRecipe(**{**base, **kw})


def test_exact_duplicates_are_kept_once_and_conflicting_labels_dropped():
    exs = [Example("Win a prize now", "spam"), Example("win  a PRIZE now", "spam"), Example("see you at 5", "ham"),
           Example("call me", "ham"), Example("call me", "spam")]
    kept, records = curation.remove_exact_duplicates(exs)
    assert [e.text for e in kept] == ["Win a prize now", "see you at 5"]
    by_rule = {r.rule: r for r in records}
    assert by_rule["exact-duplicates"].details["removed"] == 1
    assert by_rule["conflicting-labels"].after == 2
    assert by_rule["conflicting-labels"].details["removed"] == 1
    assert by_rule["conflicting-labels"].details["examples"][0]["labels"] == {"ham": 1, "spam": 1}


def test_near_duplicates_of_the_same_label_are_removed_but_not_across_labels():
    exs = [Example("Congratulations you won a free cruise, call 0800 now", "spam"),
           Example("Congratulations you won a free cruise, call 0800 now!!", "spam"),
           Example("Congratulations you won a free cruise, call 0800 now!!", "ham"),
           Example("are we still meeting for lunch tomorrow?", "ham")]
    kept, record = curation.remove_near_duplicates(exs, 0.9)
    assert record.details["removed"] == 1
    assert Counter(e.label for e in kept) == {"spam": 1, "ham": 2}


def test_no_label_exceeds_three_times_any_other():
    pool = [Example(sentence(i, 6, "ham"), "ham") for i in range(300)] + [Example(sentence(i, 6, "spam"), "spam") for i in range(40)]
    training, records = curation.build_training_set(pool, recipe())
    counts = Counter(e.label for e in training)
    assert counts["ham"] <= 3 * counts["spam"]
    assert counts == {"ham": 120, "spam": 40}
    balance = next(r for r in records if r["rule"] == "label-balance")
    assert balance["details"]["pool"] == {"ham": 300, "spam": 40}


def test_hard_negatives_follow_the_two_for_one_rule():
    pool = []
    for i in range(60):
        pool.append(Example(sentence(i, 5, "lights on in the kitchen"), "on"))
        pool.append(Example(sentence(i, 5, "lights off in the kitchen"), "off"))
    training, records = curation.build_training_set(pool, recipe(hard_negative_share=0.3, max_examples=60))
    hard = [e for e in training if e.role == "hard_negative"]
    record = next(r for r in records if r["rule"] == "hard-negatives")
    assert record["details"]["pairs"] == len(hard) > 0
    assert len(hard) <= int(60 * 0.3)
    # every hard negative entered with a gold counterpart of the other label
    assert sum(1 for e in training if e.role == "gold") >= len(hard)


def test_length_matching_follows_the_real_length_distribution():
    short = [Example(sentence(i, 3, "s"), "a") for i in range(200)]
    long = [Example(sentence(i, 30, "l"), "a") for i in range(200)]
    other = [Example(sentence(i, 3, "o"), "b") for i in range(40)] + [Example(sentence(i, 30, "p"), "b") for i in range(40)]
    pool = short + long + other
    reference = [4] * 80 + [31] * 20  # real inputs: mostly short
    matched, rec_m = curation.build_training_set(pool, recipe(length_matching=True, max_label_ratio=1.0), reference_lengths=reference)
    random_, rec_r = curation.build_training_set(pool, recipe(length_matching=False, max_label_ratio=1.0), reference_lengths=reference)
    def ks(recs):
        return next(r for r in recs if r["rule"] == "length-matching")["details"]["ks_statistic"]

    assert ks(rec_m) < ks(rec_r)
    a_short = sum(1 for e in matched if e.label == "a" and len(e.text.split()) < 10)
    assert a_short / sum(1 for e in matched if e.label == "a") > 0.7


def test_surgical_augmentation_adds_examples_near_each_failure_pattern():
    pool = [Example(sentence(i, 5, "turn on the lamp"), "on") for i in range(30)] + \
           [Example(sentence(i, 5, "turn off the lamp"), "off") for i in range(30)] + \
           [Example(sentence(i, 5, "what is the weather"), "weather") for i in range(30)]
    failures = {"run-i1-a": [{"text": "turn on the lamp please", "label": "on", "prediction": "off"},
                             {"text": "switch on the lamp", "label": "on", "prediction": "off"}]}
    base, _ = curation.build_training_set(pool, recipe(max_examples=30))
    augmented, records = curation.build_training_set(pool, recipe(max_examples=30, augment_from="run-i1-a", augment_per_pattern=3),
                                                     failures=failures)
    added = [e for e in augmented if e.role == "augment"]
    assert len(added) == 3 and all(e.label == "on" for e in added)
    assert len(augmented) == len(base) + 6  # 3 gold + 3 hard negatives (2-for-1)
    rec = next(r for r in records if r["rule"] == "surgical-augmentation")
    assert rec["details"]["patterns"] == ["on->off"]


def test_the_same_recipe_builds_the_same_training_set():
    pool = [Example(sentence(i, 6, "x"), "x") for i in range(100)] + [Example(sentence(i, 6, "y"), "y") for i in range(50)]
    first, _ = curation.build_training_set(pool, recipe(max_examples=60, hard_negative_share=0.3, length_matching=True))
    again, _ = curation.build_training_set(pool, recipe(max_examples=60, hard_negative_share=0.3, length_matching=True))
    assert [e.id for e in first] == [e.id for e in again]
