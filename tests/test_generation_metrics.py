"""Generation metrics: extractors read the answer a benchmark scores; unreadable output is a format failure."""

import pytest

from pioneer.trainer.generation_metrics import alias_match, answer_letter, code_block, exact_match, rouge


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


def test_pass_at_1_runs_the_program_against_the_reference_tests_in_the_sandbox():
    tests = "assert add(2, 3) == 5\nassert add(-1, 1) == 0"
    right = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nHope it helps."
    wrong = "def add(a, b):\n    return a - b"
    escapes = "import socket\ndef add(a, b):\n    socket.create_connection(('example.com', 80))\n    return a + b"
    not_python = "```python\ndef add(a, b) return a + b\n```"
    assert code_block(right) == "def add(a, b):\n    return a + b\n"
    assert code_block(not_python) is None
    m = exact_match([right, wrong, escapes, not_python], [tests] * 4, "code")
    # right passes; wrong fails its asserts; the socket is blocked (a failure, the run goes on);
    # a syntax error is a format failure
    assert m == {"exact_match": 0.25, "format_failure_rate": 0.25}


def test_pass_at_1_metric_needs_code_answers():
    from pioneer.api.models import Task

    assert Task(description="write functions", type="generation", metric="passAt1", answerFormat="code").metric == "passAt1"
    with pytest.raises(ValueError, match="passAt1 needs answerFormat code"):
        Task(description="write functions", type="generation", metric="passAt1")


def test_an_article_is_not_an_answer_letter():
    # outputs of the untrained SmolLM2 on ARC: an answer that starts with the article "A" picked no option
    assert answer_letter("A physical model is not the most helpful") is None
    assert answer_letter("A cheetah runs fast.\nThe answer is a mammal") is None
    assert answer_letter("C. Food is stored for future use") == "C"
    assert answer_letter("A. speed\n\nA cheetah") == "A"
    assert answer_letter("b") == "B"  # an uncased tokenizer writes the option in lower case
    assert answer_letter("I think B. No wait, the answer is D") == "D"
