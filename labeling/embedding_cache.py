"""A persistent embedding cache: each distinct text is embedded once per model, across runs.

``CachedTextEmbedder(inner, path)`` wraps any embedder (``embed(texts) -> (n, d)``) and keeps the
vectors in a SQLite file keyed by ``sha256(text)``; the file belongs to one vector space (the
caller puts the model id in its name, e.g. ``cache/embeddings-<model id>.sqlite``). Training on
the same data again, or on data that shares texts (dialogue templates, repeated requests), only
embeds what is new. Texts are never stored, only their hashes.

``LRUEmbedder(inner, max_entries)`` is the serving counterpart: an in-memory LRU of the most
recently used texts' vectors (no file), in front of the filter's encoder.

The file is created on first use (not at construction). Not shared between processes for
writing at the same time (SQLite serialises writers; a second writer waits).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Progress = Callable[[int, int], None]


class TextEmbedder(Protocol):
    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class CachedTextEmbedder:
    """See the module doc. ``chunk``: texts per call of the inner embedder (and per commit)."""

    def __init__(
        self,
        inner: TextEmbedder,
        path: Path,
        *,
        chunk: int = 1024,
        progress: Progress | None = None,
    ) -> None:
        self.inner = inner
        self.path = Path(path)
        self.chunk = chunk
        self.progress = progress
        self.hits = 0
        self.embedded = 0
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=120)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS vec (k TEXT PRIMARY KEY, v BLOB NOT NULL)")
            self._conn = conn
        return self._conn

    def _get(self, keys: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        db = self._db()
        out: dict[str, npt.NDArray[np.float32]] = {}
        for start in range(0, len(keys), 500):
            part = list(keys[start : start + 500])
            marks = ",".join("?" * len(part))
            for k, v in db.execute(f"SELECT k, v FROM vec WHERE k IN ({marks})", part):
                out[k] = np.frombuffer(v, dtype=np.float32)
        return out

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of strings, not a string")
        keys = [text_key(t) for t in texts]
        with self._lock:
            found = self._get(list(dict.fromkeys(keys)))
            todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
            self.hits += len(keys) - sum(1 for k in keys if k in todo)
            # by length: each chunk holds texts of similar length, so the encoder pads little
            items = sorted(todo.items(), key=lambda kv: len(kv[1]))
            for start in range(0, len(items), self.chunk):
                part = items[start : start + self.chunk]
                vecs = np.asarray(self.inner.embed([t for _, t in part]), dtype=np.float32)
                db = self._db()
                db.executemany(
                    "INSERT OR REPLACE INTO vec (k, v) VALUES (?, ?)",
                    [(k, v.tobytes()) for (k, _), v in zip(part, vecs, strict=True)],
                )
                db.commit()
                for (k, _), v in zip(part, vecs, strict=True):
                    found[k] = v
                self.embedded += len(part)
                if self.progress is not None:
                    self.progress(start + len(part), len(items))
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([found[k] for k in keys])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class LRUEmbedder:
    """An in-memory LRU cache of vectors in front of an encoder, for serving.

    The same segment text comes back again and again in live traffic (assistant template turns,
    greetings, repeated requests); each distinct text is embedded once while it stays among the
    ``max_entries`` most recently used (about 1.6 KB per 384-d vector: 20,000 entries ~ 31 MB).
    Keys are the texts themselves (nothing is written anywhere). Texts repeated within one call
    are embedded once. Thread-safe: the lock is not held while the encoder runs, so two threads
    may embed the same new text at the same time (both get the same vector; one is kept).
    ``max_entries=0`` turns the cache off (every text is embedded).
    """

    def __init__(self, inner: TextEmbedder, max_entries: int = 20_000) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self.inner = inner
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._vecs: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._vecs)

    def __getattr__(self, name: str) -> Any:  # model_id, dim, intra_op_num_threads, ...
        if name == "inner":  # not set yet (unpickling): never recurse
            raise AttributeError(name)
        return getattr(self.inner, name)

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of strings, not a string")
        if not texts:
            return np.asarray(self.inner.embed([]), dtype=np.float32)
        found: dict[str, npt.NDArray[np.float32]] = {}
        with self._lock:
            for t in dict.fromkeys(texts):
                v = self._vecs.get(t)
                if v is not None:
                    self._vecs.move_to_end(t)
                    found[t] = v
        todo = [t for t in dict.fromkeys(texts) if t not in found]
        if todo:
            vecs = np.asarray(self.inner.embed(todo), dtype=np.float32)
            if vecs.ndim != 2 or vecs.shape[0] != len(todo):
                raise ValueError(f"embedder returned shape {vecs.shape} for {len(todo)} texts")
            for t, v in zip(todo, vecs, strict=True):
                found[t] = v
            if self.max_entries:
                with self._lock:
                    for t, v in zip(todo, vecs, strict=True):
                        self._vecs[t] = v.copy()  # a row of its own, not a view of the batch
                        self._vecs.move_to_end(t)
                    while len(self._vecs) > self.max_entries:
                        self._vecs.popitem(last=False)
        with self._lock:
            self.misses += len(todo)
            self.hits += len(texts) - len(todo)
        return np.stack([found[t] for t in texts])

    def clear(self) -> None:
        with self._lock:
            self._vecs.clear()
