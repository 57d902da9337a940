"""benchmarks/filter_quality.py: the curve helpers of the long-dialogue part, and its product
variant against the product's training settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.filter_quality import PRODUCT_VARIANT, best_point, parse_variant, rows_of
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
    # the shipped pairs, unchecked and balanced, when training adds them by default
    make = (ROOT / "Makefile").read_text()
    with_pairs = f"--contrast-unchecked {name}" in make and f"--contrast-balanced {name}" in make
    assert with_pairs == settings.train_contrast_pairs


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
