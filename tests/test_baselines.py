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
