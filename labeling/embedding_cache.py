"""A persistent embedding cache: each distinct text is embedded once per model, across runs.

``CachedTextEmbedder(inner, path)`` wraps any embedder (``embed(texts) -> (n, d)``) and keeps the
vectors in a SQLite file keyed by ``sha256(text)``; the file belongs to one vector space (the
caller puts the model id in its name, e.g. ``cache/embeddings-<model id>.sqlite``). Training on
the same data again, or on data that shares texts (dialogue templates, repeated requests), only
embeds what is new. Texts are never stored, only their hashes.

The file is created on first use (not at construction). Not shared between processes for
writing at the same time (SQLite serialises writers; a second writer waits).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

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
            items = list(todo.items())
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
