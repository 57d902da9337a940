"""The conversation record contract, a streaming reader and the quarantine.

One record per conversation (JSONL or Parquet), exactly the format of the development data:
``conversation_id, account_id, surface, country, account_linked, started_at, turns[], gold?``.

Reading never stops on a bad record: every problem becomes a :class:`QuarantinedRecord` naming the
source file, the line (or Parquet row) number, the field and a human-readable reason; the caller
writes them to the quarantine JSONL and the run continues. That includes lines the JSON parser
itself cannot take (nesting too deep, an integer too long to convert), strings that are not valid
Unicode (a lone surrogate such as ``"\\ud800"``) and any unexpected error while reading one line.
Duplicate ``conversation_id`` values are detected (the first occurrence wins, later ones are
quarantined as duplicates) and counted.

Unknown fields (:func:`unknown_fields`): a field the contract does not know is ignored (never
stored, never scored) and counted per name in :attr:`ReadStats.unknown_fields`, so an upstream
team adding a field does not stop the pipeline. Two kinds are rejected instead (``invalid_record``,
fail closed): a field whose name looks like a label or a targeting restriction (``sensitive``,
``labels``, ``consent``, ``opt_out``, ...) outside ``gold``, and a variant spelling of a contract
field (``conversationId``, ``Gold``); unknown fields inside ``gold`` are rejected too.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
DEFAULT_MAX_CLOCK_SKEW_S = 300.0
"""How far ``started_at`` may lie ahead of this machine's clock (seconds)."""
MAX_UNKNOWN_FIELD_NAMES = 100
"""Distinct unknown field names counted in :class:`ReadStats` (the rest go under ``...``)."""


class Surface(StrEnum):
    ASSISTANT_CHAT = "assistant_chat"
    SMART_GLASSES = "smart_glasses"
    VIBES = "vibes"
    IMAGINE = "imagine"


