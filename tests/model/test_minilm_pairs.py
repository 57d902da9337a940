"""The ``minilm-pairs`` encoder: all-MiniLM-L6-v2 tuned on the LLM-written contrast pairs alone,
built on first use from the bundled network and the shipped low-rank weight delta, int8 matrix
products, one text per call (needs the `models` group installed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from labeling import assets, minilm_q8
from labeling.assets import AssetError
from labeling.embeddings import MiniLMEmbedder
from labeling.encoders import WORKERS, encoder_from_models_dir
from tests.support.models import model_unavailable

pytestmark = pytest.mark.model

# written for this test, none of them in labeling/data/contrast_pairs.jsonl: a message that
# touches a category and the same request made ordinary
PAIRS = [
    ("I'm fasting for Yom Kippur, can you suggest a quiet hotel in Boston?",
     "I'm visiting my cousin, can you suggest a quiet hotel in Boston?"),
    ("As a gay man, which dating apps would you recommend in Berlin?",
     "As a busy engineer, which note-taking apps would you recommend for work?"),
    ("My chemo starts next week, what should I pack for the hospital stay?",
     "My vacation starts next week, what should I pack for the beach stay?"),
    ("I'm a shop steward for our union, how do I run a meeting well?",
     "I'm a team lead at our company, how do I run a meeting well?"),
    ("I always vote Republican, what gift should I get my dad?",
     "I always shop early, what gift should I get my dad?"),
]  # fmt: skip
CLEAN = [
    "how do you make pasta",
    "book a table for two at 7pm near the station",
    "Which boots should I buy for the Red Rocks trail near Denver this weekend?",
    "give me a fun fact about dolphins",
]


@pytest.fixture(scope="module")
def encoders(models_dir: Path) -> tuple[MiniLMEmbedder, MiniLMEmbedder]:
    try:
        tuned: MiniLMEmbedder = encoder_from_models_dir("minilm-pairs", models_dir)
        untuned: MiniLMEmbedder = encoder_from_models_dir("minilm-q8", models_dir)
    except AssetError as exc:  # pragma: no cover - depends on the environment
        model_unavailable("the embedding model", exc)
    return tuned, untuned


def test_one_text_per_call_and_its_own_model_id(
    encoders: tuple[MiniLMEmbedder, MiniLMEmbedder],
) -> None:
    tuned, untuned = encoders
    assert (tuned.batch_size, tuned.workers) == (1, WORKERS)
    texts = [t for pair in PAIRS for t in pair]
    together = tuned.embed(texts)
    alone = np.stack([tuned.embed([t])[0] for t in texts])
    np.testing.assert_array_equal(together, alone)  # bit for bit: a vector is its text's only
    assert tuned.model_id.startswith("all-MiniLM-L6-v2-pairs-q8-onnx@")
    assert tuned.model_id != untuned.model_id


def test_a_sensitive_message_moves_away_from_its_ordinary_twin(
    encoders: tuple[MiniLMEmbedder, MiniLMEmbedder],
) -> None:
    """What the tuning is for, on pairs it never saw: every twin is farther apart than in the
    untuned encoder."""
    tuned, untuned = encoders

    def cosines(enc: MiniLMEmbedder) -> np.ndarray:
        a = enc.embed([s for s, _ in PAIRS])
        b = enc.embed([c for _, c in PAIRS])
        return np.sum(a * b, axis=1)

    before, after = cosines(untuned), cosines(tuned)
    assert (after < before).all(), (before, after)
    assert after.mean() < before.mean() - 0.15, (before, after)


def test_everyday_requests_keep_their_place(
    encoders: tuple[MiniLMEmbedder, MiniLMEmbedder],
) -> None:
    tuned, untuned = encoders
    cos = np.sum(tuned.embed(CLEAN) * untuned.embed(CLEAN), axis=1)
    assert cos.min() > 0.95, cos


def test_the_build_records_the_delta_it_was_made_from(
    encoders: tuple[MiniLMEmbedder, MiniLMEmbedder], models_dir: Path
) -> None:
    tuned, _ = encoders
    manifest = json.loads((models_dir / assets.MINILM_PAIRS_DIRNAME / "manifest.json").read_text())
    assert manifest["delta_sha256"] == assets.PAIRS_DELTA_SHA256
    assert manifest["dither_seed"] == minilm_q8.DITHER_SEED
    assert manifest["source_sha256"] == assets.EMBEDDING_ONNX_SHA256
    assert manifest["files"]["model.onnx"]["sha256"] == assets.sha256_file(tuned.onnx_path)


def test_a_changed_delta_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "minilm_pairs_delta.npz"
    shutil.copyfile(assets.PAIRS_DELTA_FILE, bad)
    with bad.open("r+b") as fh:  # one byte changed near the end
        fh.seek(-100, 2)
        byte = fh.read(1)
        fh.seek(-100, 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(assets, "PAIRS_DELTA_FILE", bad)
    with pytest.raises(AssetError, match="sha256"):
        assets.ensure_minilm_pairs_model(tmp_path / "models")
    assert not (tmp_path / "models" / assets.MINILM_PAIRS_DIRNAME).exists()
