"""The ``minilm-q8`` encoder: all-MiniLM-L6-v2 with int8 matrix products, derived on first use
from the bundled file, one text per call on two threads (needs the `models` group installed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from labeling import assets, minilm_q8
from labeling.assets import AssetError
from labeling.embeddings import MiniLMEmbedder
from labeling.encoders import WORKERS, encoder_from_models_dir
from tests.support.models import model_unavailable

pytestmark = pytest.mark.model

TEXTS = [
    "I volunteer for the Green Party campaign, what shoes are good for canvassing all day?",
    "how do you make pasta",
    "ok",
    "Is there anything else I can help you with today? " * 6,
    "my doctor changed my insulin dose and I feel dizzy",
    "book a table for two at 7pm near the station",
]


@pytest.fixture(scope="module")
def q8(models_dir: Path) -> MiniLMEmbedder:
    try:
        enc: MiniLMEmbedder = encoder_from_models_dir("minilm-q8", models_dir)
    except AssetError as exc:  # pragma: no cover - depends on the environment
        model_unavailable("the embedding model", exc)
    return enc


def test_a_texts_vector_does_not_depend_on_the_texts_embedded_with_it(q8: MiniLMEmbedder) -> None:
    assert (q8.batch_size, q8.workers) == (1, WORKERS)
    together = q8.embed(TEXTS)
    alone = np.stack([q8.embed([t])[0] for t in TEXTS])
    np.testing.assert_array_equal(together, alone)  # bit for bit, not just close
    shuffled = q8.embed(TEXTS[::-1] + ["filler " * 40] * 5)[: len(TEXTS)][::-1]
    np.testing.assert_array_equal(shuffled, together)
    one_thread = MiniLMEmbedder(q8.onnx_path, q8.tokenizer_path, max_length=q8.max_length,
                                batch_size=1, workers=1, intra_op_num_threads=1)  # fmt: skip
    np.testing.assert_array_equal(one_thread.embed(TEXTS), together)


def test_close_to_the_bundled_encoder(q8: MiniLMEmbedder, models_dir: Path) -> None:
    bundled = encoder_from_models_dir("minilm", models_dir, max_length=q8.max_length)
    cos = np.sum(bundled.embed(TEXTS) * q8.embed(TEXTS), axis=1)
    assert cos.min() > 0.95, cos
    np.testing.assert_allclose(np.linalg.norm(q8.embed(TEXTS), axis=1), 1.0, atol=1e-5)
    assert q8.model_id.startswith("all-MiniLM-L6-v2-q8-onnx@") and q8.model_id != bundled.model_id


def test_a_batch_of_several_texts_per_call_would_mix_them(q8: MiniLMEmbedder) -> None:
    """Why one text per call: the same file in batches makes a vector depend on its batch."""
    batched = MiniLMEmbedder(q8.onnx_path, q8.tokenizer_path, max_length=q8.max_length,
                             batch_size=64, workers=1)  # fmt: skip
    with_long = batched.embed([TEXTS[1], "filler words " * 50])[0]
    alone = batched.embed([TEXTS[1]])[0]
    assert not np.array_equal(with_long, alone)


def test_derived_once_with_a_manifest_and_rebuilt_when_the_derivation_changes(
    q8: MiniLMEmbedder, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = models_dir / assets.MINILM_Q8_DIRNAME
    manifest = json.loads((base / "manifest.json").read_text())
    assert manifest["source_sha256"] == assets.EMBEDDING_ONNX_SHA256
    assert manifest["derivation_version"] == minilm_q8.Q8_DERIVATION_VERSION
    assert manifest["files"]["model.onnx"]["size"] == q8.onnx_path.stat().st_size
    calls: list[Path] = []
    real = minilm_q8.build_minilm_q8

    def counting(source: Path, tokenizer: Path, out_dir: Path) -> None:
        calls.append(out_dir)
        real(source, tokenizer, out_dir)

    monkeypatch.setattr(minilm_q8, "build_minilm_q8", counting)
    assert assets.ensure_minilm_q8_model(models_dir, full_verify=True) == (
        q8.onnx_path, q8.tokenizer_path)  # fmt: skip
    assert calls == []  # a good build is reused
    before = (base / "model.onnx").read_bytes()
    monkeypatch.setattr(minilm_q8, "Q8_DERIVATION_VERSION", "test-next")
    assets.ensure_minilm_q8_model(models_dir)
    assert len(calls) == 1
    assert json.loads((base / "manifest.json").read_text())["derivation_version"] == "test-next"
    assert (base / "model.onnx").read_bytes() == before  # the derivation is deterministic
    assert not [p for p in models_dir.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_exact_int8_products_give_the_network_every_cpu_computes_alike(
    q8: MiniLMEmbedder, models_dir: Path
) -> None:
    """With ``exact_int8`` the file's products are exact here too (split where the CPU
    saturates): the same vectors as the plain file on a CPU with VNNI, closer to the float
    network than saturated ones on a CPU without it, and recorded under their own model id."""
    from labeling.encoders import computes_exact_int8
    from labeling.int8 import int8_products_exact

    exact = encoder_from_models_dir("minilm-q8", models_dir, exact_int8=True)
    assert computes_exact_int8(exact.model_id) and not computes_exact_int8(q8.model_id)
    assert exact.model_id.startswith(q8.model_id)
    got, native = exact.embed(TEXTS), q8.embed(TEXTS)
    np.testing.assert_array_equal(np.stack([exact.embed([t])[0] for t in TEXTS]), got)
    if int8_products_exact(-127, 127):  # VNNI / AMX: nothing to split
        np.testing.assert_array_equal(got, native)
    else:  # AVX2 without VNNI: the saturation is gone
        assert not np.array_equal(got, native)
        floats = encoder_from_models_dir("minilm", models_dir, max_length=q8.max_length).embed(
            TEXTS
        )
        assert np.sum(got * floats, axis=1).mean() > np.sum(native * floats, axis=1).mean()
