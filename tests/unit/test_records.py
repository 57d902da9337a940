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
    render_turn,
    split_role_tag,
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


# ---------------------------------------------------------------- adversarial lines

DEEP = "[" * 5000 + "]" * 5000
HUGE_INT = '{"conversation_id": "n", "x": ' + "9" * 5000 + "}"


@pytest.mark.parametrize(
    ("line", "field", "reason_key", "needle"),
    [
        (DEEP, None, "invalid_json", "nested too deeply"),
        (
            '{"conversation_id": "d", "turns": ' + "[" * 5000 + "]" * 5000 + "}",
            None,
            "invalid_json",
            "nested too deeply",
        ),
        (HUGE_INT, None, "invalid_json", "number too long"),
        (
            json.dumps(make_record(conversation_id="\ud800")),
            "conversation_id",
            "invalid_unicode",
            "lone surrogate",
        ),
        (
            json.dumps(make_record(turns=[{"role": "user", "text": "hi \udc00 there"}])),
            "turns.0.text",
            "invalid_unicode",
            "lone surrogate",
        ),
        (
            json.dumps(make_record(account_id="a\ud83d")),
            "account_id",
            "invalid_unicode",
            "lone surrogate",
        ),
        (
            json.dumps(make_record(gold={"sensitive": ["\udfff"], "interests": None})),
            "gold.sensitive.0",
            "invalid_unicode",
            "lone surrogate",
        ),
    ],
)
def test_lines_the_parser_cannot_take_are_quarantined_and_the_run_continues(
    write_jsonl, tmp_path, line, field, reason_key, needle
):
    path = write_jsonl(
        [make_record(conversation_id="ok-1"), line, make_record(conversation_id="ok-2")]
    )
    stats = ReadStats()
    qpath = tmp_path / "q.jsonl"
    with QuarantineWriter(qpath) as qw:
        good = list(split_valid(read_records([path], stats=stats), qw))
    assert [g.conversation_id for g in good] == ["ok-1", "ok-2"]
    assert (stats.read, stats.valid, stats.quarantined) == (3, 2, 1)
    assert stats.by_reason == {reason_key: 1}
    (row,) = [json.loads(x) for x in qpath.read_text(encoding="utf-8").splitlines()]
    assert row["line"] == 2 and row["field"] == field and needle in row["reason"]
    # what is written is valid UTF-8 and the surrogate is shown escaped, never raw
    qpath.read_bytes().decode("utf-8")
    if "\ud800" in line:
        assert row["conversation_id"] == "\\ud800"


def test_an_unexpected_error_quarantines_only_that_line(write_jsonl, monkeypatch):
    import labeling.records as records

    real = records.Conversation.model_validate

    def flaky(obj, *a, **kw):
        if obj.get("conversation_id") == "boom":
            raise RuntimeError("a bug nobody foresaw")
        return real(obj, *a, **kw)

    monkeypatch.setattr(records.Conversation, "model_validate", flaky)
    path = write_jsonl([make_record(conversation_id=c) for c in ("a", "boom", "b")])
    good, bad, stats = _read(path)
    assert [g.conversation_id for g in good] == ["a", "b"]
    assert bad[0].conversation_id == "boom" and "RuntimeError" in bad[0].reason
    assert stats.by_reason == {"unreadable": 1}


def test_corrupt_parquet_is_quarantined_not_raised(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist([make_record(conversation_id="p-0")]), path)
    data = path.read_bytes()
    path.write_bytes(data[:8] + b"\x00" * 64 + data[72:])
    good, bad, stats = _read(path)
    assert good == [] and len(bad) == 1 and "unreadable" in bad[0].reason
    assert stats.quarantined == 1


# ---------------------------------------------------------------- country, started_at


@pytest.mark.parametrize("country", ["ß", "ﬀ", "ı" + "t", "\u0130T"])
def test_non_ascii_country_is_not_upper_cased_into_another_country(write_jsonl, country):
    good, bad, _ = _read(write_jsonl([make_record(country=country)]))
    assert good == [] and bad[0].field == "country"


def test_lower_case_ascii_country_is_still_accepted(write_jsonl):
    good, _, _ = _read(write_jsonl([make_record(country=" us ")]))
    assert good[0].country == "US"


@pytest.mark.parametrize("value", [1767225600, 1767225600.5, "1767225600", True, None])
def test_started_at_must_be_an_iso_string(write_jsonl, value):
    good, bad, _ = _read(write_jsonl([make_record(started_at=value)]))
    assert good == [] and bad[0].field == "started_at"


