"""The scoreboard's classical baseline: what a user would fit instead of running the agent."""

import pytest

from pioneer.bench.baselines import tfidf_logreg

SPAM = ["win a free prize now", "claim your cash reward", "free entry to win cash", "urgent prize claim now call",
        "you won a free holiday", "cash prize waiting claim now"] * 4
HAM = ["see you at lunch tomorrow", "can you pick up milk", "running late for the meeting", "call me when you get home",
       "dinner at seven tonight", "thanks for the lift today"] * 4


def test_tfidf_logreg_learns_a_separable_task_and_reports_how_it_chose_its_regularisation():
    texts, labels = SPAM + HAM, ["spam"] * len(SPAM) + ["ham"] * len(HAM)
    predictions, facts = tfidf_logreg(texts, labels, ["free cash prize, claim now", "lunch at seven tomorrow?"], "f1", "spam")
    assert predictions == ["spam", "ham"]
    assert facts["n_train"] == len(texts) and facts["cv_metric"] == "f1" and facts["chosen_C"] > 0 and facts["features"] > 10


def test_tfidf_logreg_refuses_a_metric_it_would_score_for_the_wrong_class():
    texts, labels = SPAM + HAM, ["spam"] * len(SPAM) + ["ham"] * len(HAM)
    with pytest.raises(ValueError, match="sorts last"):
        tfidf_logreg(texts, labels, ["x"], "f1", "ham")
    with pytest.raises(ValueError, match="no scorer"):
        tfidf_logreg(texts, labels, ["x"], "rougeL")


def test_a_plain_token_classification_fine_tune_tags_words_by_their_first_sub_token(tmp_path):
    import random

    from pioneer.bench.baselines import plain_token_finetune
    from pioneer.trainer.ner_metrics import ner_metrics

    rng = random.Random(0)
    people, cities = ["Anna Berg", "Tom Hale", "Rita Moss", "Ivo Lind"], ["Paris", "Lagos", "Quito", "Oslo"]

    def sentence():
        first, last = rng.choice(people).split()
        return [first, last, "visited", rng.choice(cities), "today", "."], ["B-PER", "I-PER", "O", "B-LOC", "O", "O"]
    train = [sentence() for _ in range(160)]
    test = [(["Tom", "Hale", "visited", "Oslo", "today", "."], ["B-PER", "I-PER", "O", "B-LOC", "O", "O"]),
            (["Nobody", "visited", "Quito", "."], ["O", "O", "B-LOC", "O"])]
    predictions, facts = plain_token_finetune("minilm", train, [w for w, _ in test], tmp_path)
    assert [len(p) for p in predictions] == [6, 4]  # one tag per word, whatever the sub-tokens
    assert ner_metrics([t for _, t in test], predictions)["score"] == 1.0
    # every TrainingArguments value at its default: 3 epochs of batch 8 over 160 sentences
    assert (facts["epochs"], facts["batch_size"], facts["steps"], facts["n_train"]) == (3.0, 8, 60, 160)
