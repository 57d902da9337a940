"""Agreement math on constructed cases, resolution rules, confident-learning label errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from labeling.agreement import (
    AnnotationView,
    agreement,
    cohen_kappa,
    find_label_errors,
    krippendorff_alpha,
    resolve,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def a(
    who: str,
    ints: set[str] = frozenset(),
    sens: set[str] = frozenset(),
    *,
    status: str = "completed",
    t: int = 0,
    aid: int = 0,
) -> AnnotationView:
    return AnnotationView(
        who, status, frozenset(ints), frozenset(sens), T0 + timedelta(seconds=t), aid
    )


# Two coders, 10 binary units: 4 both-1, 3 both-0, 2 (1,0), 1 (0,1).
# p_o = 0.7, p_e = 0.6*0.5 + 0.4*0.5 = 0.5 -> kappa = 0.4.
# alpha (nominal): n = 20 values (11 ones, 9 zeros), 3 disagreeing units ->
# D_o = 6/20, D_e = 2*11*9/(20*19) -> alpha = 1 - (6/20) / (198/380) = 1 - 114/198.
Y1 = [1, 1, 1, 1, 0, 0, 0, 1, 1, 0]
Y2 = [1, 1, 1, 1, 0, 0, 0, 0, 0, 1]
KAPPA = 0.4
ALPHA = 1 - 114 / 198


def test_known_kappa_and_alpha_on_binary_vectors() -> None:
    assert cohen_kappa(Y1, Y2) == pytest.approx(KAPPA)
    assert krippendorff_alpha(np.array([Y1, Y2], dtype=float)) == pytest.approx(ALPHA)


def test_agreement_on_constructed_multilabel_items_matches_known_values() -> None:
    # 10 items, one label "x": annotator A chose x where Y1 == 1, B where Y2 == 1.
    items = {
        f"c{i}": [a("A", {"x"} if Y1[i] else set()), a("B", {"x"} if Y2[i] else set())]
        for i in range(10)
    }
    items["single"] = [a("A", {"x"})]  # not overlapped: ignored
    res = agreement(items, {"interests": ["x"], "sensitive": ["health"]})
    g = res["interests"]
    assert g.n_items == 10 and g.n_units == 10
    assert g.kappa == pytest.approx(KAPPA)
    assert g.alpha == pytest.approx(ALPHA)
    assert g.per_annotator["A"] == {"kappa": pytest.approx(KAPPA, abs=1e-4), "n_items": 10}
    # sensitive: nobody chose anything -> undefined, not a crash
    assert res["sensitive"].alpha is None and res["sensitive"].kappa is None


def test_agreement_perfect_and_three_annotators_per_annotator() -> None:
    items = {
        "c1": [a("A", {"x"}), a("B", {"x"}), a("C", {"y"})],
        "c2": [a("A", {"y"}), a("B", {"y"}), a("C", {"y"})],
        "c3": [a("A", set()), a("B", set())],
    }
    res = agreement(items, {"interests": ["x", "y"]})["interests"]
    assert res.per_annotator["A"]["n_items"] == 3 and res.per_annotator["C"]["n_items"] == 2
    assert res.per_annotator["A"]["kappa"] > res.per_annotator["C"]["kappa"]
    perfect = agreement(
        {"c": [a("A", {"x"}), a("B", {"x"})], "d": [a("A"), a("B")]}, {"interests": ["x"]}
    )
    assert perfect["interests"].alpha == pytest.approx(1.0) and perfect[
        "interests"
    ].kappa == pytest.approx(1.0)


def test_agreement_uses_latest_annotation_per_annotator_and_ignores_skips() -> None:
    items = {
        "c1": [
            a("A", {"y"}, t=0, aid=1),
            a("A", {"x"}, t=5, aid=2),
            a("B", {"x"}),
            a("C", status="skipped"),
        ],
        "c2": [a("A", set()), a("B", set())],
    }
    res = agreement(items, {"interests": ["x"]})["interests"]
    assert res.alpha == pytest.approx(1.0)
    assert "C" not in res.per_annotator


def test_resolve_wait_gold_adjudicate_skipped() -> None:
    assert resolve([a("A", {"x"})], 2, 0.5).kind == "wait"
    r = resolve([a("A", {"x"}, {"health"})], 1, 0.5)
    assert (r.kind, r.interests, r.sensitive) == ("gold", ("x",), ("health",))
    r = resolve([a("A", {"x", "y"}), a("B", {"x", "y", "z"})], 2, 0.5)
    assert r.kind == "gold" and r.interests == ("x", "y")  # majority of 2 = both
    r = resolve([a("A", {"x"}), a("B", {"z"})], 2, 0.5)
    assert r.kind == "adjudicate" and "Jaccard" in r.why
    r = resolve([a("A", {"x"}, {"health"}), a("B", {"x"}, {"religion"})], 2, 0.5)
    assert r.kind == "adjudicate" and r.sensitive == ("health", "religion")  # conservative union
    assert resolve([a("A", status="skipped"), a("B", status="skipped")], 2, 0.5).kind == "skipped"
    assert resolve([a("A", status="skipped"), a("B", {"x"})], 2, 0.5).kind == "wait"
    # an edit (later annotation by the same annotator) replaces the earlier answer
    r = resolve([a("A", {"x"}, t=0, aid=1), a("A", {"y"}, t=9, aid=2)], 1, 0.5)
    assert r.interests == ("y",)


def test_confident_learning_flags_contradicted_labels_only() -> None:
    gold = {f"c{i}": ["x"] for i in range(10)} | {f"n{i}": [] for i in range(10)}
    probs = {f"c{i}": {"x": 0.95} for i in range(10)} | {f"n{i}": {"x": 0.03} for i in range(10)}
    probs["c3"] = {"x": 0.01}  # gold says x, model is sure it is not
    probs["n5"] = {"x": 0.99}  # gold lacks x, model is sure it is there
    probs["n6"] = {"x": 0.6}  # unsure: not flagged
    issues = find_label_errors(gold, probs, ["x"], min_confidence=0.9)
    assert {(i.conversation_id, i.gold_value) for i in issues} == {("c3", 1), ("n5", 0)}
    assert find_label_errors(gold, {}, ["x"]) == []