def test_far_future_started_at_is_quarantined(write_jsonl):
    from datetime import UTC, datetime, timedelta

    soon = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    path = write_jsonl(
        [
            make_record(conversation_id="soon", started_at=soon),
            make_record(conversation_id="later", started_at=later),
            make_record(conversation_id="far", started_at="9999-12-31T23:59:59Z"),
        ]
    )
    good, bad, stats = _read(path)
    assert [g.conversation_id for g in good] == ["soon"]  # within the clock skew
    assert [(q.conversation_id, q.field) for q in bad] == [
        ("later", "started_at"),
        ("far", "started_at"),
    ]
    assert "future" in bad[0].reason and stats.by_reason == {"future_datetime": 2}
    good, bad, _ = _read(path, Limits(max_clock_skew_s=7200))
    assert [g.conversation_id for g in good] == ["soon", "later"]


# ---------------------------------------------------------------- unknown fields


def test_unknown_fields_are_ignored_and_counted(write_jsonl):
    recs = [
        make_record(conversation_id="a", client_version="4.2", locale="en-US"),
        make_record(
            conversation_id="b",
            locale="de-DE",
            turns=[{"role": "user", "text": "hello", "ts": 3, "turn_id": "t1"}],
        ),
        make_record(conversation_id="c"),
    ]
    good, bad, stats = _read(write_jsonl(recs))
    assert bad == [] and [g.conversation_id for g in good] == ["a", "b", "c"]
    assert stats.unknown_fields == {
        "client_version": 1,
        "locale": 2,
        "turns[].ts": 1,
        "turns[].turn_id": 1,
    }
    assert stats.as_dict()["unknown_fields"]["locale"] == 2
    # ignored means gone: never passed on to anything downstream
    assert "locale" not in good[0].model_dump() and "ts" not in good[1].turns[0].model_dump()


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"sensitive": ["health"]}, "sensitive"),
        ({"labels": ["Travel"]}, "labels"),
        ({"interest_ids": ["653"]}, "interest_ids"),
        ({"do_not_target": True}, "do_not_target"),
        ({"optOut": True}, "optOut"),
        ({"user_consent": "none"}, "user_consent"),
        ({"conversationId": "x"}, "conversationId"),
        ({"Gold": {"sensitive": []}}, "Gold"),
        ({"started-at": "2026-02-03T10:15:00Z"}, "started-at"),
    ],
)
def test_unknown_fields_that_look_like_labels_or_contract_fields_are_rejected(
    write_jsonl, extra, field
):
    good, bad, stats = _read(write_jsonl([make_record(**extra)]))
    assert good == [] and bad[0].field == field and "unknown field" in bad[0].reason
    assert stats.by_reason == {"unknown_field": 1}


def test_unknown_fields_in_gold_or_label_like_turn_fields_are_rejected(write_jsonl):
    good, bad, _ = _read(
        write_jsonl(
            [
                make_record(conversation_id="g", gold={"sensitive": [], "confidence": 0.2}),
                make_record(
                    conversation_id="t",
                    turns=[{"role": "user", "text": "hi", "sensitive": True}],
                ),
            ]
        )
    )
    assert good == []
    assert [q.field for q in bad] == ["gold.confidence", "turns.0.sensitive"]


def test_unknown_field_names_are_bounded(write_jsonl):
    from labeling.records import MAX_UNKNOWN_FIELD_NAMES

    recs = [make_record(conversation_id=f"r{i}", **{f"f{i}": 1}) for i in range(150)]
    good, _, stats = _read(write_jsonl(recs))
    assert len(good) == 150
    assert len(stats.unknown_fields) == MAX_UNKNOWN_FIELD_NAMES + 1
    assert stats.unknown_fields["..."] == 150 - MAX_UNKNOWN_FIELD_NAMES


def test_a_rendered_turn_splits_back_into_its_role_tag_and_text() -> None:
    for turn in ({"role": "user", "text": "Re: hi: there"},
                 {"role": "assistant", "modality": "voice", "text": "ok"}):  # fmt: skip
        tag, text = split_role_tag(render_turn(turn))
        assert text == turn["text"] and tag.split("/")[0] == turn["role"]
    assert split_role_tag("assistant/voice: ok")[0] == "assistant/voice"
    assert split_role_tag("no tag here: text") == ("", "no tag here: text")
