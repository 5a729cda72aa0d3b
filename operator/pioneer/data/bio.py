"""BIO tagging conventions shared by the data readers and the NER trainer.

A sentence is a list of words with one tag per word: ``O`` outside any entity, ``B-TYPE`` at an
entity's first word, ``I-TYPE`` inside it.
"""

from __future__ import annotations

OUTSIDE = "O"


def tag_set(entity_types: list[str]) -> list[str]:
    """BIO tags of the entity types, ``O`` first."""
    return [OUTSIDE] + [f"{p}-{t}" for t in entity_types for p in ("B", "I")]


def is_bio(tag: str, entity_types: list[str] | None = None) -> bool:
    """``O``, or ``B-``/``I-`` followed by a type (one of ``entity_types`` when given)."""
    if tag == OUTSIDE:
        return True
    if tag[:2] not in ("B-", "I-") or len(tag) <= 2:
        return False
    return entity_types is None or tag[2:] in entity_types


def alignment_problem(words: list[str], tags: list[str], entity_types: list[str] | None = None) -> str | None:
    """Why a (words, tags) pair is not a valid tagged sentence, or None when it is."""
    if not words or words == [""]:
        return "no words"
    if len(words) != len(tags):
        return f"{len(words)} words but {len(tags)} tags (text and label must align word for word)"
    bad = sorted({t for t in tags if not is_bio(t, entity_types)})
    if bad:
        allowed = f"B-/I- of {entity_types}" if entity_types is not None else "B-TYPE, I-TYPE"
        return f"tag(s) {bad} are not BIO (O, {allowed})"
    return None
