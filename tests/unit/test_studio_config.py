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


def test_config_is_deterministic_and_shows_interests_as_a_taxonomy_tree() -> None:
    import xml.etree.ElementTree as ET

    taxonomy, policy = _domain()
    cfg = label_config(taxonomy, policy)
    assert cfg == label_config(taxonomy, policy)
    assert len(schema_version(cfg)) == 12
    assert 'layout="dialogue"' in cfg and 'name="comment"' in cfg
    root = ET.fromstring(cfg)
    (tree,) = root.iter("Taxonomy")
    assert tree.attrib["name"] == "interests" and tree.attrib["leafsOnly"] == "false"
    assert not [c for c in root.iter("Choices") if c.attrib["name"] == "interests"]
    # tier-1 interests at the top, their children nested under them; aliases are IAB ids
    top = list(tree)
    assert [c.attrib["alias"] for c in top] == [t.id for t in taxonomy.tier1()]
    t1 = taxonomy.tier1()[0]
    assert top[0].attrib["value"] == t1.name
    assert [c.attrib["alias"] for c in top[0]] == [c.id for c in taxonomy.children(t1.id)]
    # the evidence control and the sensitive Choices stay as they were
    assert [c.attrib["name"] for c in root.iter("ParagraphLabels")] == ["evidence"]
    assert [c.attrib["name"] for c in root.iter("Choices")] == ["sensitive"]


def test_taxonomy_results_read_back_into_iab_ids() -> None:
    from labeling.studio import interest_ids_from_taxonomy, taxonomy_path

    taxonomy, _ = _domain()
    t1 = next(t for t in taxonomy.tier1() if taxonomy.children(t.id))
    child = taxonomy.children(t1.id)[0]
    assert taxonomy_path(taxonomy, child.id) == [t1.id, child.id]
    assert taxonomy_path(taxonomy, t1.id) == [t1.id]
    # what Label Studio stores for a Taxonomy selection: one path per selected node
    result = [
        {"from_name": "interests", "to_name": "dialogue", "type": "taxonomy",
         "value": {"taxonomy": [[t1.id, child.id], [t1.id]]}},
        {"from_name": "sensitive", "to_name": "dialogue", "type": "choices",
         "value": {"choices": ["none"]}},
    ]  # fmt: skip
    assert parse_result(result) == (sorted([t1.id, child.id]), [], None)
    # a path of names (aliases ignored) is resolved through the taxonomy
    by_name = [[t1.name, child.name]]
    assert interest_ids_from_taxonomy(by_name, taxonomy) == [child.id]
    assert interest_ids_from_taxonomy([[t1.name]], taxonomy) == [t1.id]
    assert interest_ids_from_taxonomy([[], ["no-such-node"]], taxonomy) == ["no-such-node"]
    # results written by result_for (pre-annotations, simulated annotators) round-trip
    res = result_for([child.id, t1.id], [], taxonomy=taxonomy)
    assert res[0]["type"] == "taxonomy"
    assert res[0]["value"]["taxonomy"] == sorted([[t1.id, child.id], [t1.id]], key=lambda p: p[-1])
    assert parse_result(res, taxonomy)[0] == sorted([t1.id, child.id])


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
    # no proposal id given: the link says so; the proposal's confidences are in the task
    assert data["proposal"] == {"id": None, "proposer": "llm-v1", "confidence": 0.6,
                                "labels": {"653": 0.8, "210": 0.2, "health": 0.3}}  # fmt: skip
    assert "proposal #? confidence 0.60: 653 0.80, health 0.30, 210 0.20" in data["header"]
    taxonomy, _ = _domain()
    linked = task_payload(conv, prop, reason="r", overlap=1, label_threshold=0.5,
                          proposal_id=42, taxonomy=taxonomy)["data"]  # fmt: skip
    assert linked["proposal"]["id"] == 42 and "proposal #42" in linked["header"]
    assert taxonomy.by_id("653").name in linked["proposal"]["labels"]
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


def test_config_nests_deeper_tiers_and_their_paths_round_trip() -> None:
    import xml.etree.ElementTree as ET

    from labeling.studio import interest_ids_from_taxonomy, taxonomy_path
    from labeling.taxonomy import Interest, Taxonomy

    tx = Taxonomy(
        [
            Interest("1", "Travel", 1, None, "Travel"),
            Interest("2", "Air Travel", 2, "1", "Travel > Air Travel"),
            Interest("3", "Airports", 3, "2", "Travel > Air Travel > Airports"),
            Interest("4", "Cruises", 2, "1", "Travel > Cruises"),
        ],
        {},
        version="test",
    )
    _, policy = _domain()
    cfg = label_config(tx, policy)
    assert sorted(config_choices(cfg)["interests"]) == ["1", "2", "3", "4"]
    (tree,) = ET.fromstring(cfg).iter("Taxonomy")
    (travel,) = list(tree)
    assert [c.attrib["alias"] for c in travel] == ["2", "4"]
    assert [c.attrib["alias"] for c in travel[0]] == ["3"]
    assert travel[0][0].attrib["value"] == "Airports"
    assert taxonomy_path(tx, "3") == ["1", "2", "3"]
    assert taxonomy_path(None, "3") == ["3"] and taxonomy_path(tx, "99") == ["99"]
    res = result_for(["3", "4"], ["health"], taxonomy=tx)
    assert res[0]["value"]["taxonomy"] == [["1", "2", "3"], ["1", "4"]]
    assert parse_result(res, tx)[:2] == (["3", "4"], ["health"])
    assert interest_ids_from_taxonomy([["Travel", "Air Travel", "Airports"]], tx) == ["3"]


def test_old_choices_results_are_still_read() -> None:
    """Annotations made with the earlier flat Choices config keep their meaning."""
    old = [
        {"from_name": "interests", "to_name": "dialogue", "type": "choices",
         "value": {"choices": ["653", "210"]}},
        {"from_name": "sensitive", "to_name": "dialogue", "type": "choices",
         "value": {"choices": ["health"]}},
    ]  # fmt: skip
    assert parse_result(old) == (["210", "653"], ["health"], None)
