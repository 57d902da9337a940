"""The real MiniLM int8 ONNX embedder (needs the `models` dependency group installed)."""

from __future__ import annotations

import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest

from labeling.assets import EMBEDDING_MODEL_ID, AssetError
from labeling.embeddings import EMBEDDING_DIM, MiniLMChromaEmbeddingFunction, MiniLMEmbedder
from tests.support.models import model_unavailable

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def embedder(models_dir: Path) -> MiniLMEmbedder:
    try:
        return MiniLMEmbedder.from_models_dir(models_dir)
    except AssetError as exc:  # pragma: no cover - depends on the environment
        model_unavailable("the embedding model", exc)


def test_shape_dtype_and_norm(embedder: MiniLMEmbedder) -> None:
    vecs = embedder.embed(["hello world", "", "a much longer sentence about travel plans"])
    assert vecs.shape == (3, EMBEDDING_DIM) == (3, 384)
    assert vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)
    with pytest.raises(TypeError):
        embedder.embed("not a list")


def test_similarity_ordering(embedder: MiniLMEmbedder) -> None:
    a, b, c = embedder.embed(
        ["I love hiking in the mountains", "trail walking in the alps", "my tax return is late"]
    )
    assert float(a @ b) > float(a @ c) + 0.2
    assert float(a @ b) > float(b @ c) + 0.2


def test_batching_and_order_do_not_change_vectors(
    embedder: MiniLMEmbedder, models_dir: Path
) -> None:
    texts = [f"text number {i} " * (i % 7 + 1) for i in range(20)]
    small = MiniLMEmbedder.from_models_dir(models_dir, batch_size=3, intra_op_num_threads=1)
    np.testing.assert_allclose(embedder.embed(texts), small.embed(texts), atol=1e-5)
    np.testing.assert_allclose(embedder.embed(texts[::-1]), embedder.embed(texts)[::-1], atol=1e-5)


def test_truncation_and_embed_long(embedder: MiniLMEmbedder) -> None:
    head = "I am planning a hiking trip to the Alps next summer. "
    tail = "Also, my tax return is late and I need an accountant. " * 60
    long_text = head * 30 + tail
    assert embedder.count_tokens(long_text) > 3 * 256
    first = embedder.embed([long_text])[0]
    only_head = embedder.embed([head * 30])[0]
    # truncation: the first 254 tokens are all "hiking" text, the tax part is never seen
    np.testing.assert_allclose(first, only_head, atol=1e-5)
    whole = embedder.embed_long([long_text])[0]
    assert abs(float(np.linalg.norm(whole)) - 1.0) < 1e-5
    tax = embedder.embed(["my tax return is late"])[0]
    assert float(whole @ tax) > float(first @ tax) + 0.1
    # short texts: embed_long == embed
    np.testing.assert_allclose(
        embedder.embed_long(["short text"]), embedder.embed(["short text"]), atol=1e-6
    )
    capped = embedder.embed_long([long_text], max_chunks=1)[0]
    np.testing.assert_allclose(capped, first, atol=1e-5)


def test_langchain_interface(embedder: MiniLMEmbedder) -> None:
    docs = embedder.embed_documents(["alpha", "beta"])
    assert len(docs) == 2
    assert len(docs[0]) == 384
    assert all(isinstance(x, float) for x in docs[0])
    q = embedder.embed_query("alpha")
    np.testing.assert_allclose(q, docs[0], atol=1e-6)
    assert embedder.model_id == EMBEDDING_MODEL_ID


def test_chroma_embedding_function(embedder: MiniLMEmbedder, models_dir: Path) -> None:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    ef = embedder.as_chroma(models_dir)
    assert ef.name() == "labelloop-minilm-int8"
    assert not ef.is_legacy()
    # same settings as every other in-process client (chroma refuses two differing ones)
    client = chromadb.EphemeralClient(settings=ChromaSettings(anonymized_telemetry=False))
    name = f"t-{uuid.uuid4().hex[:8]}"
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        col = client.create_collection(name, embedding_function=ef)  # type: ignore[arg-type]
        col.add(
            ids=["hike", "tax", "code"],
            documents=[
                "I love hiking in the mountains",
                "my tax return is late",
                "how do I fix this python import error",
            ],
        )
        res = col.query(query_texts=["trail walking in the alps"], n_results=2)
    assert res["ids"][0][0] == "hike"
    assert col.configuration.get("embedding_function") is not None

    # re-opened without passing the function: rebuilt from the stored config
    again = client.get_collection(name)
    res2 = again.query(query_texts=["overdue taxes"], n_results=1)
    assert res2["ids"][0] == ["tax"]
    client.delete_collection(name)


def test_chroma_config_round_trip(models_dir: Path, embedder: MiniLMEmbedder) -> None:
    ef = embedder.as_chroma(models_dir)
    cfg = ef.get_config()
    rebuilt = MiniLMChromaEmbeddingFunction.build_from_config(cfg)
    assert rebuilt.get_config() == cfg
    with pytest.raises(ValueError, match="re-embed"):
        MiniLMChromaEmbeddingFunction.build_from_config({**cfg, "model_id": "other@123"})


def test_concurrent_calls_give_the_same_vectors_bit_for_bit(models_dir: Path) -> None:
    """The filter's MiniLM runs two one-thread calls at once: the vectors must not change."""
    from labeling.assets import ensure_embedding_model
    from labeling.encoders import load_encoder

    texts = [f"segment {i}: " + "words about hiking and trails " * (i % 9 + 1) for i in range(70)]
    onnx, tok = ensure_embedding_model(models_dir)
    filt = load_encoder("minilm", onnx, tok, max_length=128)
    assert filt.workers > 1 and filt.intra_op_num_threads == 1
    one = MiniLMEmbedder(onnx, tok, max_length=128, batch_size=64, intra_op_num_threads=2)
    np.testing.assert_array_equal(filt.embed(texts), one.embed(texts))
    np.testing.assert_array_equal(filt.embed(texts[5:6]), one.embed(texts)[5:6])
