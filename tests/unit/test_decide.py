"""Decisions: order of checks, fail-closed paths, input shapes, and the safety property."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments.dataset import snapshot_from_records
from experiments.registry import default_prototypes
from experiments.training import TrainConfig, train_filter
from labeling.policy import load_policy
from labeling.records import Conversation
from labeling.synth import generate
from labeling.taxonomy import load_taxonomy
from targeting.decide import Decision, decide_batch
from targeting.model import TargetingFilterModel
from targeting.scorer import ContentVerdict, HashingEmbedder, load_lexicon

POLICY = load_policy()


class FakeJudge:
    def __init__(self, verdict: ContentVerdict | None = None, fail_on: str | None = None) -> None:
        self.verdict = verdict or ContentVerdict((), {}, (("653", 0.9),))
        self.fail_on = fail_on
        self.calls = 0

    def judge_conversations(self, conversations: Sequence[Sequence[str]]) -> list[ContentVerdict]:
        self.calls += 1
        if self.fail_on is not None and any(self.fail_on in t for c in conversations for t in c):
            raise RuntimeError("boom")
        return [self.verdict for _ in conversations]


def _rec(make: Any, **kw: Any) -> dict[str, Any]:
    r = make(**kw)
    r.pop("gold", None)
    return r


def test_order_of_checks(record_factory: Any) -> None:
    recs = [
        _rec(record_factory, conversation_id="ok"),
        _rec(record_factory, conversation_id="de", country="DE"),
        _rec(record_factory, conversation_id="unl", account_linked=False),
        _rec(record_factory, conversation_id="old", started_at="2025-01-01T00:00:00Z"),
        {"conversation_id": "bad", "country": "DE"},  # invalid first, even if excluded
        "not a record",
    ]
    ds = decide_batch(recs, policy=POLICY, judge=FakeJudge(), model_version="7")
    assert [d.excluded_reason for d in ds] == [None, "region", "unlinked_account", "before_policy_date",
                                                "invalid_record", "invalid_record"]  # fmt: skip
    assert ds[0].eligible and ds[0].interests[0].id == "653"
    assert ds[4].conversation_id == "bad" and ds[5].conversation_id is None
    assert all(d.model_version == "7" and d.policy_version == POLICY.version for d in ds)


def test_sensitive_category_and_trigger_turn_are_audit_only(record_factory: Any) -> None:
    judge = FakeJudge(
        ContentVerdict(("health",), {"health": 0.9}, (("653", 0.9),), 0.9, 1, (0.1, 0.9))
    )
    (d,) = decide_batch([_rec(record_factory)], policy=POLICY, judge=judge, model_version="1")
    assert not d.eligible and d.excluded_reason == "sensitive_topic" and d.interests == ()
    assert d.to_dict()["sensitive_category"] == "health" and d.to_dict()["trigger_turn"] == 1
    assert d.to_dict()["languages"] == ["en", "en"]
    pub = d.public()
    assert not {"sensitive_category", "trigger_turn", "languages"} & set(pub)


def test_a_turn_in_an_unsupported_language_fails_closed(record_factory: Any) -> None:
    judge = FakeJudge()
    turns = [
        {"role": "user", "text": "Which trail near Denver is good for a sunset hike?"},
        {"role": "assistant", "text": "Try the Red Rocks trail, it is beautiful at sunset."},
        {
            "role": "user",
            "text": "¿Y dónde puedo comprar unas botas de montaña baratas cerca de allí?",
        },
    ]
    recs = [
        _rec(record_factory, conversation_id="es", turns=turns),
        _rec(record_factory, conversation_id="en"),
    ]
    ds = decide_batch(recs, policy=POLICY, judge=judge, model_version="1")
    assert not ds[0].eligible and ds[0].excluded_reason == "unsupported_language"
    assert ds[0].interests == () and "turn 2: es" in ds[0].detail
    assert ds[1].eligible
    assert judge.calls == 1  # the refused conversation never reached the model
    # the same conversation passes once the policy lists Spanish (quality measured)
    from dataclasses import replace

    es_policy = replace(
        POLICY, doc=POLICY.doc.model_copy(update={"supported_languages": ["en", "es"]})
    )
    (d,) = decide_batch(recs[:1], policy=es_policy, judge=judge, model_version="1")
    assert d.eligible and d.languages == ("en", "en", "es")


def test_fail_closed_per_record(record_factory: Any) -> None:
    recs = [_rec(record_factory, conversation_id="a"),
            _rec(record_factory, conversation_id="b", turns=[{"role": "user", "text": "poison pill"}])]  # fmt: skip
    ds = decide_batch(recs, policy=POLICY, judge=FakeJudge(fail_on="poison"), model_version="1")
    assert ds[0].eligible
    assert not ds[1].eligible and ds[1].excluded_reason == "model_unavailable"
    ds = decide_batch(recs, policy=POLICY, judge=None, model_version=None)
    assert [d.excluded_reason for d in ds] == ["model_unavailable"] * 2


def test_decision_invariants() -> None:
    from targeting.decide import InterestScore

    with pytest.raises(ValueError):
        Decision("x", False, (InterestScore("1", "a", 0.9),), "region")
    with pytest.raises(ValueError):
        Decision("x", True, (), "region")


def test_dataframe_input(record_factory: Any) -> None:
    df = pd.DataFrame(
        [
            _rec(record_factory, conversation_id="a"),
            _rec(record_factory, conversation_id="b", country="KR"),
        ]
    )
    m = TargetingFilterModel.from_parts(_bundle(), POLICY, None, HashingEmbedder(32), "3")
    out = m.predict(None, df)
    assert [o["conversation_id"] for o in out] == ["a", "b"]
    assert out[1]["excluded_reason"] == "region"
    assert out[0]["model_version"] == "3"
    assert m.predict(None, df, params={"model_version": "9"})[0]["model_version"] == "9"


def test_pyfunc_predict_is_public_unless_the_audit_param_is_set(record_factory: Any) -> None:
    """``mlflow models serve`` calls predict without our params: never the sensitive category,
    the triggering turn or the languages; the engine's direct predictor asks for them."""
    from targeting.decide import AUDIT_ONLY, AUDIT_PARAM
    from targeting.holder import DirectPredictor

    m = TargetingFilterModel.from_parts(_bundle(), POLICY, None, HashingEmbedder(32), "3")
    recs = [
        _rec(record_factory, conversation_id="a"),
        _rec(record_factory, conversation_id="s",
             turns=[{"role": "user", "text": "My chemotherapy for cancer starts on Monday."}]),
    ]  # fmt: skip
    public = m.predict(None, recs)
    full = m.predict(None, recs, params={AUDIT_PARAM: True})
    assert all(not set(AUDIT_ONLY) & set(d) for d in public)
    assert all(set(AUDIT_ONLY) <= set(d) for d in full)
    assert [{k: v for k, v in d.items() if k not in AUDIT_ONLY} for d in full] == public
    direct = DirectPredictor(m, None, None).predict(recs)
    assert direct == full


