"""AdaptFT-Bench perturbations (paper Table 12): what each type does to an input, determinism, poison flags."""

import random
import re
import time

import pytest

from pioneer.bench.perturbations import BY_NAME, NO_ANSWER, TABLE_12, flip_entity_types, perturb, perturb_tagged, poison_scale, rates_for, retag
from pioneer.production.diagnosis import input_flags

SAMPLE = "I'd like to book a flight to Paris tomorrow, please."
LABELS = ["book_flight", "book_hotel", "oos"]


def _words(text):
    return set(re.findall(r"\w+", text.lower()))


def _edit_distance(a, b):
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


# what each type does to SAMPLE: a check on (original, perturbed)
EFFECTS = {
    "typos": lambda o, p: 1 <= _edit_distance(o, p) <= 4 and len(_words(o) & _words(p)) >= len(_words(o)) - 2,
    "phonetic": lambda o, p: p != o and len(_words(o) - _words(p)) <= 2 and (_words(p) - _words(o)) <= {"fone", "flite", "tommorow", "pleez", "buk", "too", "tyme"},
    "syntactic": lambda o, p: p != o and _words(p) <= _words(o),
    "grammatical": lambda o, p: p != o and len(_words(o) ^ _words(p)) <= 4,
    "punctuation": lambda o, p: re.sub(r"[^\w\s']", "", p).strip() == re.sub(r"[^\w\s']", "", o).strip() and p != o,
    "casing": lambda o, p: p.lower() == o.lower() and p != o,
    "abbreviations": lambda o, p: p != o and ({"pls", "tmrw", "4", "u", "ur"} & _words(p)),
    "code_switching": lambda o, p: p != o and ({"vuelo", "mañana", "por", "favor"} & _words(p)),
    "preamble": lambda o, p: p.endswith(o) and len(p) > len(o),
    "instruction_following": lambda o, p: p.startswith(o) and len(p) > len(o),
    "truncation": lambda o, p: o.startswith(p) and 2 <= len(p.split()) < len(o.split()),
    "html_remnants": lambda o, p: o in p and re.search(r"<[a-z/]|&nbsp;", p),
    "missing_modality": lambda o, p: o in p and re.search(r"screenshot|image|attachment|photo", p),
    "intra_duplication": lambda o, p: len(p.split()) > len(o.split()) and _words(p) == _words(o),
    "very_long": lambda o, p: o in p and len(p) > 2 * len(o),
    "ocr_artifacts": lambda o, p: p != o and len(p) in (len(o), len(o) + 1) and re.search(r"[10]", p),
    "empty": lambda o, p: not re.search(r"\w", p),
    "utf8_anomalies": lambda o, p: p != o and re.search("[\ufeff\u200b\x00“”’]", p),
    "metadata_leakage": lambda o, p: o in p and re.search(r"clinc150|benchmark row|id=", p),
    "label_flip": lambda o, p: p == o,  # the text stays; the logged answer changes (see test_label_flip_changes_the_logged_answer)
    "decision_boundary": lambda o, p: p.startswith(o.rstrip(".")) and len(p) > len(o),
    "false_premise": lambda o, p: "book" not in p.lower() and re.search(r"\b(you|your)\b", p, re.I),
    "prompt_injection": lambda o, p: "injection" in input_flags(p) and "paris" not in p.lower(),
    "cross_benchmark": lambda o, p: not (_words(p) & {"flight", "paris"}) and len(p.split()) >= 5,
    "jailbreak": lambda o, p: "injection" in input_flags(p),
    "off_domain": lambda o, p: not (_words(p) & _words(o) - {"i", "a", "to"}),
    "meta_question": lambda o, p: p.endswith("?") and not (_words(p) & {"flight", "paris"}),
    "context_assumption": lambda o, p: p.endswith(o) and re.search(r"before|last time|earlier|discussed", p),
    "verbatim_recall": lambda o, p: re.search(r"training example|test set", p),
    "gibberish": lambda o, p: not (_words(p) & _words(o)) and len(p) >= 3,
    "retry_storm": lambda o, p: p == o,
    "near_duplicate": lambda o, p: p != o and len(_words(o) & _words(p)) / len(_words(o) | _words(p)) >= 0.8,
    "exact_duplicate": lambda o, p: p == o,
}


