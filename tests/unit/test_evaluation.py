"""Metrics on tiny hand-computed cases; leak-rate and false-block math; the gate rules."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from experiments.dataset import Example
from experiments.evaluation import LongDialogueReport, evaluate_verdicts, write_artifacts
from experiments.gate import GateRules, apply_rules
from targeting.scorer import ContentVerdict, FilterBundle, ScoreBatch

CATS = ("health", "religion")


def V(sens: tuple[str, ...] = (), ints: tuple[str, ...] = ()) -> ContentVerdict:
    return ContentVerdict(sens, {}, tuple((i, 0.9) for i in ints))


def _case() -> tuple[list[Example], list[ContentVerdict]]:
    ex = [
        Example("a", "t", ("health",), None),  # blocked as health: caught
        Example("b", "t", ("health",), None),  # passes: leak
        Example(
            "c", "t", ("religion",), None
        ),  # blocked, but as health: caught (no leak), category miss
        Example("d", "t", (), ("1", "2")),  # passes, interests {1}: tp=1 fn=1
        Example("e", "t", (), ("3",)),  # blocked: false block; interests {3, 4}: tp=1 fp=1
        Example("f", "t", (), ()),  # passes, no interests
        Example("g", "t", (), None),  # passes, unknown interests (not scored)
        Example("h", "t", (), ()),  # passes, predicted {5}: fp=1
    ]
    vs = [
        V(("health",)),
        V(),
        V(("health",)),
        V((), ("1",)),
        V(("religion",), ("3", "4")),
        V(),
        V((), ("9",)),
        V((), ("5",)),
    ]
    return ex, vs


def test_leak_and_false_block_rates() -> None:
    ex, vs = _case()
    r = evaluate_verdicts(ex, vs, CATS)
    assert r.n_sensitive == 3 and r.n_non_sensitive == 5
    assert r.leak_rate == pytest.approx(1 / 3)
    assert r.false_block_rate == pytest.approx(1 / 5)


def test_per_category_metrics() -> None:
    ex, vs = _case()
    r = evaluate_verdicts(ex, vs, CATS)
    h = r.per_category["health"]
    assert h["support"] == 2 and h["tp"] == 1 and h["fp"] == 1 and h["fn"] == 1
    assert (
        h["recall"] == pytest.approx(0.5)
        and h["precision"] == pytest.approx(0.5)
        and h["f1"] == pytest.approx(0.5)
    )
    rel = r.per_category["religion"]
    assert rel["recall"] == 1.0  # blocked (as health): not a leak
    assert rel["category_recall"] == 0.0
    assert rel["precision"] == 0.0  # the religion prediction on "e" is a false positive


def test_interest_micro_macro() -> None:
    ex, vs = _case()
    r = evaluate_verdicts(ex, vs, CATS)
    # d: tp1 fn1 ; e: tp1 fp1 ; f: - ; h: fp1  => tp=2 fp=2 fn=1
    assert r.n_interest_items == 4
    assert r.interest_micro_precision == pytest.approx(0.5)
    assert r.interest_micro_recall == pytest.approx(2 / 3)
    assert r.interest_micro_f1 == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    # per label F1: 1 -> 1.0, 2 -> 0, 3 -> 1.0, 4 -> 0 (fp only, support 0: excluded), 5 -> excluded
    assert r.interest_macro_f1 == pytest.approx((1.0 + 0.0 + 1.0) / 3)
    # end to end (non-sensitive gold only; "e" blocked -> predicts nothing): d tp1 fn1, e fn1, h fp1
    assert r.interest_micro_f1_e2e == pytest.approx(2 * 1 / (2 * 1 + 1 + 2))


def test_undefined_rates_are_nan() -> None:
    r = evaluate_verdicts([Example("x", "t", (), None)], [V()], CATS)
    assert math.isnan(r.leak_rate) and r.false_block_rate == 0.0 and math.isnan(r.interest_micro_f1)
    with pytest.raises(ValueError):
        evaluate_verdicts([], [V()], CATS)


def test_artifacts_written(tmp_path: Path) -> None:
    ex, vs = _case()
    r = evaluate_verdicts(ex, vs, CATS)
    bundle = FilterBundle.empty(
        CATS, interest_ids=("1", "3"), interest_names={"1": "one", "3": "three"}
    )
    rng = np.random.default_rng(0)
    batch = ScoreBatch(rng.uniform(size=(len(ex), 2)), rng.uniform(size=len(ex)), [frozenset()] * len(ex),
                       rng.uniform(size=(len(ex), 2)), rng.uniform(-1, 1, size=len(ex)), [None] * len(ex),
                       [()] * len(ex))  # fmt: skip
    paths = write_artifacts(r, ex, batch, vs, bundle, tmp_path)
    names = {p.name for p in paths}
    assert {
        "confusion_matrices.png",
        "pr_curves_sensitive.png",
        "per_category_metrics.csv",
        "per_category_metrics.md",
    } <= names
    assert (tmp_path / "confusion_matrices.png").read_bytes()[:4] == b"\x89PNG"
    assert "health" in (tmp_path / "per_category_metrics.csv").read_text()


def test_gate_rules() -> None:
    ex, vs = _case()
    champ = evaluate_verdicts(ex, vs, CATS)
    # challenger catches everything sensitive, same interests
    better = [V(("health",)), V(("health",)), V(("religion",)), *vs[3:]]
    ch = evaluate_verdicts(ex, better, CATS)
    ok, checks = apply_rules(
        ch, champ, GateRules(sensitive_recall_floor=0.98, max_false_block_rate=1.0)
    )
    assert ok, checks
    # absolute rule only when there is no champion: champion itself fails the floor (health 0.5)
    ok, checks = apply_rules(
        champ, None, GateRules(sensitive_recall_floor=0.98, max_false_block_rate=1.0)
    )
    assert not ok and [c.name for c in checks if not c.passed] == ["recall[health]"]
    # worse leak than champion fails even with a lenient floor
    worse = [V(), V(), V(("health",)), *vs[3:]]
    ok, checks = apply_rules(
        evaluate_verdicts(ex, worse, CATS),
        champ,
        GateRules(sensitive_recall_floor=0.0, max_false_block_rate=1.0),
    )
    assert not ok and "leak_rate <= champion" in [c.name for c in checks if not c.passed]
    # interest F1 drop beyond tolerance fails
    no_int = [*better[:3], V(), V(("religion",)), V(), V(), V()]
    ok, checks = apply_rules(
        evaluate_verdicts(ex, no_int, CATS),
        champ,
        GateRules(sensitive_recall_floor=0.0, max_false_block_rate=1.0),
    )
    assert not ok and "interest_micro_f1 >= champion - tol" in [
        c.name for c in checks if not c.passed
    ]


def test_gate_refuses_a_model_that_blocks_everything_or_leaks_late_mentions() -> None:
    ex, _vs = _case()
    block_all = [V(("health",)) for _ in ex]  # perfect recall, every clean item blocked
    rep = evaluate_verdicts(ex, block_all, CATS)
    ok, checks = apply_rules(rep, None, GateRules(sensitive_recall_floor=0.98))
    assert not ok and [c.name for c in checks if not c.passed] == ["false_block_rate <= ceiling"]
    good = [V(("health",)), V(("health",)), V(("religion",)), *[V() for _ in ex[3:]]]
    rep = evaluate_verdicts(ex, good, CATS)
    late_leak = LongDialogueReport(20, 20, 0.25, 0.0, 1.0)
    ok, checks = apply_rules(rep, None, GateRules(), late_leak)
    assert not ok and [c.name for c in checks if not c.passed] == [
        "long_dialogue_leak_rate <= ceiling"
    ]
    # each rate says how many items it stands on and how sure it is (Wilson 95 %)
    detail = {c.name: c.detail for c in checks}
    assert detail["long_dialogue_leak_rate <= ceiling"] == (
        "5 of 20 composed dialogues passed (95 % CI 11.2-46.9 %)"
    )
    assert detail["long_dialogue_control_false_block <= ceiling"] == (
        "0 of 20 composed controls blocked (95 % CI 0.0-16.1 %)"
    )
    noisy_controls = LongDialogueReport(20, 20, 0.0, 0.5, 1.0)
    ok, checks = apply_rules(rep, None, GateRules(), noisy_controls)
    assert not ok and [c.name for c in checks if not c.passed] == [
        "long_dialogue_control_false_block <= ceiling"
    ]
    ok, checks = apply_rules(rep, None, GateRules(), LongDialogueReport(20, 20, 0.0, 0.0, 1.0))
    assert ok, checks
    # nothing could be composed: the check says so and does not fail
    ok, checks = apply_rules(
        rep, None, GateRules(), LongDialogueReport(0, 0, float("nan"), float("nan"), float("nan"))
    )
    assert ok and any("no long dialogue" in c.detail for c in checks)


def test_the_settings_size_the_gates_long_dialogue_check() -> None:
    from labelloop.runtime import gate_rules
    from labelloop.settings import Settings

    rules = gate_rules(Settings(gate_long_dialogues=7, gate_long_dialogue_controls=3))
    assert (rules.long_dialogues, rules.long_dialogue_controls) == (7, 3)
    default = gate_rules(Settings())
    assert (default.long_dialogues, default.long_dialogue_controls) == (
        GateRules().long_dialogues,
        GateRules().long_dialogue_controls,
    )


def test_the_gate_names_the_recall_floors_its_eval_split_is_too_small_to_show() -> None:
    from experiments.gate import items_to_show, underpowered_floors
    from experiments.training import wilson_interval

    need = items_to_show(0.98)
    assert need is not None
    assert wilson_interval(need, need)[0] >= 0.98 > wilson_interval(need - 1, need - 1)[0]
    assert items_to_show(1.0) is None
    ex, vs = _case()  # 2 health items, 1 religion item
    notes = underpowered_floors(evaluate_verdicts(ex, vs, CATS), GateRules())
    assert notes == [
        "recall[health] rests on 2 eval items: even with all of them blocked, its 95 % lower "
        f"bound is 34.2 %, under the floor 0.98; {need} items would show it",
        "recall[religion] rests on 1 eval item: even with all of them blocked, its 95 % lower "
        f"bound is 20.7 %, under the floor 0.98; {need} items would show it",
    ]
    # a category with enough items gets no note
    many = [Example(f"h{i}", "t", ("health",), None) for i in range(need)]
    rep = evaluate_verdicts(many, [V(("health",)) for _ in many], CATS)
    assert underpowered_floors(rep, GateRules()) == []
