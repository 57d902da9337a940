"""benchmarks/loop_efficiency.py: the arms' sampling logic, the metric code and a --quick smoke run."""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

import pytest

from benchmarks.loop_efficiency import (
    ARMS,
    METRIC_COLS,
    BundleClassifier,
    _rng,
    annotate,
    headline,
    main,
    reach_share,
    select_labelloop,
    select_random,
    silver_example,
    split_pool_test,
    view_of,
)
from experiments.dataset import Example
from labeling.annotator_sim import noisy_answer
from labeling.proposals import Proposal
from labeling.routing import RoutingConfig

CATS = ["religion", "health", "political_views"]
POOL_I = ["IAB-1", "IAB-2", "IAB-3", "IAB-4"]


def ex(cid: str, sens: tuple[str, ...] = (), ints: tuple[str, ...] | None = ("IAB-1",)) -> Example:
    return Example(cid, f"text of {cid}", sens, ints, 1.0, "records")


def prop(cid: str, *, unc: float, sens: dict[str, float] | None = None, flags: list[str] | None = None,
         ints: dict[str, float] | None = None) -> Proposal:  # fmt: skip
    return Proposal(
        conversation_id=cid,
        interests=ints if ints is not None else {"IAB-1": 0.95},
        sensitive=sens or {},
        uncertainty=unc,
        flags=flags or [],
        proposer_id="test",
        prompt_hash="h",
        model_id="none",
        embedding_model_id=None,
        llm_called=False,
        source="knn",
    )


# ------------------------------------------------------------------------------------ data split
def test_split_pool_test_disjoint_deterministic_and_fair_between_groups() -> None:
    groups = {
        "big": [ex(f"b{i}") for i in range(200)],
        "small": [ex(f"s{i}", ("health",)) for i in range(10)],
    }
    pool, test = split_pool_test(groups, 60, 20, seed=3)
    assert len(pool) == 60 and len(test) == 20
    ids_p = {e.conversation_id for e in pool}
    ids_t = {e.conversation_id for e in test}
    assert not ids_p & ids_t
    # the small group gives all it has (quota shared evenly, it is below its share)
    assert sum(c.startswith("s") for c in ids_p | ids_t) == 10
    assert split_pool_test(groups, 60, 20, seed=3) == (pool, test)
    pool2, _ = split_pool_test(groups, 60, 20, seed=4)
    assert [e.conversation_id for e in pool2] != [
        e.conversation_id for e in pool
    ]  # order is seeded
    with pytest.raises(ValueError):
        split_pool_test(groups, 0, 20, seed=0)


# ------------------------------------------------------------------------------------ arms
def test_select_random_draws_n_seeded_items_from_candidates() -> None:
    cfg = RoutingConfig(overlap_share=0.0, seed=0)
    cands = [f"c{i}" for i in range(50)]
    s = select_random(cands, 7, seed=1, round_no=1, cfg=cfg)
    assert len(s.send) == 7 and set(s.send) <= set(cands)
    assert s.send == select_random(list(reversed(cands)), 7, seed=1, round_no=1, cfg=cfg).send
    assert s.send != select_random(cands, 7, seed=1, round_no=2, cfg=cfg).send
    assert set(s.overlap.values()) == {1}
    assert select_random(cands[:3], 10, seed=1, round_no=1, cfg=cfg).send == sorted(cands[:3])
    assert select_random(cands, 0, seed=1, round_no=1, cfg=cfg).send == []
    full_overlap = select_random(cands, 5, seed=1, round_no=1, cfg=RoutingConfig(overlap_share=1.0))
    assert set(full_overlap.overlap.values()) == {2}


def test_select_labelloop_sensitive_first_budget_queue_and_auto() -> None:
    cfg = RoutingConfig(budget=2, qa_sample_rate=0.0, overlap_share=0.0, uncertainty_threshold=0.35)
    props = [
        prop("conf1", unc=0.05),
        prop("conf2", unc=0.1),
        prop("unc_hi", unc=0.9),
        prop("unc_mid", unc=0.6),
        prop("sens", unc=0.2, sens={"health": 0.5}, flags=["possible_sensitive"]),
        prop("sens_conf", unc=0.1, sens={"health": 0.97}, flags=["possible_sensitive"]),
    ]
    sel = select_labelloop([view_of(p, f"distinct words {p.conversation_id}") for p in props], cfg)
    assert sel.send == ["sens", "unc_hi"]  # sensitive-suspect first, then by uncertainty
    assert sel.overlap["sens"] == 2 and sel.overlap["unc_hi"] == 1  # suspects get two annotators
    assert sel.queued == ["unc_mid"]  # over budget: waits, not dropped
    assert sel.auto == [
        "conf1",
        "conf2",
        "sens_conf",
    ]  # a confident sensitive call is auto-accepted


