"""Static sentence embeddings distilled from the base model with model2vec: the triage's fast embedding route.

``production.triage.embeddings: static`` embeds traces with a model2vec ``StaticModel`` distilled from the task's
base model: every token of its vocabulary is put through the encoder once, the token vectors are reduced by PCA and
weighted (SIF), and a sentence is the mean of its tokens' vectors. Embedding is a table lookup, so a million traces
take seconds instead of the encoder's half hour on two CPU cores, at a semantic space that separates off-task
traffic less sharply (README, "What the preparation does to grow with the log", has both measured).

The distillation runs once per base model (about 20 s for MiniLM on two cores) and is kept under
``models_dir()/static``, written atomically, so a half-written folder never loads.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pioneer import defaults as d
from pioneer.data.embeddings import Embedder


def distilled_folder(model_ref: str, dimensions: int) -> Path:
    """Where the static model distilled from ``model_ref`` at ``dimensions`` lives (keyed by the resolved source,
    the dimensions and the model2vec version: another source or another distillation never reuses it)."""
    import model2vec

    from pioneer.trainer.base_models import models_dir, resolve

    source = resolve(model_ref)
    key = hashlib.sha256(f"{source}|pca={dimensions}|model2vec={model2vec.__version__}".encode()).hexdigest()[:24]
    return models_dir() / "static" / key


def distill(model_ref: str, dimensions: int = d.TRIAGE_STATIC_DIMENSIONS, log=print) -> Path:
    """The folder of a model2vec static model distilled from ``model_ref`` (alias, directory or hub id), distilled
    now unless an earlier call left it. Float32 vectors, PCA to ``dimensions`` (at most the encoder's width)."""
    target = distilled_folder(model_ref, dimensions)
    if (target / "config.json").is_file():
        return target
    from model2vec.distill import distill as model2vec_distill  # 10 s of imports, only when there is distilling to do

    from pioneer.trainer.base_models import resolve
    from pioneer.trainer.fit import pick_device

    log(f"distilling a static embedding model from {model_ref} (model2vec, PCA to {dimensions} dimensions; once per base model)")
    model = model2vec_distill(resolve(model_ref), pca_dims=dimensions, quantize_to="float32", device=pick_device())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    model.save_pretrained(staging)
    (staging / "SOURCE").write_text(f"{model_ref}\n{resolve(model_ref)}\n")
    try:
        os.replace(staging, target)  # atomic; another process that got there first wins
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def static_embedder(model_ref: str, dimensions: int = d.TRIAGE_STATIC_DIMENSIONS, log=print) -> Embedder:
    """texts -> L2-normalised float32 vectors of the static model distilled from ``model_ref``, in the input order.
    The function's ``space`` names the source model and the distillation (what the trace store keys vectors by)."""
    from model2vec import StaticModel

    model = StaticModel.from_pretrained(distill(model_ref, dimensions, log))

    def embed(texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, model.dim), dtype=np.float32)
        vectors = np.asarray(model.encode(list(texts), use_multiprocessing=False), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)  # a text of unknown tokens only stays the zero vector
    embed.space = f"{model_ref}|model2vec-distilled|pca={dimensions}|mean-pooled|l2"  # type: ignore[attr-defined]
    return embed
