"""Capitalisation as an input feature for uncased encoders.

The bundled encoders lower-case their input, so "WIN a FREE phone" and "win a free phone" look the
same to them, and so do "Apple" and "apple". Capitalisation is the strongest single cue for entity names.
We pass it through the token-type embeddings, which BERT-style encoders have and single-segment tasks
leave unused: the table grows to one row per case class (new rows start as copies of row 0, so the
pretrained behaviour is unchanged at step 0) and ``config.casing_feature`` tells inference to fill
``token_type_ids`` the same way. The model stays a plain ``from_pretrained`` checkpoint.
"""

from __future__ import annotations

import torch

CASE_CLASSES = 4  # no capitals, Initial capital, ALL CAPS, other mixed case


def case_class(word: str) -> int:
    """Shape of a word's capitalisation."""
    letters = [c for c in word if c.isalpha()]
    if not any(c.isupper() for c in letters):
        return 0
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return 2
    if letters[0].isupper() and not any(c.isupper() for c in letters[1:]):
        return 1
    return 3


def lowercases(tokenizer) -> bool:
    """True when the tokenizer cannot tell "A" from "a"."""
    return tokenizer("A")["input_ids"] == tokenizer("a")["input_ids"]


def add_casing_feature(model, tokenizer) -> bool:
    """Give an uncased BERT-style encoder capitalisation through its token-type embeddings.

    Returns False (and changes nothing) for cased tokenizers and for models without token types.
    """
    if uses_casing(model):  # a checkpoint that already has it (a deployed parent): keep its learned rows
        return True
    embeddings = getattr(model.base_model, "embeddings", None)
    table = getattr(embeddings, "token_type_embeddings", None)
    if table is None or not lowercases(tokenizer):
        return False
    grown = torch.nn.Embedding(CASE_CLASSES, table.embedding_dim)
    with torch.no_grad():
        grown.weight[:] = table.weight[0]
    embeddings.token_type_embeddings = grown
    if hasattr(embeddings, "token_type_ids"):  # a registered all-zeros buffer; keep its shape
        embeddings.token_type_ids.zero_()
    model.config.type_vocab_size = CASE_CLASSES
    model.config.casing_feature = True
    return True


def uses_casing(model) -> bool:
    return bool(getattr(model.config, "casing_feature", False))