def test_select_labelloop_qa_sample_is_reviewed_not_silver() -> None:
    cfg = RoutingConfig(budget=100, qa_sample_rate=1.0, overlap_share=0.0)
    sel = select_labelloop([view_of(prop(f"c{i}", unc=0.0)) for i in range(5)], cfg)
    assert len(sel.send) == 5 and sel.auto == []


def test_silver_example_thresholds_and_weight() -> None:
    p = prop("x", unc=0.2, sens={"health": 0.6, "religion": 0.2}, ints={"IAB-1": 0.7, "IAB-2": 0.4})
    s = silver_example(p, "t")
    assert s.sensitive == ("health",) and s.interests == ("IAB-1",)
    assert s.origin == "silver" and 0 < s.weight < 1


def test_annotate_exact_without_noise_and_union_of_sensitive_with_overlap() -> None:
    gold = ex("g1", ("health",), ("IAB-1", "IAB-2"))
    lab, spent = annotate(
        gold, overlap=2, accuracy=1.0, seed=0, interest_pool=POOL_I, categories=CATS
    )
    assert (lab.sensitive, lab.interests, spent, lab.origin) == (
        ("health",),
        ("IAB-1", "IAB-2"),
        2,
        "human",
    )
    unknown, _ = annotate(
        ex("g2", (), None), overlap=1, accuracy=0.0, seed=0, interest_pool=POOL_I, categories=CATS
    )
    assert unknown.interests is None  # unknown interest gold stays unknown
    for i in range(30):
        g = ex(f"n{i}", ("religion",), ("IAB-3",))
        lab, spent = annotate(
            g, overlap=2, accuracy=0.0, seed=7, interest_pool=POOL_I, categories=CATS
        )
        answers = [
            noisy_answer(
                g.interests or (),
                g.sensitive,
                accuracy=0.0,
                rng=_rng(7, "answer", g.conversation_id, k),
                interest_pool=POOL_I,
                categories=CATS,
            )
            for k in range(2)
        ]
        assert set(lab.sensitive) == set(answers[0][1]) | set(answers[1][1])
        assert spent == (2 if answers[0][0] == answers[1][0] else 3)  # adjudicator on disagreement


# ------------------------------------------------------------------------------------ metrics
def _row(arm: str, rnd: int, share: float, f1: float, leak: float) -> dict[str, object]:
    return {"arm": arm, "round": rnd, "human_share": share, "interest_micro_f1": f1, "leak_rate": leak,
            "false_block_rate": 0.05}  # fmt: skip


def test_reach_share_and_headline() -> None:
    rows = [
        _row("full", 1, 0.5, 0.80, 0.0),
        _row("full", 2, 1.0, 0.90, 0.01),
        _row("labelloop", 1, 0.05, 0.80, 0.0),
        _row("labelloop", 2, 0.10, 0.88, 0.03),  # F1 ok but leaks
        _row("labelloop", 3, 0.15, 0.875, 0.02),  # 0.875 >= 0.97 * 0.9 = 0.873, leak at the limit
        _row("random", 1, 0.05, 0.5, 0.0),
        _row("random", 2, 0.10, math.nan, 0.0),
    ]
    assert reach_share(rows, "labelloop", 0.9) == pytest.approx(0.15)
    assert reach_share(rows, "random", 0.9) is None
    assert reach_share(rows, "labelloop", math.nan) is None
    assert reach_share(rows, "labelloop", 0.9, max_false_block=0.01) is None
    h = headline(rows)
    assert h["ceiling_f1"] == pytest.approx(0.9)  # the full arm's LAST round
    assert h["labelloop_share"] == pytest.approx(0.15) and h["random_share"] is None
    assert h["target_a_le_15pct"] is True and h["target_a_le_half_b"] is None
    rows.append(_row("random", 3, 0.40, 0.89, 0.0))
    h = headline(rows)
    assert h["random_share"] == pytest.approx(0.40) and h["target_a_le_half_b"] is True


def test_bundle_classifier_probability_map() -> None:
    f = BundleClassifier.to_prob
    assert f(0.2, 0.2) == pytest.approx(0.5)
    assert f(0.0, 0.3) == 0.0 and f(1.0, 0.3) == pytest.approx(1.0)
    assert f(0.1, 0.2) < 0.5 < f(0.3, 0.2)
    rng = random.Random(0)
    for _ in range(200):
        assert 0.0 <= f(rng.uniform(-1, 2), rng.uniform(-1, 2)) <= 1.0


