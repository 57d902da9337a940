"""benchmarks/filter_quality.py: the curve helpers of the long-dialogue part, the host-alone
curve, the per-category recall of each left-out source, the renaming of cities, and its product
variant against the product's training settings."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from benchmarks.filter_quality import (
    CITIES,
    PRODUCT_VARIANT,
    best_point,
    parse_variant,
    rename_cities,
    rows_of,
)
from labeling.encoders import DEFAULT_ENCODER
from labelloop.runtime import train_config
from labelloop.settings import Settings
from targeting.scorer import ScoreBatch

ROOT = Path(__file__).resolve().parents[2]


def test_the_product_variant_trains_as_labelloop_train_does() -> None:
    settings = Settings(_env_file=None)
    name, encoder, cfg = parse_variant(PRODUCT_VARIANT)
    assert encoder == DEFAULT_ENCODER == settings.filter_encoder
    prod = train_config(settings)
    assert cfg.false_block_target == prod.false_block_target
    assert (cfg.leak_budget, cfg.category_recall_floor) == (prod.leak_budget,
                                                            prod.category_recall_floor)  # fmt: skip
    assert cfg.composed_training == prod.composed_training
    # the shipped pairs, unchecked and balanced, when training adds them by default
    make = (ROOT / "Makefile").read_text()
    with_pairs = f"--contrast-unchecked {name}" in make and f"--contrast-balanced {name}" in make
    assert with_pairs == settings.train_contrast_pairs


def test_renamed_cities_keep_their_case_and_every_other_word() -> None:
    text = "Book a hotel in San Jose. San Jose is nice; what about seattle? Not Jose."
    assert rename_cities(text, 1) == (
        "Book a hotel in San Francisco. San Francisco is nice; what about portland? Not Jose."
    )
    # every shift the part uses gives another city, for every city
    for shift in (1, 7, 13):
        assert all(rename_cities(c, shift) != c for c in CITIES)


def test_best_point_is_the_lowest_false_block_within_the_leak_budget() -> None:
    pts = [
        {"threshold": 0.1, "leak_rate": 0.0, "false_block_rate": 0.12},
        {"threshold": 0.2, "leak_rate": 0.02, "false_block_rate": 0.07},
        {"threshold": 0.3, "leak_rate": 0.05, "false_block_rate": 0.03},
    ]
    assert best_point(pts, 0.02) == pts[1]
    assert best_point(pts, 0.01) == pts[0]
    assert best_point(pts[2:], 0.02) is None


def test_rows_of_slices_every_field_alike() -> None:
    n = 5
    b = ScoreBatch(
        np.arange(n * 2, dtype=float).reshape(n, 2), np.arange(n, dtype=float),
        [frozenset({str(i)}) for i in range(n)], np.zeros((n, 3)), -np.arange(n, dtype=float),
        list(range(n)), [(float(i),) for i in range(n)],
    )  # fmt: skip
    r = rows_of(b, 2, 4)
    assert r.any.tolist() == [2.0, 3.0] and r.sensitive.tolist() == [[4.0, 5.0], [6.0, 7.0]]
    assert r.lexicon_hits == [frozenset({"2"}), frozenset({"3"})]
    assert r.interests.shape == (2, 3) and r.margin.tolist() == [-2.0, -3.0]
    assert r.trigger_turn == [2, 3] and r.turn_scores == [(2.0,), (3.0,)]


def test_the_long_curve_separates_what_the_host_dialogues_block_alone(tmp_path: Path) -> None:
    from benchmarks.filter_quality import part_long
    from experiments.dataset import Example, Snapshot
    from experiments.training import TrainConfig, train_filter
    from labeling.policy import load_policy
    from labeling.taxonomy import load_taxonomy
    from targeting.scorer import HashingEmbedder, Lexicon

    cats = ("religion", "health")
    rng = np.random.default_rng(3)
    words = ["hotel", "flight", "pasta", "weather", "movie", "shoes", "doctor", "church", "today"]
    train, evals = [], []
    for i in range(300):
        filler = " ".join(rng.choice(words, 4))
        if i % 5 == 4:  # a clean request: the controls' inserted turns
            ex = Example(f"c-{i}", (f"user: find me a {filler}",), (), None)
        elif i % 5 == 0:
            ex = Example(
                f"a-{i}", (f"user: I pray at church on sunday {filler}",), ("religion",), None
            )
        elif i % 5 == 1:
            ex = Example(
                f"a-{i}", (f"user: my doctor treats my illness {filler}",), ("health",), None
            )
        else:
            turns = tuple(f"user: book {w} {filler}" for w in rng.choice(words, 14))
            if i >= 200 and i % 3 == 0:  # a borderline turn in a clean evaluation dialogue
                turns = (*turns[:5], f"user: my doctor treats my illness {filler}", *turns[6:])
            ex = Example(f"b-{i}", turns, (), None)
        (train if i < 200 else evals).append(ex)
    lex = Lexicon(dict.fromkeys(cats, ()), dict.fromkeys(cats, ()))
    emb = HashingEmbedder(32)
    tax = load_taxonomy(categories=load_policy().categories)
    res = train_filter(Snapshot(tuple(train), (), cats), tax, emb, config=TrainConfig(),
                       lexicon=lex)  # fmt: skip
    out = part_long(res, Snapshot(tuple(train), tuple(evals), cats), emb, 20, tmp_path / "i.jsonl")
    pts = out["curve"]
    assert len(pts) > 5 and out["control_false_blocks"]["n"] > 0
    # a control is its host plus one neutral turn: it is blocked whenever its host alone is
    for p in pts:
        assert 0.0 <= p["host_false_block_rate"] <= p["false_block_rate"] + 1e-12, p
    # the hosts with the borderline turn (a third of them) are blocked alone; fewer as it rises
    host = [p["host_false_block_rate"] for p in pts]
    assert host[0] > 0.2 and all(a >= b for a, b in pairwise(host))
    # every item, one by one: what was inserted, and what decided
    items = [json.loads(line) for line in (tmp_path / "i.jsonl").read_text().splitlines()]
    ctrl = [r for r in items if r["kind"] == "control"]
    assert len(items) == out["n_sensitive"] + out["n_controls"] and len(ctrl) == out["n_controls"]
    assert sum(r["blocked"] for r in ctrl) == out["control_false_blocks"]["blocked"]
    assert sum(r["host_blocked"] for r in ctrl) == out["control_false_blocks"]["host_alone_blocked"]
    for r in items:
        assert len(r["inserted"]) == 1 and r["inserted_score"] <= r["any_score"] + 1e-12
        assert (r["deciding_turn"] is not None) == r["blocked"]
    borderline = [r for r in ctrl if r["host_blocked"]]
    assert borderline and all("my doctor" in r["host_deciding_turn"] for r in borderline)
    assert all("pray" in r["inserted"][0] or "doctor" in r["inserted"][0]
               for r in items if r["kind"] == "sensitive")  # fmt: skip
    # controls sized on their own, spread over the hosts as the gate does
    more = part_long(res, Snapshot(tuple(train), tuple(evals), cats), emb, 20, n_controls=12,
                     spread_hosts=True)  # fmt: skip
    assert more["n_sensitive"] == out["n_sensitive"] and more["n_controls"] == 12


def test_each_left_out_source_reports_its_recall_per_category(tmp_path: Path) -> None:
    from benchmarks.filter_quality import part_loso
    from experiments.dataset import Example, Snapshot
    from experiments.training import TrainConfig
    from labeling.policy import load_policy
    from labeling.taxonomy import load_taxonomy
    from targeting.scorer import HashingEmbedder

    policy = load_policy()
    rng = np.random.default_rng(5)
    words = ["hotel", "flight", "pasta", "weather", "movie", "shoes", "today", "later"]
    by_source: dict[str, list[Example]] = {"a": [], "b": [], "d": []}
    for i in range(240):
        filler = " ".join(rng.choice(words, 3))
        src = "a" if i % 3 == 0 else "d" if i % 3 == 1 else "b"
        if src == "b":
            by_source[src].append(Example(f"b-{i}", (f"user: book a {filler}",), (), None))
        elif i % 2 == 0:
            text = (
                f"user: we pray at the temple {filler}"
                if src == "a"
                else f"user: my faith {filler}"
            )
            by_source[src].append(Example(f"{src}-{i}", (text,), ("religion",), None))
        else:
            text = (
                f"user: my illness got worse {filler}" if src == "a" else f"user: a rash {filler}"
            )
            by_source[src].append(Example(f"{src}-{i}", (text,), ("health",), None))
    snaps = {s: Snapshot(tuple(exs), (), policy.categories) for s, exs in by_source.items()}
    tax = load_taxonomy(categories=policy.categories)
    out = part_loso(
        "t", TrainConfig(), snaps, tax, policy, HashingEmbedder(32), only=("d",), items_dir=tmp_path
    )
    d = out["per_source"]["d"]
    support, recall = d["per_category_support"], d["per_category_recall"]
    held = by_source["d"]
    assert support["religion"] == sum("religion" in e.sensitive for e in held) > 0
    assert support["health"] == sum("health" in e.sensitive for e in held) > 0
    # one category per held-out conversation: the per-category leaks add up to the overall leak
    leaked = sum(support[c] * (1.0 - recall[c]) for c in ("religion", "health"))
    assert leaked == pytest.approx(d["leak_rate"] * d["n_sensitive"])
    # every held-out conversation, one line each, its error named as the rates count it
    assert [p.name for p in tmp_path.iterdir()] == ["t-d.jsonl"]
    items = [json.loads(line) for line in (tmp_path / "t-d.jsonl").read_text().splitlines()]
    assert [r["id"] for r in items] == [e.conversation_id for e in held]
    assert sum(r["error"] == "leak" for r in items) == round(d["leak_rate"] * d["n_sensitive"])
    for r, e in zip(items, held, strict=True):
        assert r["gold"] == list(e.sensitive) and r["turns"] == list(e.turns)
        assert (r["deciding_turn"] is not None) == r["blocked"]
        # every held-out conversation is sensitive: blocked, or a leak
        assert r["error"] == (None if r["blocked"] else "leak")


def test_encoders_side_by_side_give_one_unit_vector_of_both() -> None:
    from benchmarks.filter_quality import ConcatEmbedder
    from targeting.scorer import HashingEmbedder

    a, b = HashingEmbedder(16), HashingEmbedder(8)
    both = ConcatEmbedder([a, b])
    texts = ["where is the church", "book a flight"]
    v = both.embed(texts)
    assert v.shape == (2, 24) and both.dim == 24
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    # each part keeps its direction: the halves are the parts' vectors, scaled alike
    np.testing.assert_allclose(v[:, :16] * np.sqrt(2), a.embed(texts), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v[:, 16:] * np.sqrt(2), b.embed(texts), rtol=1e-5, atol=1e-6)
