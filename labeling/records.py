"""The conversation record contract, a streaming reader and the quarantine.

One record per conversation (JSONL or Parquet), exactly the format of the development data:
``conversation_id, account_id, surface, country, account_linked, started_at, turns[], gold?``.

Reading never stops on a bad record: every problem becomes a :class:`QuarantinedRecord` naming the
source file, the line (or Parquet row) number, the field and a human-readable reason; the caller
writes them to the quarantine JSONL and the run continues. Duplicate ``conversation_id`` values are
detected (the first occurrence wins, later ones are quarantined as duplicates) and counted.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

DEFAULT_MAX_TEXT_CHARS = 20_000
DEFAULT_MAX_TURNS = 200


class Surface(StrEnum):
    ASSISTANT_CHAT = "assistant_chat"
    SMART_GLASSES = "smart_glasses"
    VIBES = "vibes"
    IMAGINE = "imagine"


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["user", "assistant"]
    text: str
    modality: Literal["text", "voice", "image", "video"] = "text"


class Gold(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sensitive: list[str] = Field(default_factory=list)
    interests: list[str] | None = None  # None = unknown (not scored)


class Conversation(BaseModel):
    """One conversation as it arrives from a product surface."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    conversation_id: str = Field(min_length=1, max_length=256)
    account_id: str = Field(min_length=1, max_length=256)
    surface: Surface
    country: str = Field(pattern=r"^[A-Z]{2}$")
    account_linked: bool
    started_at: datetime
    turns: list[Turn] = Field(min_length=1)
    gold: Gold | None = None

    @field_validator("country", mode="before")
    @classmethod
    def _upper_country(cls, v: Any) -> Any:
        return v.strip().upper() if isinstance(v, str) else v

    @field_validator("account_linked", mode="before")
    @classmethod
    def _strict_bool(cls, v: Any) -> Any:
        if not isinstance(v, bool):
            raise ValueError("must be a JSON boolean (true/false)")
        return v

    @field_validator("started_at")
    @classmethod
    def _tz_aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None or v.utcoffset() is None:
            raise ValueError("must be timezone-aware ISO 8601 (e.g. 2026-02-03T10:15:00Z)")
        return v

    def text(self, *, with_roles: bool = True) -> str:
        """The conversation as one text (roles and non-text modalities marked)."""
        return render_turns([t.model_dump() for t in self.turns], with_roles=with_roles)

    def content_hash(self) -> str:
        """sha256 of the turns (role, modality, text) — what the labels depend on."""
        payload = json.dumps(
            [[t.role, t.modality, t.text] for t in self.turns],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def render_turn(turn: Mapping[str, Any], *, with_role: bool = True) -> str:
    """One turn as text: ``role: text`` (``role/modality: text`` for voice, image and video)."""
    if not with_role:
        return str(turn["text"])
    modality = turn.get("modality") or "text"
    tag = turn["role"] if modality == "text" else f"{turn['role']}/{modality}"
    return f"{tag}: {turn['text']}"


def render_turns(turns: Iterable[Mapping[str, Any]], *, with_roles: bool = True) -> str:
    """The one text rendering of a conversation used by embeddings, prompts and classifiers.

    ``turns`` are dicts with role, text and optional modality (e.g. ``ConversationRow.redacted_turns``);
    one :func:`render_turn` line per turn.
    """
    return "\n".join(render_turn(t, with_role=with_roles) for t in turns)


@dataclass(frozen=True)
class QuarantinedRecord:
    source: str
    line: int
    conversation_id: str | None
    field: str | None
    reason: str
    raw: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "source": self.source,
                "line": self.line,
                "conversation_id": self.conversation_id,
                "field": self.field,
                "reason": self.reason,
                "raw": self.raw[:2000],
            },
            ensure_ascii=False,
        )

    def describe(self) -> str:
        where = f"{self.source}:{self.line}"
        rid = f" record {self.conversation_id!r}" if self.conversation_id else ""
        fld = f" field {self.field!r}:" if self.field else ""
        return f"{where}{rid}{fld} {self.reason}"


@dataclass
class ReadStats:
    read: int = 0
    valid: int = 0
    quarantined: int = 0
    duplicates: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "valid": self.valid,
            "quarantined": self.quarantined,
            "duplicates": self.duplicates,
            "by_reason": dict(self.by_reason),
        }


@dataclass(frozen=True)
class Limits:
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
    max_turns: int = DEFAULT_MAX_TURNS


