"""production.triage.embeddings: static — a model2vec table distilled from the base model, once, then a lookup per text."""

import numpy as np
import pytest

from conftest import tiny_adaptation
from pioneer.api.validation import SpecError, parse_resource
from pioneer.data.embeddings import encoder_embedder
from pioneer.data.static_embeddings import distill, distilled_folder, static_embedder


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A tiny randomly initialised BERT with the bundled MiniLM tokenizer: a base model that distils in seconds."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from pioneer.trainer.base_models import resolve

    folder = tmp_path_factory.mktemp("tiny-encoder")
    tokenizer = AutoTokenizer.from_pretrained(resolve("minilm"))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def models_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIONEER_MODELS", str(tmp_path / "models"))
    return tmp_path / "models"


def test_the_static_table_is_distilled_from_the_base_model_once_and_kept_in_the_models_cache(tiny_encoder, models_cache):
    said = []
    folder = distill(tiny_encoder, dimensions=16, log=said.append)
    assert folder == distilled_folder(tiny_encoder, 16) and folder.parent == models_cache / "static"
    assert (folder / "config.json").is_file() and tiny_encoder in (folder / "SOURCE").read_text()
    assert len(said) == 1 and "distilling" in said[0]
    assert distill(tiny_encoder, dimensions=16, log=said.append) == folder and len(said) == 1  # the second call reads it
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging folder is left behind
    # another distillation of the same model is another table
    assert distilled_folder(tiny_encoder, 8) != folder


def test_static_vectors_are_unit_rows_in_input_order_and_name_a_space_of_their_own(tiny_encoder, models_cache):
    embed = static_embedder(tiny_encoder, dimensions=16, log=lambda _: None)
    texts = ["turn on the kitchen light", "what time is it", "turn on the kitchen light", "set an alarm for six"]
    vectors = embed(texts)
    assert vectors.shape == (4, 16) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    np.testing.assert_allclose(embed(texts[::-1]), vectors[::-1], rtol=1e-6)  # order in, order out; no batch effects
    assert not np.allclose(vectors[0], vectors[1])
    assert embed([]).shape == (0, 16)
    # the trace store keys vectors by space: the encoder's vectors of the same model are never served for these
    assert "model2vec" in embed.space and embed.space != encoder_embedder(tiny_encoder).space


def test_a_static_embedding_has_no_precision_to_choose():
    spec = tiny_adaptation()
    spec["spec"]["production"] = {"triage": {"embeddings": "static"}}
    assert parse_resource(spec).spec.production.triage.embeddings == "static"
    spec["spec"]["production"]["triage"]["embeddingPrecision"] = "bfloat16"
    with pytest.raises(SpecError, match="embeddingPrecision applies to embeddings: encoder"):
        parse_resource(spec)
