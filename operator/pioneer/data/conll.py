"""CoNLL-format token files: one ``token ... tag`` line per word, a blank line between sentences."""

from __future__ import annotations

from pioneer.data.bio import is_bio
from pioneer.data.examples import DataError

DOCSTART = "-DOCSTART-"


def read_conll(name: str, raw: bytes) -> list[tuple[list[str], list[str]]]:
    """(words, BIO tags) per sentence; the tag is the last column. Document separators are skipped."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{name}: not UTF-8 text (byte {exc.start})") from None
    sentences, words, tags = [], [], []
    for n, line in enumerate(text.splitlines(), 1):
        cols = line.split()
        if not cols:
            if words:
                sentences.append((words, tags))
            words, tags = [], []
            continue
        if cols[0] == DOCSTART:
            continue
        if len(cols) < 2:
            raise DataError(f"{name}:{n}: expected 'token ... tag', got {line.strip()!r}")
        tag = cols[-1]
        if not is_bio(tag):
            raise DataError(f"{name}:{n}: tag {tag!r} is not BIO (O, B-TYPE, I-TYPE)")
        words.append(cols[0])
        tags.append(tag)
    if words:
        sentences.append((words, tags))
    if not sentences:
        raise DataError(f"{name}: no sentences")
    return sentences
