"""Sentence embeddings for diagnosis: mean-pooled hidden states of an encoder (the task's base model).

The offline default base model, all-MiniLM-L6-v2, is a sentence-embedding model, so its mean-pooled
output is a good semantic space; any encoder works. ``tfidf_embedder`` is the dependency-free stand-in
(character n-grams) used when no encoder is at hand.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Embedder = Callable[[list[str]], np.ndarray]


def encoder_embedder(model_ref: str, max_length: int = 64, batch_size: int = 64) -> Embedder:
    """texts -> L2-normalised mean-pooled embeddings from ``model_ref`` (alias, directory or hub id)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from pioneer.trainer.base_models import resolve

    path = resolve(model_ref)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()

    def embed(texts: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            batch = tokenizer([t or " " for t in texts[i:i + batch_size]], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            with torch.no_grad():
                hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0), dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, model.config.hidden_size))
    return embed


def tfidf_embedder(reference: list[str]) -> Embedder:
    """Character n-gram TF-IDF vectors fitted on ``reference`` (rows are L2-normalised)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 4), sublinear_tf=True, lowercase=True).fit(reference or ["-"])
    return lambda texts: vec.transform(texts).toarray()


def top_k_mean(similarities: np.ndarray, k: int) -> np.ndarray:
    """Row-wise mean of the k largest values (fewer when a row has fewer columns)."""
    if similarities.shape[1] == 0:
        return np.zeros(similarities.shape[0])
    k = min(k, similarities.shape[1])
    return np.sort(similarities, axis=1)[:, -k:].mean(axis=1)