def test_table_12_has_all_33_types_with_the_papers_rates():
    assert len(TABLE_12) == 33 and set(EFFECTS) == set(BY_NAME)
    assert BY_NAME["typos"].rate == 0.10 and BY_NAME["exact_duplicate"].rate == 0.03 and BY_NAME["empty"].rate == 0.007
    poisonous = {p.name for p in TABLE_12 if p.poisonous}
    # the paper's poisonous noise: false premises, label flips, off-domain, injection, jailbreaks, gibberish, empty
    assert {"false_premise", "label_flip", "off_domain", "prompt_injection", "jailbreak", "gibberish", "empty"} <= poisonous
    assert {"typos", "casing", "truncation", "preamble", "code_switching"}.isdisjoint(poisonous)


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_each_perturbation_does_what_it_says_and_is_deterministic(name):
    p = BY_NAME[name]
    for seed in range(5):
        out = p.apply(SAMPLE, random.Random(seed))
        assert out == p.apply(SAMPLE, random.Random(seed)), "same seed, same output"
        assert EFFECTS[name](SAMPLE, out), f"{name} (seed {seed}): {out!r}"


def test_label_flip_changes_the_logged_answer_but_not_the_right_one():
    rates = {"label_flip": 1.0}
    [s] = perturb(SAMPLE, "book_flight", LABELS, random.Random(0), rates)
    assert s.text == SAMPLE and s.reference != "book_flight" and s.answer == "book_flight"
    assert s.poisoned and s.applied == ["label_flip"]


def test_poison_that_destroys_the_request_has_no_right_answer():
    [s] = perturb(SAMPLE, "book_flight", LABELS, random.Random(0), {"off_domain": 1.0, "typos": 1.0})
    assert s.answer is NO_ANSWER and s.reference == "book_flight" and s.poisoned
    assert s.applied == ["typos", "off_domain"] or set(s.applied) == {"typos", "off_domain"}


def test_fixable_noise_keeps_the_answer_and_types_co_occur():
    [s] = perturb(SAMPLE, "book_flight", LABELS, random.Random(3), {"casing": 1.0, "preamble": 1.0, "typos": 1.0})
    assert set(s.applied) == {"casing", "preamble", "typos"} and not s.poisoned
    assert s.answer == s.reference == "book_flight" and s.text != SAMPLE


def test_repetition_types_emit_extra_records():
    recs = perturb(SAMPLE, "book_flight", LABELS, random.Random(0), {"exact_duplicate": 1.0})
    assert len(recs) == 2 and recs[1].text == recs[0].text and recs[1].copy_of == 0
    storm = perturb(SAMPLE, "book_flight", LABELS, random.Random(0), {"retry_storm": 1.0})
    assert 3 <= len(storm) <= 8  # 3-8 rapid resubmissions in all


def test_poison_rate_is_hit_and_rates_are_configurable():
    for target in (0.15, 0.25, 0.40):
        rates = rates_for(target)
        rng = random.Random(1)
        n = 20000
        hit = sum(perturb(SAMPLE, "book_flight", LABELS, rng, rates)[0].poisoned for _ in range(n))
        assert abs(hit / n - target) < 0.015, (target, hit / n)
    assert poison_scale(0.15) < poison_scale(0.25) < poison_scale(0.40)
    assert rates_for(0.15, {"typos": 0.5})["typos"] == 0.5
    with pytest.raises(ValueError, match="unknown perturbation"):
        rates_for(0.15, {"tpyos": 0.5})


def test_perturbing_100k_inputs_takes_seconds():
    rng, rates = random.Random(0), rates_for(0.4)
    started = time.perf_counter()
    for _ in range(100_000):
        perturb(SAMPLE, "book_flight", LABELS, rng, rates)
    assert time.perf_counter() - started < 20


# ------------------------------------------------------------------------- tagged sentences (the conll2003 scenario)

