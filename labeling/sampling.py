"""Sampling: read conversations, dedupe against the label store, gate, redact, store.

This produces the ``conversations`` rows every later stage works on. Ineligible conversations are
stored with their exclusion reason and **without text** (their content is never used). Eligible
ones are stored redacted only.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labeling.language import primary_language, turn_languages, unsupported
from labeling.policy import Policy
from labeling.records import (
    Conversation,
    Limits,
    QuarantinedRecord,
    QuarantineWriter,
    ReadStats,
    read_records,
    split_valid,
)
from labeling.segments import redact_turns
from labelloop.store import LabelStore


@dataclass
class SampleReport:
    read: dict[str, Any] = field(default_factory=dict)
    quarantined: int = 0
    quarantine_path: str | None = None
    already_known: int = 0
    sampled: int = 0
    inserted: int = 0
    eligible: int = 0
    by_surface: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    redactions: Counter[str] = field(default_factory=Counter)
    # main language of the eligible conversations, and how many have a turn in a language the
    # filter does not judge (policy supported_languages): the filter would refuse those
    by_language: Counter[str] = field(default_factory=Counter)
    unsupported_language: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "quarantined": self.quarantined,
            "quarantine_path": self.quarantine_path,
            "already_known": self.already_known,
            "sampled": self.sampled,
            "inserted": self.inserted,
            "eligible": self.eligible,
            "by_surface": dict(self.by_surface),
            "by_reason": dict(self.by_reason),
            "redactions": dict(self.redactions),
            "by_language": dict(self.by_language),
            "unsupported_language": self.unsupported_language,
        }


def account_hash(account_id: str) -> str:
    """The label store keeps a hash of the account id, never the id itself."""
    return hashlib.sha256(("labelloop:" + account_id).encode()).hexdigest()


def stratified_sample(
    convs: Sequence[Conversation], cap_per_surface: int | None, seed: int
) -> list[Conversation]:
    """At most ``cap_per_surface`` conversations per surface, chosen uniformly with a seed."""
    if cap_per_surface is None:
        return list(convs)
    by_surface: dict[str, list[Conversation]] = defaultdict(list)
    for c in convs:
        by_surface[c.surface.value].append(c)
    rng = random.Random(seed)
    out: list[Conversation] = []
    for surface in sorted(by_surface):
        group = by_surface[surface]
        out.extend(group if len(group) <= cap_per_surface else rng.sample(group, cap_per_surface))
    return out


def to_row(conv: Conversation, policy: Policy, source: str, run_id: str | None) -> dict[str, Any]:
    gate = policy.check(conv)
    row: dict[str, Any] = {
        "conversation_id": conv.conversation_id,
        "account_hash": account_hash(conv.account_id),
        "surface": conv.surface.value,
        "country": conv.country,
        "account_linked": conv.account_linked,
        "started_at": conv.started_at,
        "eligible": gate.eligible,
        "exclusion_reason": gate.reason.value if gate.reason else None,
        "exclusion_detail": gate.detail or None,
        "content_hash": conv.content_hash(),
        "source": source,
        "source_gold": conv.gold.model_dump() if conv.gold else None,
        "policy_version": policy.version,
        "run_id": run_id,
        "redacted_turns": None,
        "redaction_counts": None,
        "languages": None,
        "language": None,
    }
    if gate.eligible:
        langs = turn_languages((t.text for t in conv.turns), supported=policy.supported_languages)
        row["languages"] = list(langs)
        row["language"] = primary_language(langs)
        turns, counts = redact_turns(t.model_dump() for t in conv.turns)
        row["redacted_turns"] = turns
        row["redaction_counts"] = dict(counts)
    return row


def sample_into_store(
    paths: Iterable[Path],
    *,
    policy: Policy,
    store: LabelStore,
    quarantine_path: Path,
    limits: Limits = Limits(),
    cap_per_surface: int | None = None,
    seed: int = 0,
    run_id: str | None = None,
    batch_size: int = 1000,
) -> SampleReport:
    """Read -> dedupe against the store -> (stratified sample) -> gate -> redact -> store."""
    report = SampleReport(quarantine_path=str(quarantine_path))
    stats = ReadStats()
    paths = [Path(p) for p in paths]
    source = ",".join(str(p) for p in paths)
    with QuarantineWriter(quarantine_path) as qw:
        valid = list(split_valid(read_records(paths, limits=limits, stats=stats), qw))
        report.read = stats.as_dict()
        known = store.known_ids(c.conversation_id for c in valid)
        report.already_known = len(known)
        fresh = [c for c in valid if c.conversation_id not in known]
        chosen = stratified_sample(fresh, cap_per_surface, seed)
        report.sampled = len(chosen)
        for i in range(0, len(chosen), batch_size):
            rows = []
            for c in chosen[i : i + batch_size]:
                try:
                    rows.append(to_row(c, policy, source, run_id))
                except Exception as exc:  # one record that breaks the gate or redaction
                    qw.write(
                        QuarantinedRecord(
                            source,
                            0,
                            c.conversation_id,
                            None,
                            f"unreadable record ({type(exc).__name__} while gating/redacting)",
                            "",
                        )
                    )
            for r in rows:
                report.by_surface[r["surface"]] += 1
                report.by_reason[r["exclusion_reason"] or "eligible"] += 1
                report.eligible += int(r["eligible"])
                report.redactions.update(r["redaction_counts"] or {})
                if r["eligible"]:
                    report.by_language[r["language"] or "und"] += 1
                    report.unsupported_language += bool(
                        unsupported(r["languages"] or [], policy.supported_languages)
                    )
            inserted, _ = store.add_conversations(rows)
            report.inserted += inserted
        report.quarantined = qw.count
    return report


@dataclass(frozen=True)
class GatedRecords:
    """Rows of records read, gated and redacted (not deduped or sampled), with the counts."""

    rows: list[dict[str, Any]]
    read: int
    quarantined: int
    quarantine_path: str | None  # None when nothing was quarantined
    by_reason: dict[str, int]

    @property
    def eligible(self) -> int:
        return self.by_reason.get("eligible", 0)

    @property
    def eligible_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["eligible"]]


def gate_records(
    paths: Sequence[Path],
    policy: Policy,
    *,
    limits: Limits,
    quarantine_path: Path,
    limit: int | None = None,
    run_id: str | None = None,
) -> GatedRecords:
    """Read, quarantine, gate and redact every record of ``paths`` (:func:`to_row`), up to the
    ``limit``-th eligible one; nothing is stored."""
    stats = ReadStats()
    rows: list[dict[str, Any]] = []
    reasons: Counter[str] = Counter()
    source = ",".join(map(str, paths))
    with QuarantineWriter(quarantine_path) as qw:
        for conv in split_valid(read_records(paths, limits=limits, stats=stats), qw):
            row = to_row(conv, policy, source, run_id)
            reasons[row["exclusion_reason"] or "eligible"] += 1
            rows.append(row)
            if limit is not None and reasons["eligible"] >= limit:
                break
        quarantined = qw.count
    return GatedRecords(
        rows=rows,
        read=stats.read,
        quarantined=quarantined,
        quarantine_path=str(quarantine_path) if quarantined else None,
        by_reason=dict(reasons),
    )
