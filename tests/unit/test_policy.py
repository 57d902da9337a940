from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labeling.policy import (
    DEFAULT_POLICY_PATH,
    ISO_COUNTRIES,
    ExclusionReason,
    PolicyError,
    load_policy,
)
from labeling.records import Conversation
from tests.conftest import make_record

POLICY = load_policy()
EU = {
    "AT",
    "BE",
    "BG",
    "HR",
    "CY",
    "CZ",
    "DK",
    "EE",
    "FI",
    "FR",
    "DE",
    "GR",
    "HU",
    "IE",
    "IT",
    "LV",
    "LT",
    "LU",
    "MT",
    "NL",
    "PL",
    "PT",
    "RO",
    "SK",
    "SI",
    "ES",
    "SE",
}


def test_policy_lists_every_excluded_country_explicitly():
    assert POLICY.excluded_countries == EU | {"IS", "LI", "NO", "GB", "KR"}
    assert len(EU) == 27


def test_seven_categories_with_descriptions():
    assert POLICY.categories == (
        "religion",
        "sexual_orientation",
        "political_views",
        "health",
        "ethnicity",
        "philosophical_beliefs",
        "union_membership",
    )
    assert all(len(d) > 40 for d in POLICY.describe_categories().values())


def test_version_is_sha256_of_bytes(tmp_path):
    copy = tmp_path / "p.yaml"
    shutil.copy(DEFAULT_POLICY_PATH, copy)
    assert load_policy(copy).version == POLICY.version and len(POLICY.version) == 64
    copy.write_text(copy.read_text() + "\n# edited\n")
    assert load_policy(copy).version != POLICY.version


def test_policy_is_extendable_with_an_eighth_category(tmp_path):
    data = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    data["sensitive_categories"]["criminal_record"] = {
        "label": "Criminal record",
        "description": "Criminal convictions, arrests or offences of anyone.",
    }
    p = tmp_path / "p8.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    pol = load_policy(p)
    assert len(pol.categories) == 8 and pol.categories[-1] == "criminal_record"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["excluded_countries"]["other"].append("UK"), "not an ISO"),
        (lambda d: d.update(effective_date="soon"), "effective_date"),
        (lambda d: d.update(enabled_surfaces=["hologram"]), "enabled_surfaces"),
        (lambda d: d.update(surprise=True), "surprise"),
        (
            lambda d: d["sensitive_categories"].update(
                {"Bad Key": {"label": "x", "description": "long enough text"}}
            ),
            "Bad Key",
        ),
    ],
)
def test_invalid_policy_rejected_with_clear_message(tmp_path, mutate, message):
    data = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    mutate(data)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(PolicyError, match=message):
        load_policy(p)


def test_eligible_record():
    res = POLICY.check(Conversation.model_validate(make_record()))
    assert res.eligible and res.reason is None


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"country": "DE"}, ExclusionReason.REGION),
        ({"country": "gb"}, ExclusionReason.REGION),
        ({"country": "KR"}, ExclusionReason.REGION),
        ({"country": "NO"}, ExclusionReason.REGION),
        ({"country": "XX"}, ExclusionReason.REGION),
        ({"country": None}, ExclusionReason.REGION),
        ({"country": ""}, ExclusionReason.REGION),
        ({"account_linked": False}, ExclusionReason.UNLINKED_ACCOUNT),
        ({"account_linked": "true"}, ExclusionReason.UNLINKED_ACCOUNT),
        ({"started_at": "2025-12-15T23:59:59Z"}, ExclusionReason.BEFORE_POLICY_DATE),
        ({"started_at": "2025-12-16T00:30:00+01:00"}, ExclusionReason.BEFORE_POLICY_DATE),
        ({"started_at": "2025-12-16T10:00:00"}, ExclusionReason.INVALID_RECORD),
        ({"started_at": "not a date"}, ExclusionReason.INVALID_RECORD),
        ({"started_at": None}, ExclusionReason.INVALID_RECORD),
        ({"surface": "hologram"}, ExclusionReason.SURFACE_DISABLED),
        ({"surface": None}, ExclusionReason.SURFACE_DISABLED),
    ],
)
def test_gate_fails_closed(overrides, reason):
    res = POLICY.check(make_record(**overrides))
    assert not res.eligible and res.reason == reason and res.detail


def test_gate_on_policy_date_boundary():
    assert POLICY.check(make_record(started_at="2025-12-16T00:00:00Z")).eligible


def test_gate_rejects_non_mapping():
    assert POLICY.check(["not", "a", "record"]).reason == ExclusionReason.INVALID_RECORD  # type: ignore[arg-type]


def test_disabled_surface(tmp_path):
    data = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    data["enabled_surfaces"] = ["assistant_chat"]
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(data))
    res = load_policy(p).check(make_record(surface="imagine"))
    assert res.reason == ExclusionReason.SURFACE_DISABLED and "disabled" in res.detail


anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)
dates = st.one_of(
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),
    st.text(max_size=30),
    anything,
)
record_like = st.fixed_dictionaries(
    {},
    optional={
        "conversation_id": anything,
        "account_id": anything,
        "surface": st.sampled_from(["assistant_chat", "smart_glasses", "vibes", "imagine"])
        | anything,
        "country": st.sampled_from(sorted(ISO_COUNTRIES)) | anything,
        "account_linked": st.booleans() | anything,
        "started_at": dates,
        "turns": anything,
    },
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    rec=record_like,
    country=st.sampled_from(sorted(EU | {"IS", "LI", "NO", "GB", "KR"})),
    case=st.sampled_from([str.upper, str.lower, lambda s: f" {s} "]),
)
def test_property_excluded_country_never_eligible(rec, country, case):
    rec = dict(rec, country=case(country))
    assert not POLICY.check(rec).eligible


@settings(max_examples=300)
@given(rec=record_like, linked=st.sampled_from([False, None, 0, 1, "true", "True", [], {}]))
def test_property_unlinked_account_never_eligible(rec, linked):
    rec = dict(rec, account_linked=linked)
    assert not POLICY.check(rec).eligible


@settings(max_examples=200)
@given(rec=record_like)
def test_property_missing_fields_fail_closed(rec):
    required = {"country", "account_linked", "started_at", "surface"}
    if not required.issubset(rec):
        assert not POLICY.check(rec).eligible


@settings(max_examples=200)
@given(delta=st.integers(min_value=1, max_value=10**8))
def test_property_before_policy_date_never_eligible(delta):
    ts = datetime(2025, 12, 16, tzinfo=UTC) - timedelta(seconds=delta)
    assert not POLICY.check(make_record(started_at=ts.isoformat())).eligible


def test_default_policy_path_is_in_repo():
    assert (
        DEFAULT_POLICY_PATH.is_file() and Path(__file__).parents[2] in DEFAULT_POLICY_PATH.parents
    )
