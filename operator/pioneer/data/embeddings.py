"""Sentence embeddings for diagnosis: mean-pooled hidden states of an encoder (the task's base model).

The offline default base model, all-MiniLM-L6-v2, is a sentence-embedding model, so its mean-pooled
output is a good semantic space; any encoder works. ``tfidf_embedder`` is the dependency-free stand-in
(character n-grams) used when no encoder is at hand.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pioneer import defaults as d

Embedder = Callable[[list[str]], np.ndarray]


PRECISIONS = ("float32", "bfloat16")


def encoder_embedder(model_ref: str, max_length: int = 64, batch_size: int = 64, precision: str = d.TRIAGE_EMBEDDING_PRECISION) -> Embedder:
    """texts -> L2-normalised mean-pooled embeddings from ``model_ref`` (alias, directory or hub id).

    Batches are formed by text length (far less padding); the result keeps the input order (float32 whatever the
    ``precision`` the encoder computes in: ``bfloat16`` weights run about 3x faster on a CPU with native bfloat16,
    with cosine similarity above 0.9997 to the float32 vectors, and about 8x slower on one without). The function's ``space`` attribute names the
    embedding space (model, truncation, pooling, precision): what a cache keys vectors by, so vectors of two
    precisions never mix."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from pioneer.trainer.base_models import resolve
    from pioneer.trainer.fit import pick_device

    if precision not in PRECISIONS:
        raise ValueError(f"embedding precision {precision!r} is not one of {PRECISIONS}")
    path = resolve(model_ref)
    tokenizer = AutoTokenizer.from_pretrained(path)
    device = pick_device()  # a GPU where the preparation has one
    model = AutoModel.from_pretrained(path, dtype=getattr(torch, precision)).to(device).eval()

    def embed(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        for i in range(0, len(texts), batch_size):
            idx = order[i:i + batch_size]
            batch = tokenizer([texts[j] or " " for j in idx], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt").to(device)
            with torch.inference_mode():
                hidden = model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out[idx] = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0), dim=-1).cpu().numpy()
        return out
    # float32 keeps the space's name of the vectors cached before the precision was a choice
    embed.space = f"{model_ref}|max_length={max_length}|mean-pooled|l2" + ("" if precision == "float32" else f"|{precision}")  # type: ignore[attr-defined]
    return embed


def memoized(embed: Embedder, cache=None) -> Embedder:
    """``embed`` that computes each distinct text once per process and, with ``cache`` (an
    :class:`~pioneer.traces.embedding_cache.EmbeddingCache`) and an embedder that names its ``space``, once per
    trace store: vectors already stored are read, new ones are stored. With a store, the process keeps no vectors
    between calls (a million traces' vectors are 1.5 GB): the store is the memory."""
    memory: dict[str, np.ndarray] = {}
    space = getattr(embed, "space", None)
    stored = cache is not None and bool(space)
    counts = {"texts": 0, "distinct": 0, "computed": 0}

    def call(texts: list[str]) -> np.ndarray:
        if not texts:
            return np.asarray(embed([]), dtype=np.float32)
        distinct = list(dict.fromkeys(texts))
        found = {t: memory[t] for t in distinct if t in memory}
        if stored and len(found) < len(distinct):
            found.update(cache.get(space, [t for t in distinct if t not in found]))
        missing = [t for t in distinct if t not in found]
        if missing:
            vectors = np.asarray(embed(missing), dtype=np.float32)
            found.update(zip(missing, vectors))
            if stored:
                cache.put(space, missing, vectors)
            if not stored or cache.write_error:  # a store that cannot keep them: the process does
                memory.update(zip(missing, vectors))
        counts["texts"] += len(texts)
        counts["distinct"] += len(distinct)
        counts["computed"] += len(missing)
        out = np.empty((len(texts), len(next(iter(found.values())))), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i] = found[t]
        return out
    call.space = space  # type: ignore[attr-defined]
    call.counts = counts  # type: ignore[attr-defined]
    call.cache_record = (lambda: cache.record()) if cache is not None else (lambda: None)  # type: ignore[attr-defined]
    return call


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