def _first_error(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or None
    msg = err.get("msg", "invalid")
    if err.get("type") == "missing":
        msg = "required field is missing"
    elif err.get("type") == "extra_forbidden":
        msg = "unknown field"
    elif err.get("type") == "enum":
        msg = f"unknown value {err.get('input')!r}; {msg}"
    elif err.get("type") == "too_short" and loc == "turns":
        msg = "turns must not be empty"
    return (loc or "record", msg)


def parse_record(
    obj: Any, *, source: str, line: int, raw: str, limits: Limits = Limits()
) -> Conversation | QuarantinedRecord:
    """Validate one decoded JSON value; never raises for bad data."""
    cid = obj.get("conversation_id") if isinstance(obj, dict) else None
    cid = cid if isinstance(cid, str) else None
    if not isinstance(obj, dict):
        return QuarantinedRecord(source, line, None, None, "record is not a JSON object", raw)
    try:
        rec = Conversation.model_validate(obj)
    except ValidationError as exc:
        fld, msg = _first_error(exc)
        return QuarantinedRecord(source, line, cid, fld, msg, raw)
    if len(rec.turns) > limits.max_turns:
        return QuarantinedRecord(
            source,
            line,
            cid,
            "turns",
            f"{len(rec.turns)} turns exceed the limit of {limits.max_turns}",
            raw,
        )
    for i, t in enumerate(rec.turns):
        if len(t.text) > limits.max_text_chars:
            return QuarantinedRecord(
                source,
                line,
                cid,
                f"turns.{i}.text",
                f"text of {len(t.text)} chars exceeds the limit of {limits.max_text_chars}",
                raw[:2000],
            )
        if not t.text.strip():
            return QuarantinedRecord(source, line, cid, f"turns.{i}.text", "empty text", raw)
    return rec


def _iter_jsonl(path: Path) -> Iterator[tuple[int, str]]:
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                yield lineno, line.rstrip("\n")


def _iter_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq  # local import: pyarrow is heavy

    pf = pq.ParquetFile(path)
    row = 0
    for batch in pf.iter_batches(batch_size=1024):
        for obj in batch.to_pylist():
            row += 1
            yield row, obj


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    return obj


def read_records(
    paths: Iterable[Path],
    *,
    limits: Limits = Limits(),
    stats: ReadStats | None = None,
    seen_ids: set[str] | None = None,
) -> Iterator[Conversation | QuarantinedRecord]:
    """Stream records from JSONL/Parquet files (constant memory apart from the seen-id set)."""
    stats = stats if stats is not None else ReadStats()
    seen = seen_ids if seen_ids is not None else set()
    for path in paths:
        path = Path(path)
        source = str(path)
        if path.suffix == ".parquet":
            rows: Iterator[tuple[int, Any]] = ((n, _jsonable(o)) for n, o in _iter_parquet(path))
            items: Iterator[tuple[int, Any, str]] = (
                (n, o, json.dumps(o, ensure_ascii=False)) for n, o in rows
            )
        else:
            items = _decode_lines(_iter_jsonl(path))
        for lineno, obj, raw in items:
            stats.read += 1
            if obj is _INVALID_JSON:
                q: Conversation | QuarantinedRecord = QuarantinedRecord(
                    source, lineno, None, None, f"invalid JSON: {raw[1]}", raw[0]
                )
            else:
                q = parse_record(obj, source=source, line=lineno, raw=raw, limits=limits)
            if isinstance(q, Conversation):
                if q.conversation_id in seen:
                    stats.duplicates += 1
                    q = QuarantinedRecord(
                        source,
                        lineno,
                        q.conversation_id,
                        "conversation_id",
                        "duplicate conversation_id (first occurrence kept)",
                        raw if isinstance(raw, str) else "",
                    )
                else:
                    seen.add(q.conversation_id)
                    stats.valid += 1
                    yield q
                    continue
            stats.quarantined += 1
            stats.by_reason[_reason_key(q)] += 1
            yield q


_INVALID_JSON = object()


def _decode_lines(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, Any, Any]]:
    for lineno, line in lines:
        try:
            yield lineno, json.loads(line), line
        except json.JSONDecodeError as exc:
            yield lineno, _INVALID_JSON, (line, f"{exc.msg} at column {exc.colno}")


def _reason_key(q: QuarantinedRecord) -> str:
    if q.reason.startswith("invalid JSON"):
        return "invalid_json"
    if q.reason.startswith("duplicate"):
        return "duplicate_id"
    if "exceed" in q.reason:
        return "oversized"
    if q.field == "turns" and "empty" in q.reason:
        return "empty_turns"
    if q.field == "surface":
        return "unknown_surface"
    if q.field == "started_at" and "timezone" in q.reason:
        return "naive_datetime"
    if q.reason == "required field is missing":
        return "missing_field"
    return "invalid_field"


class QuarantineWriter:
    """Appends quarantined records to a JSONL file (opened lazily, closed by the context)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._fh: Any = None

    def write(self, q: QuarantinedRecord) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a", encoding="utf-8")
        self._fh.write(q.to_json() + "\n")
        self.count += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> QuarantineWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def split_valid(
    items: Iterable[Conversation | QuarantinedRecord], quarantine: QuarantineWriter | None
) -> Iterator[Conversation]:
    """Yield valid conversations; send the rest to the quarantine writer."""
    for it in items:
        if isinstance(it, Conversation):
            yield it
        elif quarantine is not None:
            quarantine.write(it)
