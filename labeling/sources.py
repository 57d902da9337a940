"""Where conversations come from: a small interface so a warehouse table can be added later.

The default source is a folder of JSONL/Parquet files; a file is "new" until a run has sampled
it (its path, size and mtime are remembered in the label store's ``sync_state``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from labelloop.store import LabelStore

PATTERNS = ("*.jsonl", "*.parquet")


class ConversationSource(Protocol):
    """A source of conversation record files (or exports of a table) not yet sampled."""

    name: str

    def pending(self, store: LabelStore) -> list[Path]: ...

    def mark_done(self, store: LabelStore, paths: list[Path]) -> None: ...


@dataclass(frozen=True)
class FolderSource:
    """Every ``*.jsonl`` / ``*.parquet`` file under a folder (recursively)."""

    folder: Path
    name: str = "folder"

    def _key(self, path: Path) -> str:
        return f"source:{self.name}:{path.resolve()}"

    @staticmethod
    def _fingerprint(path: Path) -> str:
        st = path.stat()
        return json.dumps({"size": st.st_size, "mtime": int(st.st_mtime)})

    def files(self) -> list[Path]:
        if not self.folder.is_dir():
            raise FileNotFoundError(f"source folder {self.folder} does not exist")
        return sorted(p for pat in PATTERNS for p in self.folder.rglob(pat) if p.is_file())

    def pending(self, store: LabelStore) -> list[Path]:
        files = self.files()
        seen = store.sync_values(f"source:{self.name}:")
        return [p for p in files if seen.get(self._key(p)) != self._fingerprint(p)]

    def mark_done(self, store: LabelStore, paths: list[Path]) -> None:
        store.set_sync_values({self._key(p): self._fingerprint(p) for p in paths})
