"""Judges: decide pass/fail for a trace given a reference. Deterministic scorers here; an LLM judge via anthropic.

Every judge returns a :class:`Judgement` with the verdict, the score behind it, the reasoning and
metadata naming the judge, so a verdict can always be traced back to how it was reached.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*")
_TOKEN = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Judgement:
    verdict: str  # pass | fail
    score: float
    reasoning: str
    meta: dict[str, Any] = field(default_factory=dict)


def _norm(text: str | None) -> str:
    return " ".join((text or "").strip().lower().split())


def exact_match(prediction: str | None, reference: str, threshold: float = 1.0) -> Judgement:
    ok = _norm(prediction) == _norm(reference)
    return Judgement("pass" if ok else "fail", float(ok), f"prediction {prediction!r} {'equals' if ok else 'differs from'} reference {reference!r}",
                     {"judge": "exact-match"})


def token_f1(prediction: str | None, reference: str, threshold: float = 0.8) -> Judgement:
    pred, ref = _TOKEN.findall(_norm(prediction)), _TOKEN.findall(_norm(reference))
    common = sum((Counter(pred) & Counter(ref)).values())
    f1 = 0.0 if not common else 2 * common / (len(pred) + len(ref))
    return Judgement("pass" if f1 >= threshold else "fail", f1, f"token F1 {f1:.3f} vs threshold {threshold}",
                     {"judge": "token-f1", "threshold": threshold})


def final_number(text: str | None) -> float | None:
    """The answer number: after '####' when present (GSM8K convention), else the last number in the text."""
    text = text or ""
    tail = text.rsplit("####", 1)[1] if "####" in text else text
    numbers = _NUMBER.findall(tail)
    if not numbers:
        return None
    try:
        return float(numbers[-1 if "####" not in text else 0].replace(",", "").rstrip("."))
    except ValueError:
        return None


def numeric_answer(prediction: str | None, reference: str, threshold: float = 1.0) -> Judgement:
    got, want = final_number(prediction), final_number(reference)
    ok = got is not None and want is not None and abs(got - want) < 1e-6
    return Judgement("pass" if ok else "fail", float(ok), f"final number {got} vs reference {want}", {"judge": "numeric-answer"})


def rouge_l(prediction: str | None, reference: str, threshold: float = 0.5) -> Judgement:
    from rouge_score import rouge_scorer

    score = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(reference, prediction or "")["rougeL"].fmeasure
    return Judgement("pass" if score >= threshold else "fail", float(score), f"ROUGE-L F {score:.3f} vs threshold {threshold}",
                     {"judge": "rouge-l", "threshold": threshold})


JUDGES: dict[str, Callable[..., Judgement]] = {
    "exact-match": exact_match,
    "token-f1": token_f1,
    "numeric-answer": numeric_answer,
    "rouge-l": rouge_l,
}


def judge(name: str, prediction: str | None, reference: str, **kwargs: Any) -> Judgement:
    if name not in JUDGES:
        raise ValueError(f"unknown judge {name!r}; known: {sorted(JUDGES)}")
    return JUDGES[name](prediction, reference, **kwargs)