class Turn(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    role: Literal["user", "assistant"]
    text: str
    modality: Literal["text", "voice", "image", "video"] = "text"


class Gold(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sensitive: list[str] = Field(default_factory=list)
    interests: list[str] | None = None  # None = unknown (not scored)


class Conversation(BaseModel):
    """One conversation as it arrives from a product surface.

    Unknown fields are dropped here; :func:`parse_record` screens and counts them first."""

    model_config = ConfigDict(extra="ignore", frozen=True)

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
        # Only ASCII is upper-cased: "ß".upper() is "SS" (South Sudan), "ı".upper() is "I".
        return v.strip().upper() if isinstance(v, str) and v.isascii() else v

    @field_validator("account_linked", mode="before")
    @classmethod
    def _strict_bool(cls, v: Any) -> Any:
        if not isinstance(v, bool):
            raise ValueError("must be a JSON boolean (true/false)")
        return v

    @field_validator("started_at", mode="before")
    @classmethod
    def _iso_string(cls, v: Any) -> Any:
        # pydantic would take 1767225600 or "1767225600" as a Unix time: the contract is ISO 8601.
        if not isinstance(v, str):
            raise ValueError(
                f"must be an ISO 8601 string (e.g. 2026-02-03T10:15:00Z), not a JSON "
                f"{_json_type(v)}"
            )
        if not _ISO_DATETIME.match(v.strip()):
            raise ValueError("must be ISO 8601 (e.g. 2026-02-03T10:15:00Z)")
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


_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if v is None:
        return "null"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def is_valid_unicode(s: str) -> bool:
    """False for a string that cannot be written as UTF-8 (a lone surrogate from ``"\\ud800"``)."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(s: str) -> str:
    """``s`` with lone surrogates written as ``\\udXXX`` escapes: safe to log, hash and return."""
    return s if is_valid_unicode(s) else s.encode("utf-8", "backslashreplace").decode("utf-8")


def render_turn(turn: Mapping[str, Any], *, with_role: bool = True) -> str:
    """One turn as text: ``role: text`` (``role/modality: text`` for voice, image and video)."""
    if not with_role:
        return str(turn["text"])
    modality = turn.get("modality") or "text"
    tag = turn["role"] if modality == "text" else f"{turn['role']}/{modality}"
    return f"{tag}: {turn['text']}"


# what render_turn writes before a turn's text: "user: ", "assistant/voice: "
_ROLE_TAG = re.compile(r"([a-z_]+(?:/[a-z_]+)?): ")


def split_role_tag(line: str) -> tuple[str, str]:
    """``(tag, text)`` of a line :func:`render_turn` wrote (``("user", "hi")`` for ``"user: hi"``);
    ``("", line)`` for a line without a role tag."""
    m = _ROLE_TAG.match(line)
    return (m.group(1), line[m.end() :]) if m else ("", line)


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
        """One JSON line; strings that are not valid Unicode are written escaped."""
        return json.dumps(
            {
                "source": printable(self.source),
                "line": self.line,
                "conversation_id": _opt_printable(self.conversation_id),
                "field": _opt_printable(self.field),
                "reason": printable(self.reason),
                "raw": printable(self.raw[:2000]),
            },
            ensure_ascii=False,
        )

    def describe(self) -> str:
        where = f"{printable(self.source)}:{self.line}"
        rid = f" record {printable(self.conversation_id)!r}" if self.conversation_id else ""
        fld = f" field {printable(self.field)!r}:" if self.field else ""
        return f"{where}{rid}{fld} {printable(self.reason)}"


def _opt_printable(s: str | None) -> str | None:
    return printable(s) if s is not None else None


@dataclass
class ReadStats:
    read: int = 0
    valid: int = 0
    quarantined: int = 0
    duplicates: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    unknown_fields: Counter[str] = field(default_factory=Counter)
    """Ignored unknown fields: name (``turns[].x`` inside a turn) -> records that had it."""

    def count_unknown(self, names: Iterable[str]) -> None:
        for name in names:
            if name in self.unknown_fields or len(self.unknown_fields) < MAX_UNKNOWN_FIELD_NAMES:
                self.unknown_fields[name] += 1
            else:
                self.unknown_fields["..."] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "valid": self.valid,
            "quarantined": self.quarantined,
            "duplicates": self.duplicates,
            "by_reason": dict(self.by_reason),
            "unknown_fields": dict(self.unknown_fields),
        }


@dataclass(frozen=True)
class Limits:
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
    max_turns: int = DEFAULT_MAX_TURNS
    max_clock_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S


def _first_error(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or None
    msg = err.get("msg", "invalid")
    if err.get("type") == "missing":
        msg = "required field is missing"
    elif err.get("type") == "extra_forbidden":
        msg = "unknown field"
    elif err.get("type") == "string_unicode":
        msg = "not valid Unicode (lone surrogate)"
    elif err.get("type") == "enum":
        msg = f"unknown value {err.get('input')!r}; {msg}"
    elif err.get("type") == "too_short" and loc == "turns":
        msg = "turns must not be empty"
    return (loc or "record", msg)


_RECORD_FIELDS = frozenset(Conversation.model_fields)
_TURN_FIELDS = frozenset(Turn.model_fields)
_LABEL_WORDS = frozenset(
    {
        "label", "labels", "gold", "sensitive", "sensitivity", "category", "categories",
        "interest", "interests", "consent", "optout", "restricted", "restriction", "minor",
        "minors", "donottarget", "nontargetable", "targetable", "pii",
    }
)  # fmt: skip


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _words(name: str) -> set[str]:
    """``doNotTarget`` / ``opt_out`` / ``user-labels`` -> words, plus adjacent pairs joined."""
    parts = [p.lower() for p in re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", name)]
    joined = {"".join(parts[i : i + n]) for n in (2, 3) for i in range(len(parts) - n + 1)}
    return set(parts) | joined


_NORMALISED_FIELDS = {_norm(f): f for f in _RECORD_FIELDS | _TURN_FIELDS}


def _unknown_problem(name: str, where: str) -> str | None:
    """Why an unknown field name rejects the record, or None if it is ignored."""
    known = _NORMALISED_FIELDS.get(_norm(name))
    if known is not None:
        return f"unknown field {printable(name)!r}{where}: did you mean {known!r}?"
    if _words(name) & _LABEL_WORDS:
        return (
            f"unknown field {printable(name)!r}{where} looks like a label or a targeting "
            "restriction; labels go in 'gold'"
        )
    return None


def unknown_fields(obj: Mapping[str, Any]) -> tuple[list[str], tuple[str, str] | None]:
    """``(ignored field names, (field, reason) of the first rejected one or None)``.

    Ignored: any unknown field of the record or of a turn (reported as ``turns[].name``).
    Rejected: a name that looks like a label / restriction or a variant spelling of a contract
    field, and any unknown field inside ``gold``.
    """
    ignored: list[str] = []
    for name in obj:
        if name in _RECORD_FIELDS:
            continue
        problem = _unknown_problem(str(name), "")
        if problem is not None:
            return ignored, (printable(str(name)), problem)
        ignored.append(printable(str(name))[:64])
    turns = obj.get("turns")
    if isinstance(turns, list):
        seen: set[str] = set()
        for i, t in enumerate(turns):
            if not isinstance(t, Mapping):
                continue
            for name in t:
                if name in _TURN_FIELDS or name in seen:
                    continue
                problem = _unknown_problem(str(name), " in a turn")
                if problem is not None:
                    return ignored, (f"turns.{i}.{printable(str(name))}", problem)
                seen.add(name)
                ignored.append("turns[]." + printable(str(name))[:64])
    gold = obj.get("gold")
    if isinstance(gold, Mapping):
        for name in gold:
            if name not in Gold.model_fields:
                return ignored, (f"gold.{printable(str(name))}", "unknown field in gold")
    return ignored, None


def _invalid_unicode_field(rec: Conversation) -> str | None:
    """The first contract field that holds a string that is not valid Unicode."""
    for name in ("conversation_id", "account_id"):
        if not is_valid_unicode(getattr(rec, name)):
            return name
    for i, t in enumerate(rec.turns):
        if not is_valid_unicode(t.text):
            return f"turns.{i}.text"
    if rec.gold is not None:
        for name in ("sensitive", "interests"):
            for j, v in enumerate(getattr(rec.gold, name) or ()):
                if not is_valid_unicode(v):
                    return f"gold.{name}.{j}"
    return None


def parse_record(
    obj: Any,
    *,
    source: str,
    line: int,
    raw: str,
    limits: Limits = Limits(),
    stats: ReadStats | None = None,
) -> Conversation | QuarantinedRecord:
    """Validate one decoded JSON value; never raises (an unexpected error quarantines the record).

    ``stats``: where ignored unknown fields are counted."""
    cid = obj.get("conversation_id") if isinstance(obj, dict) else None
    cid = printable(cid) if isinstance(cid, str) else None
    try:
        return _parse_record(
            obj, cid, source=source, line=line, raw=raw, limits=limits, stats=stats
        )
    except Exception as exc:  # a bug or an input nobody foresaw: this record only
        return QuarantinedRecord(
            source, line, cid, None, f"unreadable record ({type(exc).__name__})", raw
        )


def _parse_record(
    obj: Any,
    cid: str | None,
    *,
    source: str,
    line: int,
    raw: str,
    limits: Limits,
    stats: ReadStats | None,
) -> Conversation | QuarantinedRecord:
    if not isinstance(obj, dict):
        return QuarantinedRecord(source, line, None, None, "record is not a JSON object", raw)
    ignored, rejected = unknown_fields(obj)
    if rejected is not None:
        return QuarantinedRecord(source, line, cid, rejected[0], rejected[1], raw)
    try:
        rec = Conversation.model_validate(obj)
    except ValidationError as exc:
        fld, msg = _first_error(exc)
        return QuarantinedRecord(source, line, cid, fld, msg, raw)
    bad_unicode = _invalid_unicode_field(rec)
    if bad_unicode is not None:
        return QuarantinedRecord(
            source, line, cid, bad_unicode, "not valid Unicode (lone surrogate)", raw
        )
    latest = datetime.now(UTC) + timedelta(seconds=limits.max_clock_skew_s)
    if rec.started_at > latest:
        return QuarantinedRecord(
            source,
            line,
            cid,
            "started_at",
            f"is in the future ({rec.started_at.isoformat()}; later than now + "
            f"{limits.max_clock_skew_s:g} s)",
            raw,
        )
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
    if stats is not None and ignored:
        stats.count_unknown(ignored)
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
    """Stream records from JSONL/Parquet files (constant memory apart from the seen-id set).

    Never raises for a bad line: whatever goes wrong with one line (or Parquet row) becomes a
    :class:`QuarantinedRecord` and the next line is read. A file that cannot be read any further
    (e.g. a corrupt Parquet row group) is quarantined from that point on, with its error."""
    stats = stats if stats is not None else ReadStats()
    seen = seen_ids if seen_ids is not None else set()
    for path in paths:
        path = Path(path)
        source = str(path)
        items = _parquet_items(path) if path.suffix == ".parquet" else _decode_lines(path)
        for lineno, obj, raw in items:
            stats.read += 1
            q = _one(obj, raw, source=source, lineno=lineno, limits=limits, stats=stats, seen=seen)
            if isinstance(q, Conversation):
                stats.valid += 1
            else:
                stats.quarantined += 1
                stats.by_reason[_reason_key(q)] += 1
            yield q


def _one(
    obj: Any,
    raw: str,
    *,
    source: str,
    lineno: int,
    limits: Limits,
    stats: ReadStats,
    seen: set[str],
) -> Conversation | QuarantinedRecord:
    if isinstance(obj, _Undecodable):
        return QuarantinedRecord(source, lineno, None, None, f"invalid JSON: {obj.reason}", raw)
    q = parse_record(obj, source=source, line=lineno, raw=raw, limits=limits, stats=stats)
    if isinstance(q, Conversation):
        if q.conversation_id in seen:
            stats.duplicates += 1
            return QuarantinedRecord(
                source,
                lineno,
                q.conversation_id,
                "conversation_id",
                "duplicate conversation_id (first occurrence kept)",
                raw,
            )
        seen.add(q.conversation_id)
    return q


class InvalidJSONError(ValueError):
    """A line the JSON parser cannot take; the message says why (no input echoed)."""


def loads_json(text: str | bytes) -> Any:
    """``json.loads`` whose every failure is an :class:`InvalidJSONError` with a short reason:
    syntax errors, nesting too deep for the parser (RecursionError), numbers too long to convert
    (ValueError from the integer digit limit), bytes that are not UTF-8."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidJSONError(f"{exc.msg} at column {exc.colno}") from None
    except UnicodeDecodeError:
        raise InvalidJSONError("not UTF-8") from None
    except RecursionError:
        raise InvalidJSONError("nested too deeply to parse") from None
    except ValueError as exc:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise InvalidJSONError(f"number too long ({str(exc).split(':')[0]})") from None


@dataclass(frozen=True)
class _Undecodable:
    reason: str


def _decode_lines(path: Path) -> Iterator[tuple[int, Any, str]]:
    for lineno, line in _iter_jsonl(path):
        try:
            yield lineno, loads_json(line), line
        except InvalidJSONError as exc:
            yield lineno, _Undecodable(str(exc)), line


def _parquet_items(path: Path) -> Iterator[tuple[int, Any, str]]:
    row = 0
    try:
        for row, obj in _iter_parquet(path):
            try:
                o = _jsonable(obj)
                raw = json.dumps(o, ensure_ascii=False, default=str)
            except Exception as exc:  # e.g. a value nested deeper than the recursion limit
                o, raw = _Undecodable(f"unreadable row ({type(exc).__name__})"), ""
            yield row, o, raw
    except Exception as exc:
        yield row + 1, _Undecodable(f"file unreadable from here on ({type(exc).__name__}: "
                                    f"{str(exc)[:200]})"), ""  # fmt: skip


def _reason_key(q: QuarantinedRecord) -> str:
    if q.reason.startswith("invalid JSON"):
        return "invalid_json"
    if q.reason.startswith("duplicate"):
        return "duplicate_id"
    if q.reason.startswith("unreadable"):
        return "unreadable"
    if q.reason.startswith("not valid Unicode"):
        return "invalid_unicode"
    if q.reason.startswith("unknown field"):
        return "unknown_field"
    if q.field == "started_at" and q.reason.startswith("is in the future"):
        return "future_datetime"
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

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def size(self) -> int:
        """Bytes in the file now (after :meth:`flush`); 0 if it does not exist."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

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