_BUNDLE: list[Any] = []


def _bundle() -> Any:
    if not _BUNDLE:
        tax = load_taxonomy(categories=POLICY.categories)
        convs = [Conversation.model_validate(r) for r in generate(300, 3)]
        snap = snapshot_from_records(convs, tax, POLICY.categories)
        _BUNDLE.append(train_filter(snap, tax, HashingEmbedder(32), config=TrainConfig(folds=2),
                                    prototype_texts=default_prototypes(POLICY)).bundle)  # fmt: skip
    return _BUNDLE[0]


LEXICON = {c: kws for c, kws in load_lexicon(categories=POLICY.categories).items() if kws}
EXCLUDED = sorted(POLICY.excluded_countries)
WORDS = st.text(alphabet=st.characters(whitelist_categories=("Ll", "Lu", "Nd", "Zs")), max_size=80)


@st.composite
def risky_records(draw: st.DrawFn) -> dict[str, Any]:
    base = draw(st.sampled_from(generate(40, 5)))
    rec = {k: v for k, v in base.items() if k != "gold"}
    rec["conversation_id"] = "p-" + draw(
        st.text(alphabet="abcdef0123456789", min_size=1, max_size=8)
    )
    if draw(st.booleans()):
        rec["country"] = draw(st.sampled_from(EXCLUDED))
    else:
        rec["country"] = "US"
        rec["account_linked"] = True
        rec["started_at"] = "2026-03-01T12:00:00Z"
        cat = draw(st.sampled_from(sorted(LEXICON)))
        kw = draw(st.sampled_from(LEXICON[cat]))
        rec["turns"] = [{"role": "user", "text": f"{draw(WORDS)} {kw} {draw(WORDS)}".strip() or kw}]
    return rec


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recs=st.lists(risky_records(), min_size=1, max_size=5))
def test_property_excluded_or_sensitive_never_eligible(recs: list[dict[str, Any]]) -> None:
    m = TargetingFilterModel.from_parts(_bundle(), POLICY, None, HashingEmbedder(32), "1")
    for d in m.decide(recs):
        assert d.eligible is False
        assert d.interests == ()
        assert d.excluded_reason in {
            "region",
            "sensitive_topic",
            "invalid_record",
            "model_unavailable",
            "unsupported_language",
        }