# ------------------------------------------------------------------------------------ smoke
def test_quick_smoke_run_writes_csv_and_plot_with_unit_metrics(tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = main(["--quick", "--synthetic", "300", "--fake-embeddings", "--out", str(out), "--quiet",
               "--pool", "90", "--test", "60", "--budget", "8", "--seeds", "0,1"])  # fmt: skip
    assert rc == 0
    csv_path, png = out / "loop_efficiency.csv", out / "loop_efficiency.png"
    assert csv_path.stat().st_size > 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "loop_efficiency.md").read_text(encoding="utf-8").count("| (") >= 8
    all_rows = list(csv.DictReader(csv_path.open(encoding="utf-8")))
    assert len(all_rows) == 3 * 2 * len(ARMS)  # quick: 2 rounds; seeds 0 and 1, then their mean
    assert [r["seed"] for r in all_rows].count("mean") == 2 * len(ARMS)
    assert "mean over seeds" in (out / "loop_efficiency.md").read_text(encoding="utf-8")
    rows = [r for r in all_rows if r["seed"] == "0"]
    assert {r["arm"] for r in rows} == set(ARMS)
    assert len(rows) == 2 * len(ARMS)
    recall_cols = [k for k in rows[0] if k.startswith("recall_")]
    assert recall_cols
    for r in rows:
        for k in (*METRIC_COLS, *recall_cols):
            if r[k] == "":  # undefined (no support in the test split)
                assert k.startswith("recall_")
                continue
            assert 0.0 <= float(r[k]) <= 1.0, (r["arm"], k, r[k])
        assert int(r["llm_calls"]) == 0  # the LLM is opt-in
    by = {(r["arm"], int(r["round"])): r for r in rows}
    assert int(by[("full", 2)]["human_items"]) == 90
    assert int(by[("silver_only", 2)]["human_items"]) == 0
    assert by[("random", 1)]["human_items"] == by[("labelloop", 1)]["human_items"]


def test_mean_rows_average_over_seeds_with_sd_and_headline_uses_them() -> None:
    from benchmarks.loop_efficiency import display_rows, mean_rows

    def row(arm: str, rnd: int, seed: int, f1: float, leak: float = 0.0) -> dict[str, object]:
        return {"arm": arm, "letter": "x", "round": rnd, "human_items": 10 * rnd,
                "human_share": 0.1 * rnd, "leak_rate": leak, "false_block_rate": 0.5,
                "interest_micro_f1": f1, "recall_health": float("nan"), "seed": seed}  # fmt: skip

    rows = [row("labelloop", 1, 0, 0.5), row("labelloop", 1, 1, 0.7, leak=0.04),
            row("full", 1, 0, 0.8), row("full", 1, 1, 0.9)]  # fmt: skip
    mean = mean_rows(rows)
    by = {r["arm"]: r for r in mean}
    assert by["labelloop"]["interest_micro_f1"] == pytest.approx(0.6)
    assert by["labelloop"]["interest_micro_f1_sd"] == pytest.approx(0.1)
    assert by["labelloop"]["leak_rate"] == pytest.approx(0.02)
    assert by["labelloop"]["human_items"] == 10 and by["labelloop"]["n_seeds"] == 2
    assert math.isnan(by["full"]["recall_health"])  # nan stays nan, no crash
    assert display_rows(rows + mean) == mean and display_rows(rows) == rows
    head = headline(mean)
    assert head["ceiling_f1"] == pytest.approx(0.85)
    assert head["labelloop_share"] is None  # 0.6 < 0.97 * 0.85


def test_seeds_option_parsing() -> None:
    from benchmarks.loop_efficiency import parse_args

    assert parse_args([]).seeds == (0, 1, 2)
    assert parse_args(["--quick"]).seeds == (0,)
    assert parse_args(["--seed", "4"]).seeds == (4,)
    assert parse_args(["--seeds", "3,5"]).seeds == (3, 5)
    with pytest.raises(SystemExit):
        parse_args(["--seeds", "a,b"])
    with pytest.raises(SystemExit):
        parse_args(["--seed", "1", "--seeds", "2"])


def test_simulated_proposer_has_the_requested_coverage_and_precision() -> None:
    from benchmarks.loop_efficiency import SimulatedProposer, parse_simulated
    from labeling.proposals import ProposalInput

    gold = {f"c{i}": ex(f"c{i}", ("health",) if i % 3 == 0 else ()) for i in range(3000)}
    sim = SimulatedProposer(gold, 0.6, 0.9, seed=1, interest_pool=POOL_I, categories=CATS)
    props = sim.propose([ProposalInput(c, "t") for c in gold])
    confident = [p for p in props if p.uncertainty < 0.35]
    assert 0.56 < len(confident) / len(props) < 0.64
    correct = [
        p
        for p in confident
        if set(p.interests) == set(gold[p.conversation_id].interests or ())
        and set(p.sensitive) == set(gold[p.conversation_id].sensitive)
    ]
    assert 0.87 < len(correct) / len(confident) < 0.93
    assert all(set(p.interests.values()) <= {0.97} for p in confident)
    # deterministic per item, independent of batch order
    again = sim.propose([ProposalInput(c, "t") for c in reversed(list(gold))])
    assert {p.conversation_id: p.interests for p in again} == {
        p.conversation_id: p.interests for p in props
    }
    assert parse_simulated("0.5:1") == (0.5, 1.0) and parse_simulated(None) is None
    for bad in ("0.5", "a:b", "1.5:0.9"):
        with pytest.raises(ValueError, match="simulated-proposer"):
            parse_simulated(bad)
