"""Sentence embeddings with all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime + tokenizers.

The same pipeline as sentence-transformers' ``all-MiniLM-L6-v2`` (WordPiece, max 256 tokens,
mean pooling over the attention mask, L2 normalisation), without PyTorch. Vectors are
``float32`` with dimension 384 and unit length, so cosine similarity is a dot product.

Long texts (conversations)
--------------------------
The model sees at most ``max_length`` (256) tokens including ``[CLS]``/``[SEP]``.

* :meth:`MiniLMEmbedder.embed` (and the LangChain / Chroma adapters) **embeds the first 254
  word-piece tokens of the text and ignores the rest**. For conversations the text embedded is
  the *redacted* conversation text, so this is "the opening of the conversation" — usually the
  user's first request, which is what topic clustering and few-shot retrieval want.
* :meth:`MiniLMEmbedder.embed_long` covers the whole text: it splits the token sequence into
  consecutive windows of 254 tokens (no overlap, optionally capped by ``max_chunks``), embeds
  every window (each wrapped in ``[CLS]``/``[SEP]``), averages the window vectors (unweighted
  mean) and re-normalises. Cost grows linearly with the text length.

Both are deterministic for a given model file (:data:`EMBEDDING_MODEL_ID` names the space).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from chromadb.api.types import Documents, EmbeddingFunction, Space
from chromadb.api.types import Embeddings as ChromaEmbeddings
from chromadb.utils.embedding_functions import register_embedding_function
from langchain_core.embeddings import Embeddings

from labeling.assets import EMBEDDING_MODEL_ID, ensure_embedding_model

if TYPE_CHECKING:
    import onnxruntime as ort
    from tokenizers import Tokenizer

__all__ = [
    "EMBEDDING_DIM",
    "EMBEDDING_MODEL_ID",
    "MiniLMChromaEmbeddingFunction",
    "MiniLMEmbedder",
]

EMBEDDING_DIM = 384
CHROMA_EF_NAME = "labelloop-minilm-int8"

FloatArray = npt.NDArray[np.float32]


def _l2_normalise(x: FloatArray) -> FloatArray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.clip(norms, 1e-12, None)).astype(np.float32, copy=False)


# start, end and padding tokens: BERT WordPiece (MiniLM) or RoBERTa-style (MPNet)
_SPECIAL_TOKENS = (("[CLS]", "[SEP]", "[PAD]"), ("<s>", "</s>", "<pad>"))


def _special_ids(tok: Tokenizer, path: Path) -> tuple[int, int, int]:
    for names in _SPECIAL_TOKENS:
        ids = [tok.token_to_id(t) for t in names]
        if all(i is not None for i in ids):
            return int(ids[0]), int(ids[1]), int(ids[2])  # type: ignore[arg-type]
    raise ValueError(f"{path} has neither [CLS]/[SEP]/[PAD] nor <s>/</s>/<pad> tokens")


class MiniLMEmbedder(Embeddings):
    """all-MiniLM-L6-v2 int8 on onnxruntime; a LangChain :class:`Embeddings`.

    Lazy: the tokenizer and the ONNX session load on first use, so constructing one is free.
    Thread-safe (onnxruntime sessions may be run concurrently).

    Args:
        onnx_path: ``model.onnx`` (from :func:`labeling.assets.ensure_embedding_model`).
        tokenizer_path: the matching ``tokenizer.json``.
        batch_size: texts per ONNX call (texts are sorted by length first to limit padding).
        max_length: tokens per text / per window, ``[CLS]`` and ``[SEP]`` included (<= 512).
        intra_op_num_threads: onnxruntime threads for one call.
        workers: calls run concurrently on this many threads (each call at most ``batch_size``
            texts; fewer texts than ``workers * batch_size`` are split evenly, so a short
            request still uses every worker). With ``batch_size=1`` a text's vector depends on
            that text only, which a model that quantises its activations per call needs.
        model_id: the vector-space id stored next to vectors.
        exact_int8: compute the file's int8 products exactly on every CPU
            (``labeling.int8.exact_int8_model``): vectors that do not depend on whether the CPU
            has VNNI, at about 0.6x the texts/s on one without it.
        dim: the model's hidden size (384 for MiniLM; another mean-pooled encoder of the same
            shape, e.g. an MPNet export with ``<s>``/``</s>``/``<pad>`` tokens, names its own).
    """

    dim: int = EMBEDDING_DIM

    def __init__(
        self,
        onnx_path: Path,
        tokenizer_path: Path,
        *,
        batch_size: int = 64,
        max_length: int = 256,
        intra_op_num_threads: int = 2,
        workers: int = 1,
        model_id: str = EMBEDDING_MODEL_ID,
        dim: int = EMBEDDING_DIM,
        exact_int8: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if workers < 1:
            raise ValueError("workers must be >= 1")
        if not 3 <= max_length <= 512:
            raise ValueError("max_length must be in [3, 512]")
        self.onnx_path = Path(onnx_path)
        self.tokenizer_path = Path(tokenizer_path)
        self.batch_size = batch_size
        self.max_length = max_length
        self.intra_op_num_threads = intra_op_num_threads
        self.workers = workers
        self._concurrent_calls = workers > 1 or batch_size == 1
        self.model_id = model_id
        self.dim = dim
        self.exact_int8 = exact_int8
        self._lock = threading.Lock()
        self._session: ort.InferenceSession | None = None
        self._tokenizer: Tokenizer | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._input_names: frozenset[str] = frozenset()
        self._cls_id = 0
        self._sep_id = 0
        self._pad_id = 0

    def use_threads(self, n: int) -> None:
        """Use ``n`` threads from now on (before the first call): ``n`` concurrent one-thread
        calls for an embedder built to run calls concurrently (``workers > 1`` or one text per
        call), else ``n`` onnxruntime threads within each call."""
        if n < 1:
            raise ValueError("threads must be >= 1")
        if self._concurrent_calls:
            self.workers, self.intra_op_num_threads = n, 1
        else:
            self.intra_op_num_threads = n

    @classmethod
    def from_models_dir(cls, models_dir: Path, **kwargs: Any) -> MiniLMEmbedder:
        """Verify/copy the assets into ``models_dir`` and build an embedder on them."""
        onnx_path, tokenizer_path = ensure_embedding_model(models_dir)
        return cls(onnx_path, tokenizer_path, **kwargs)

    # ------------------------------------------------------------------ loading

    def _load(self) -> tuple[ort.InferenceSession, Tokenizer]:
        session, tokenizer = self._session, self._tokenizer
        if session is not None and tokenizer is not None:
            return session, tokenizer
        with self._lock:
            if self._session is None or self._tokenizer is None:
                import onnxruntime as ort
                from tokenizers import Tokenizer

                tok = Tokenizer.from_file(str(self.tokenizer_path))
                tok.no_truncation()
                tok.no_padding()
                self._cls_id, self._sep_id, self._pad_id = _special_ids(tok, self.tokenizer_path)
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = self.intra_op_num_threads
                opts.inter_op_num_threads = 1
                # no busy-waiting between ops: on a shared machine spinning threads steal the
                # cores the other thread needs (measured: +45-60 % texts/s under load)
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                opts.log_severity_level = 3
                source: str | bytes = str(self.onnx_path)
                if self.exact_int8:  # the same integer products on every CPU (labeling.int8)
                    from labeling.int8 import exact_int8_model

                    source = exact_int8_model(self.onnx_path)
                sess = ort.InferenceSession(
                    source, sess_options=opts, providers=["CPUExecutionProvider"]
                )
                self._input_names = frozenset(i.name for i in sess.get_inputs())
                self._tokenizer, self._session = tok, sess
            assert self._session is not None
            assert self._tokenizer is not None
            return self._session, self._tokenizer

    # ------------------------------------------------------------------ core

    @property
    def _content_len(self) -> int:
        return self.max_length - 2

    def _token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Word-piece ids per text, without special tokens and without truncation."""
        _, tok = self._load()
        encs = tok.encode_batch(list(texts), add_special_tokens=False)
        return [list(e.ids) for e in encs]

    def _run_windows(self, windows: Sequence[Sequence[int]]) -> FloatArray:
        """Embed content-token windows (each <= max_length-2 ids); rows follow ``windows``."""
        self._load()
        out = np.empty((len(windows), self.dim), dtype=np.float32)
        order = sorted(range(len(windows)), key=lambda i: len(windows[i]))
        # with concurrent calls, a few texts are still spread over every worker
        size = max(1, min(self.batch_size, -(-len(order) // self.workers)))
        batches = [order[s : s + size] for s in range(0, len(order), size)]

        def run(idx: list[int]) -> None:  # rows of different batches never overlap
            out[idx] = self._run_batch([windows[i] for i in idx])

        if self.workers > 1 and len(batches) > 1:
            list(self._executor().map(run, batches))
        else:
            for idx in batches:
                run(idx)
        return out

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="embed")
            return self._pool

    def _run_batch(self, batch: Sequence[Sequence[int]]) -> FloatArray:
        """Unit vectors of one ONNX call over ``batch`` (padded to its longest window)."""
        session, _ = self._load()
        width = max(len(w) for w in batch) + 2
        ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, window in enumerate(batch):
            seq = [self._cls_id, *window, self._sep_id]
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        feeds: dict[str, npt.NDArray[np.int64]] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = np.asarray(session.run(None, feeds)[0], dtype=np.float32)
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return _l2_normalise(pooled.astype(np.float32))

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """``(len(texts), 384)`` float32 unit vectors of the first ``max_length`` tokens."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of strings, not a string")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        windows = [ids[: self._content_len] for ids in self._token_ids(texts)]
        return self._run_windows(windows)

    def embed_long(self, texts: Sequence[str], *, max_chunks: int | None = None) -> FloatArray:
        """Whole-text vectors: mean of the vectors of consecutive ``max_length``-token windows.

        ``max_chunks`` caps the windows per text (the first ones are kept).
        """
        if isinstance(texts, str):
            raise TypeError("embed_long() takes a sequence of strings, not a string")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        step = self._content_len
        windows: list[list[int]] = []
        owners: list[int] = []
        for n, ids in enumerate(self._token_ids(texts)):
            chunks = [ids[i : i + step] for i in range(0, len(ids), step)] or [[]]
            if max_chunks is not None:
                chunks = chunks[: max(1, max_chunks)]
            windows.extend(chunks)
            owners.extend([n] * len(chunks))
        vecs = self._run_windows(windows)
        sums = np.zeros((len(texts), self.dim), dtype=np.float32)
        np.add.at(sums, np.asarray(owners), vecs)
        return _l2_normalise(sums)

    def count_tokens(self, text: str) -> int:
        """Word-piece tokens of ``text`` (without ``[CLS]``/``[SEP]``)."""
        return len(self._token_ids([text])[0])

    # ------------------------------------------------------------------ LangChain

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed([text])[0].tolist()

    # ------------------------------------------------------------------ Chroma

    def as_chroma(self, models_dir: Path | None = None) -> MiniLMChromaEmbeddingFunction:
        """This embedder as a chromadb embedding function (shares the loaded session)."""
        return MiniLMChromaEmbeddingFunction(embedder=self, models_dir=models_dir)


@register_embedding_function  # type: ignore[untyped-decorator,unused-ignore]
class MiniLMChromaEmbeddingFunction(EmbeddingFunction[Documents]):
    """chromadb 1.x embedding function over :class:`MiniLMEmbedder`.

    Registered under :data:`CHROMA_EF_NAME` (importing this module registers it), so a
    persisted collection re-opens with ``build_from_config`` instead of a legacy warning.
    Default space: cosine (vectors are unit length).
    """

    def __init__(
        self,
        embedder: MiniLMEmbedder | None = None,
        *,
        models_dir: Path | None = None,
        batch_size: int = 64,
        max_length: int = 256,
        intra_op_num_threads: int = 2,
    ) -> None:
        if embedder is None:
            if models_dir is None:
                raise ValueError("give an embedder or a models_dir")
            embedder = MiniLMEmbedder.from_models_dir(
                Path(models_dir),
                batch_size=batch_size,
                max_length=max_length,
                intra_op_num_threads=intra_op_num_threads,
            )
        self.embedder = embedder
        self.models_dir = (
            Path(models_dir) if models_dir is not None else embedder.onnx_path.parent.parent
        )

    def __call__(self, input: Documents) -> ChromaEmbeddings:
        return list(self.embedder.embed(list(input)))

    @staticmethod
    def name() -> str:
        return CHROMA_EF_NAME

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]

    def get_config(self) -> dict[str, Any]:
        e = self.embedder
        return {
            "model_id": e.model_id,
            "models_dir": str(self.models_dir),
            "batch_size": e.batch_size,
            "max_length": e.max_length,
            "intra_op_num_threads": e.intra_op_num_threads,
        }

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMChromaEmbeddingFunction:
        MiniLMChromaEmbeddingFunction.validate_config(config)
        return MiniLMChromaEmbeddingFunction(
            models_dir=Path(config["models_dir"]),
            batch_size=int(config.get("batch_size", 64)),
            max_length=int(config.get("max_length", 256)),
            intra_op_num_threads=int(config.get("intra_op_num_threads", 2)),
        )

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        if config.get("model_id") != EMBEDDING_MODEL_ID:
            raise ValueError(
                f"collection was embedded with {config.get('model_id')!r}, this build has "
                f"{EMBEDDING_MODEL_ID!r}; re-embed the collection"
            )
        if "models_dir" not in config:
            raise ValueError("config lacks models_dir")

    def validate_config_update(
        self, old_config: dict[str, Any], new_config: dict[str, Any]
    ) -> None:
        if new_config.get("model_id", old_config.get("model_id")) != old_config.get("model_id"):
            raise ValueError("cannot change the embedding model of an existing collection")
