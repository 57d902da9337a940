"""Label Studio config drift guard, task payloads, result parsing (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from labeling.policy import load_policy
from labeling.routing import ProposalView
from labeling.studio import (
    NONE_CHOICE,
    config_choices,
    label_config,
    parse_result,
    result_for,
    schema_version,
    task_payload,
)
from labeling.taxonomy import load_taxonomy
from labelloop.store.models import ConversationRow


def _domain(policy_path: Path | None = None):  # type: ignore[no-untyped-def]
    policy = load_policy(policy_path)
    return load_taxonomy(categories=policy.categories), policy


def test_config_choices_equal_taxonomy_and_policy() -> None:
    taxonomy, policy = _domain()
    choices = config_choices(label_config(taxonomy, policy))
    assert set(choices) == {"interests", "sensitive"}
    assert sorted(choices["interests"]) == sorted(taxonomy.ids())
    assert len(choices["interests"]) == len(set(choices["interests"]))
    assert choices["sensitive"] == [NONE_CHOICE, *policy.categories]


def test_config_follows_an_added_policy_category(tmp_path: Path) -> None:
    from labeling.policy import DEFAULT_POLICY_PATH

    doc = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    doc["sensitive_categories"]["criminal_record"] = {
        "label": "Criminal record",
        "description": "past convictions, arrests, court cases",
    }
    p = tmp_path / "policy.yaml"
    p.write_text(yaml.safe_dump(doc))
    taxonomy, policy = _domain(p)
    assert "criminal_record" in policy.categories
    cfg = label_config(taxonomy, policy)
    assert config_choices(cfg)["sensitive"] == [NONE_CHOICE, *policy.categories]
    taxonomy0, policy0 = _domain()
    assert schema_version(cfg) != schema_version(label_config(taxonomy0, policy0))


def test_config_is_deterministic_and_groups_interests_under_tier1() -> None:
    taxonomy, policy = _domain()
    cfg = label_config(taxonomy, policy)
    assert cfg == label_config(taxonomy, policy)
    assert len(schema_version(cfg)) == 12
    t1 = taxonomy.tier1()[0]
    assert f'value="{t1.id}" html="{t1.name} (general)"' in cfg.replace("&amp;", "&")
    assert 'layout="dialogue"' in cfg and 'name="comment"' in cfg


def test_result_roundtrip_and_none_choice() -> None:
    res = result_for(["653", "210"], [])
    ints, sens, comment = parse_result(res)
    assert (ints, sens, comment) == (["210", "653"], [], None)
    assert res[-1]["value"]["choices"] == [NONE_CHOICE]
    comment = {
        "from_name": "comment",
        "to_name": "dialogue",
        "type": "textarea",
        "value": {"text": ["hm"]},
    }
    res = [*result_for([], ["health"]), comment]
    assert parse_result(res) == ([], ["health"], "hm")


def test_task_payload_has_redacted_turns_and_prediction() -> None:
    conv = ConversationRow(
        conversation_id="c-1",
        surface="smart_glasses",
        redacted_turns=[
            {"role": "user", "modality": "voice", "text": "call [PHONE]"},
            {"role": "assistant", "text": "ok"},
        ],
    )
    prop = ProposalView(
        "c-1", {"653": 0.8, "210": 0.2}, {"health": 0.3}, 0.4, frozenset(), "llm-v1"
    )
    item = task_payload(conv, prop, reason="high_uncertainty", overlap=2, label_threshold=0.5)
    data = item["data"]
    assert data["conversation_id"] == "c-1" and data["required_annotations"] == 2
    assert data["turns"][0] == {"speaker": "user (voice)", "text": "call [PHONE]"}
    assert data["turns"][1]["speaker"] == "assistant"
    assert "smart_glasses" in data["header"]
    (pred,) = item["predictions"]
    assert pred["model_version"] == "llm-v1" and pred["score"] == 0.6
    assert parse_result(pred["result"])[:2] == (["653"], [])
    bad = ConversationRow(conversation_id="c-2", surface="vibes", redacted_turns=None)
    with pytest.raises(ValueError, match=r"c-2.*redacted_turns"):
        task_payload(bad, None, reason="x", overlap=1, label_threshold=0.5)


def test_task_highlights_the_suspect_turns_with_their_scores() -> None:
    conv = ConversationRow(
        conversation_id="c-3",
        surface="assistant_chat",
        redacted_turns=[
            {"role": "user", "text": "find me a table for two tonight"},
            {"role": "assistant", "text": "Here are three places."},
            {"role": "user", "text": "one of us is celiac after the surgery, is that ok?"},
        ],
        languages=["en", "en", "en"],
    )
    prop = ProposalView("c-3", {"653": 0.8}, {"health": 0.7}, 0.4, frozenset(), "llm-v1")
    item = task_payload(conv, prop, reason="sensitive_suspect", overlap=2, label_threshold=0.5,
                        turn_scores=(0.05, 0.01, 0.91), turn_scores_source="targeting filter v3")  # fmt: skip
    data = item["data"]
    assert "suspect turn(s): 3" in data["header"] and "language: en" in data["header"]
    assert data["turns"][2]["speaker"].startswith("user") and "0.91" in data["turns"][2]["speaker"]
    assert "sensitive" not in data["turns"][0]["speaker"]
    assert data["turn_scores"] == [0.05, 0.01, 0.91]
    assert data["turn_scores_source"] == "targeting filter v3"
    (pred,) = item["predictions"]
    regions = [r for r in pred["result"] if r["type"] == "paragraphlabels"]
    assert (
        len(regions) == 1 and regions[0]["from_name"] == "evidence" and regions[0]["score"] == 0.91
    )
    v = regions[0]["value"]
    assert (v["start"], v["end"], v["startOffset"], v["endOffset"]) == (
        "2",
        "2",
        0,
        len(conv.redacted_turns[2]["text"]),
    )
    # the evidence regions do not change the labels a reviewer's answer is read as
    assert parse_result(pred["result"])[:2] == (["653"], ["health"])
    cfg = label_config(*_domain())
    assert 'name="evidence"' in cfg and 'toName="dialogue"' in cfg


def test_turn_scorers() -> None:
    from targeting.evidence import LexiconTurnScorer
    from targeting.scorer import load_lexicon_file

    policy = load_policy()
    scorer = LexiconTurnScorer(load_lexicon_file(categories=policy.categories), policy.categories)
    (scores,) = scorer([("user: book a table", "user: our union rep called about the strike vote",
                         "user: I pray at the mosque on Fridays")])  # fmt: skip
    assert scores[0] == 0.0 and scores[1] == 1.0 and scores[2] >= 0.5
