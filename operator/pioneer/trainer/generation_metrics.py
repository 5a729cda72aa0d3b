"""Metrics for generation tasks: exact match through task extractors, ROUGE (rouge-score), pass@1 (sandbox).

Extractors turn free text into the answer a benchmark scores: the final ``####`` number (GSM8K), the
answer letter (ARC and other multiple choice), a normalised alias match (TriviaQA), a program that must
pass the reference's tests in the sandbox (pass@1, HumanEval/MBPP style). An output the
extractor cannot read is a *format failure*, counted separately: base models often fail on format
before they fail on content (the paper's ARC base model scored 5.3% for that reason).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence

from pioneer.traces.judges import final_number

# "the answer is C", "Answer: (b)": a cue, then the letter as a word of its own
_CUE = re.compile(r"answer\s*(?:is|:)?\s*\(?([a-e])(?![\w'])", re.IGNORECASE)
# a line that starts with the option: "C", "C.", "(C)", "B) dolphins", "D: ..." - not the article in "A cheetah runs"
_LEAD = re.compile(r"^[ \t]*\(?([A-E])(?:[.):]|[ \t]*$)", re.MULTILINE | re.IGNORECASE)


def answer_letter(text: str | None) -> str | None:
    """The chosen option letter: 'The answer is (C)', 'C)', 'Answer: c'; None when no letter can be read.

    The last letter the text commits to wins. A lower-case letter after a cue counts only when nothing
    but punctuation follows it, so "the answer is a mammal" is not option A.
    """
    text = (text or "").strip()
    found = [(m.start(), m.group(1)) for m in _LEAD.finditer(text)]
    for m in _CUE.finditer(text):
        letter, rest = m.group(1), text[m.end():]
        if letter.isupper() or re.match(r"[\s.):]*(?:$|\n)", rest):
            found.append((m.start(1), letter))
    return max(found)[1].upper() if found else None


def normalize_answer(text: str | None) -> str:
    """TriviaQA/SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = (text or "").lower()
    text = "".join(c for c in text if c not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def alias_match(prediction: str | None, aliases: Sequence[str]) -> bool:
    """True when the normalised prediction equals, or contains as whole words, any normalised alias."""
    pred = normalize_answer(prediction)
    return any(a and (pred == a or re.search(rf"\b{re.escape(a)}\b", pred)) for a in map(normalize_answer, aliases))


_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def code_block(text: str | None) -> str | None:
    """The program in an output: its first fenced code block, else the whole output; None unless it is
    valid Python (a syntax error is a format failure, not a wrong answer)."""
    text = text or ""
    fenced = _FENCE.search(text)
    code = fenced.group(1) if fenced else text
    if not code.strip():
        return None
    try:
        compile(code, "<output>", "exec")
    except (SyntaxError, ValueError):
        return None
    return code


def _text(text: str | None) -> str | None:
    normal = normalize_answer(text)
    return normal or None


EXTRACTORS: dict[str, Callable[[str | None], object]] = {
    "finalNumber": final_number,
    "answerLetter": answer_letter,
    "alias": _text,
    "text": _text,
    "code": code_block,
}


def answer_correct(prediction: str | None, reference: str, answer_format: str) -> tuple[bool, bool]:
    """(correct, readable) of one output.

    ``alias`` references hold the accepted answers separated by ``|``; ``code`` references hold the tests
    (e.g. asserts) that run after the output's program in the sandbox (``pioneer.trainer.sandbox``).
    """
    got = EXTRACTORS[answer_format](prediction)
    if got is None:
        return False, False
    if answer_format == "code":
        from pioneer.trainer.sandbox import run_program

        return run_program(f"{got}\n\n{reference}").passed, True
    if answer_format == "alias":
        return alias_match(prediction, reference.split("|")), True
    if answer_format == "finalNumber":
        return got == final_number(reference), True
    if answer_format == "answerLetter":
        return got == (reference or "").strip().upper(), True
    return got == normalize_answer(reference), True


def exact_match(predictions: Sequence[str], references: Sequence[str], answer_format: str) -> dict[str, float]:
    """Accuracy of the extracted answers and the share of outputs the extractor could not read."""
    judged = [answer_correct(p, r, answer_format) for p, r in zip(predictions, references)]
    n = max(1, len(judged))
    return {"exact_match": sum(c for c, _ in judged) / n, "format_failure_rate": sum(not r for _, r in judged) / n}


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measures (rouge-score, Porter stemming)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for p, r in zip(predictions, references):
        for key, s in scorer.score(r, p or "").items():
            totals[key] += s.fmeasure
    n = max(1, len(predictions))
    return {k: v / n for k, v in totals.items()}
