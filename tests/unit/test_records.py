from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labeling.records import (
    Conversation,
    Limits,
    QuarantinedRecord,
    QuarantineWriter,
    ReadStats,
    read_records,
    split_valid,
)
from tests.conftest import make_record


def _read(
    path: Path, limits: Limits = Limits()
) -> tuple[list[Conversation], list[QuarantinedRecord], ReadStats]:
    stats = ReadStats()
    items = list(read_records([path], limits=limits, stats=stats))
    good = [i for i in items if isinstance(i, Conversation)]
    bad = [i for i in items if isinstance(i, QuarantinedRecord)]
    return good, bad, stats


def test_valid_record_parses_with_default_modality(write_jsonl):
    good, bad, stats = _read(write_jsonl([make_record()]))
    assert bad == [] and len(good) == 1
    assert good[0].turns[0].modality == "text"
    assert good[0].started_at.tzinfo is not None
    assert stats.as_dict()["valid"] == 1


@pytest.mark.parametrize(
    ("line", "field", "reason_key", "needle"),
    [
        ("{not json", None, "invalid_json", "invalid JSON"),
        (
            json.dumps({k: v for k, v in make_record().items() if k != "country"}),
            "country",
            "missing_field",
            "missing",
        ),
        (
            json.dumps(make_record(account_linked="yes")),
            "account_linked",
            "invalid_field",
            "boolean",
        ),
        (json.dumps(make_record(turns=[])), "turns", "empty_turns", "empty"),
        (json.dumps(make_record(surface="telepathy")), "surface", "unknown_surface", "telepathy"),
        (
            json.dumps(make_record(started_at="2026-02-03T10:15:00")),
            "started_at",
            "naive_datetime",
            "timezone",
        ),
        (json.dumps(make_record(started_at="yesterday")), "started_at", "invalid_field", ""),
        (
            json.dumps(make_record(turns=[{"role": "robot", "text": "x"}])),
            "turns.0.role",
            "invalid_field",
            "",
        ),
        (
            json.dumps(make_record(turns=[{"role": "user", "text": "   "}])),
            "turns.0.text",
            "invalid_field",
            "empty",
        ),
        (json.dumps(make_record(country="Germany")), "country", "invalid_field", ""),
        (json.dumps([1, 2]), None, "invalid_field", "not a JSON object"),
    ],
)
def test_bad_records_are_quarantined_with_field_and_reason(
    write_jsonl, line, field, reason_key, needle
):
    path = write_jsonl(
        [make_record(conversation_id="ok-1"), line, make_record(conversation_id="ok-2")]
    )
    good, bad, stats = _read(path)
    # the run continues: both good records survive around the bad one
    assert [g.conversation_id for g in good] == ["ok-1", "ok-2"]
    assert len(bad) == 1
    q = bad[0]
    assert q.line == 2 and q.source == str(path)
    assert q.field == field
    assert needle.lower() in q.reason.lower()
    assert stats.by_reason == {reason_key: 1}
    assert str(path) in q.describe() and ":2" in q.describe()


def test_oversized_text_is_quarantined(write_jsonl):
    big = make_record(turns=[{"role": "user", "text": "x" * 501}])
    good, bad, stats = _read(write_jsonl([big]), Limits(max_text_chars=500))
    assert (
        good == []
        and bad[0].field == "turns.0.text"
        and "exceeds the limit of 500" in bad[0].reason
    )
    assert stats.by_reason == {"oversized": 1}


def test_duplicates_detected_first_wins(write_jsonl):
    a = make_record(conversation_id="dup")
    b = make_record(conversation_id="dup", country="CA")
    good, bad, stats = _read(write_jsonl([a, b]))
    assert [g.country for g in good] == ["US"]
    assert bad[0].reason.startswith("duplicate") and stats.duplicates == 1


def test_quarantine_writer_writes_jsonl_with_source_and_line(write_jsonl, tmp_path):
    path = write_jsonl([make_record(), "{oops"])
    qpath = tmp_path / "q" / "quarantine.jsonl"
    with QuarantineWriter(qpath) as qw:
        good = list(split_valid(read_records([path]), qw))
    assert len(good) == 1 and qw.count == 1
    row = json.loads(qpath.read_text().strip())
    assert row["source"] == str(path) and row["line"] == 2 and "invalid JSON" in row["reason"]


def test_parquet_input(tmp_path):
    recs = [make_record(conversation_id=f"p-{i}") for i in range(3)]
    recs[1]["surface"] = "unknown"
    table = pa.Table.from_pylist(recs)
    path = tmp_path / "in.parquet"
    pq.write_table(table, path)
    good, bad, _ = _read(path)
    assert [g.conversation_id for g in good] == ["p-0", "p-2"]
    assert bad[0].line == 2 and bad[0].field == "surface"


def test_reader_streams(tmp_path):
    path = tmp_path / "big.jsonl"
    with path.open("w") as fh:
        for i in range(5000):
            fh.write(json.dumps(make_record(conversation_id=f"s-{i}")) + "\n")
    it = read_records([path])
    first = next(it)  # a generator: nothing forces the whole file into memory
    assert isinstance(first, Conversation) and first.conversation_id == "s-0"


def test_content_hash_depends_on_turns_only():
    a = Conversation.model_validate(make_record())
    b = Conversation.model_validate(make_record(conversation_id="other", country="CA"))
    c = Conversation.model_validate(make_record(turns=[{"role": "user", "text": "different"}]))
    assert a.content_hash() == b.content_hash() != c.content_hash()
