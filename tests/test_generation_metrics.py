"""Generation metrics: extractors read the answer a benchmark scores; unreadable output is a format failure."""

import pytest

from pioneer.trainer.generation_metrics import alias_match, answer_letter, exact_match, rouge


def test_final_number_and_format_failures():
    preds = ["She sold 48 + 24 = 72 clips.\n#### 72", "The answer is 1,000", "I am not sure"]
    refs = ["#### 72", "#### 1000", "#### 5"]
    m = exact_match(preds, refs, "finalNumber")
    assert m["exact_match"] == pytest.approx(2 / 3) and m["format_failure_rate"] == pytest.approx(1 / 3)


def test_answer_letter():
    assert answer_letter("The answer is (C).") == "C"
    assert answer_letter("B) dolphins are mammals") == "B"
    assert answer_letter("Answer: d") == "D"
    assert answer_letter("Which of the following is true? Tell me another question.") is None
    m = exact_match(["The answer is (B)", "Question: what is a mammal?"], ["B", "A"], "answerLetter")
    assert m == {"exact_match": 0.5, "format_failure_rate": 0.5}


def test_alias_match_normalises():
    assert alias_match("It was The Beatles!", ["Beatles", "The Fab Four"])
    assert not alias_match("the Rolling Stones", ["Beatles"])


def test_rouge_is_rouge_score():
    same = rouge(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert same == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    part = rouge(["the cat sat"], ["the cat sat on the mat"])
    assert 0 < part["rouge2"] < part["rouge1"] < 1