SENTENCE = "EU rejects German call to boycott British lamb ."
TAGS = "B-ORG O B-MISC O O O B-MISC O O"
TYPES = ["LOC", "MISC", "ORG", "PER"]


def _entities(words, tags):
    """{(entity words, type)} of a tagged sentence."""
    out, span = set(), None
    for w, t in list(zip(words, tags)) + [("", "O")]:
        if t.startswith("I-") and span:
            span[0].append(w)
            continue
        if span:
            out.add((" ".join(span[0]), span[1]))
        span = ([w], t[2:]) if t.startswith("B-") else None
    return out


@pytest.mark.parametrize("name", [p.name for p in TABLE_12 if p.fixable])
def test_fixable_noise_on_a_tagged_sentence_keeps_each_entity_word_with_its_type(name):
    for seed in range(5):
        [s, *copies] = perturb_tagged(SENTENCE, TAGS, TYPES, random.Random(seed), {name: 1.0})
        assert [s, *copies] == perturb_tagged(SENTENCE, TAGS, TYPES, random.Random(seed), {name: 1.0}), "same seed, same output"
        words, answer = s.text.split(" "), s.answer.split(" ")
        assert len(words) == len(answer) and s.reference == s.answer and not s.poisoned
        # every entity left unchanged in the text is still tagged with its type; no entity appears from nowhere
        kept = {(e, t) for e, t in _entities(words, answer)}
        for entity, typ in _entities(SENTENCE.split(" "), TAGS.split(" ")):
            if re.search(rf"(?<!\S){re.escape(entity)}(?!\S)", s.text):
                assert (entity, typ) in kept, (name, seed, s.text, s.answer)
        assert {t for _, t in kept} <= {"ORG", "MISC"}, (name, s.text, s.answer)


def test_retag_follows_words_that_move_or_repeat_and_tags_added_words_outside():
    words, tags = SENTENCE.split(" "), TAGS.split(" ")
    assert retag(words, tags, "Hi there! EU rejects German call".split(" ")) == ["O", "O", "B-ORG", "O", "B-MISC", "O"]
    assert retag(words, tags, "EU rejects call German".split(" ")) == ["B-ORG", "O", "O", "B-MISC"]
    assert retag(words, tags, "EU EU rejects".split(" ")) == ["B-ORG", "B-ORG", "O"]
    assert retag(["New", "York", "rally"], ["B-LOC", "I-LOC", "O"], ["York", "rally"]) == ["B-LOC", "O"]  # cut span repaired to BIO


def test_a_label_flip_on_a_tagged_sentence_gives_every_entity_another_type():
    [s] = perturb_tagged(SENTENCE, TAGS, TYPES, random.Random(0), {"label_flip": 1.0})
    assert s.text == SENTENCE and s.answer == TAGS and s.poisoned and s.applied == ["label_flip"]
    before, after = _entities(SENTENCE.split(" "), TAGS.split(" ")), _entities(SENTENCE.split(" "), s.reference.split(" "))
    assert {e for e, _ in after} == {e for e, _ in before} and not before & after
    assert flip_entity_types("B-PER I-PER O", TYPES, random.Random(1)).split(" ")[1][2:] == flip_entity_types("B-PER I-PER O", TYPES, random.Random(1)).split(" ")[0][2:]
    # a sentence without entities has nothing to flip: the flip is not applied and the log is clean
    [clean] = perturb_tagged("It rained .", "O O O", TYPES, random.Random(0), {"label_flip": 1.0})
    assert clean.reference == clean.answer == "O O O" and not clean.poisoned and clean.applied == []


def test_a_destroyed_sentence_has_no_right_tagging_and_its_log_keeps_the_original_tags():
    [s] = perturb_tagged(SENTENCE, TAGS, TYPES, random.Random(0), {"prompt_injection": 1.0})
    assert s.answer is NO_ANSWER and s.reference == TAGS and s.poisoned
    assert len(s.text.split(" ")) != len(TAGS.split(" "))  # the judge's tags no longer fit the input
