"""Training: threshold calibration, fallbacks, features (fake embedder, no model files)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from experiments.dataset import Example, Snapshot
from experiments.training import (
    CachedEmbedder,
    TrainConfig,
    calibrate_recall_threshold,
    features,
    train_filter,
    tune_f1_threshold,
)
from labeling.policy import load_policy
from labeling.taxonomy import load_taxonomy
from targeting.scorer import HashingEmbedder

CATS = ("religion", "health", "union_membership")


def test_recall_threshold_reaches_target() -> None:
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 1, size=500)
    for target in (0.5, 0.9, 0.99, 1.0):
        t = calibrate_recall_threshold(pos, target)
        assert (pos >= t).mean() >= target
        # and it is the highest such threshold: the next higher score misses the target
        higher = pos[pos > t]
        if higher.size:
            assert (pos >= higher.min()).mean() < target


def test_recall_threshold_small_and_invalid() -> None:
    assert calibrate_recall_threshold([0.9, 0.2, 0.5], 0.99) == 0.2
    assert calibrate_recall_threshold([0.9, 0.2, 0.5], 0.6) == 0.5
    with pytest.raises(ValueError):
        calibrate_recall_threshold([], 0.9)
    with pytest.raises(ValueError):
        calibrate_recall_threshold([0.1], 0.0)


def test_f1_threshold() -> None:
    scores = [0.9, 0.8, 0.7, 0.3, 0.2, 0.1]
    labels = [1, 1, 1, 0, 0, 0]
    t, f1 = tune_f1_threshold(scores, labels)
    assert f1 == 1.0 and 0.3 < t <= 0.7


def test_features_shapes_and_fake_embedder() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = ["hello world", "buy hiking boots", "hello boots"]
    emb = HashingEmbedder(16)
    x = features(texts, emb)
    assert x.shape == (3, 16)
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0)
    assert np.array_equal(emb.embed(texts), emb.embed(texts))
    tf = TfidfVectorizer().fit(texts)
    x2 = features(texts, emb, tf)
    assert x2.shape == (3, 16 + len(tf.vocabulary_))
    c = CachedEmbedder(emb)
    c.embed(texts)
    assert len(c.cache) == 3


def _examples() -> list[Example]:
    rng = np.random.default_rng(1)
    out: list[Example] = []
    fillers = ["today", "please", "thanks", "quickly", "now", "later", "again", "soon"]
    for i in range(300):
        f = " ".join(rng.choice(fillers, 3))
        if i % 3 == 0:
            out.append(
                Example(
                    f"r{i}",
                    f"pray at the church and mosque with scripture {f}",
                    ("religion",),
                    ("422",),
                )
            )
        elif i % 3 == 1:
            out.append(
                Example(
                    f"h{i}",
                    f"my doctor prescribed medication for the illness {f}",
                    ("health",),
                    None,
                )
            )
        else:
            out.append(
                Example(f"n{i}", f"book a cheap flight and hotel for travel {f}", (), ("653",))
            )
    # five union examples: too few for calibration -> fallback_low
    out += [
        Example(
            f"u{i}", f"workplace organizing meeting with coworkers {i}", ("union_membership",), ()
        )
        for i in range(5)
    ]
    return out


def test_train_filter_calibrates_and_records_fallbacks() -> None:
    policy = load_policy()
    tax = load_taxonomy(categories=policy.categories)
    snap = Snapshot(tuple(_examples()), (), CATS)
    res = train_filter(snap, tax, HashingEmbedder(32), config=TrainConfig(recall_target=0.99, min_positives=20),
                       lexicon=dict.fromkeys(CATS, ()))  # fmt: skip
    cal = res.calibration
    assert cal["religion"]["rule"] == "recall_target"
    assert cal["religion"]["val_recall"] >= 0.99
    assert cal["health"]["val_recall"] >= 0.99
    assert cal["union_membership"]["rule"] == "fallback_low"
    assert res.bundle.sensitive_thresholds["union_membership"] <= 0.1
    assert 0.0 <= res.val_false_block_rate <= 1.0
    # interests are learned only where known; "653" (Travel) and "422" are in the label space
    assert set(res.bundle.interest_ids) <= {"422", "653"}
    verdicts = res.bundle.judge(
        ["pray at the church and mosque", "book a cheap flight and hotel for travel"],
        HashingEmbedder(32),
    )
    assert verdicts[0].blocked and verdicts[0].sensitive_category == "religion"
    assert not verdicts[1].blocked
    # out-of-fold interest probabilities for the label-error check: known interests only
    oof = res.oof_interests
    known = {e.conversation_id for e in _examples() if e.interests is not None}
    assert set(oof) == known
    assert all(set(p) == set(res.bundle.interest_ids) for p in oof.values())
    assert all(0.0 <= v <= 1.0 for p in oof.values() for v in p.values())
    assert oof["n2"]["653"] > 0.5 > oof["r0"]["653"]


def test_category_without_positives_uses_prototypes_or_lexicon() -> None:
    policy = load_policy()
    tax = load_taxonomy(categories=policy.categories)
    ex = [e for e in _examples() if "union_membership" not in e.sensitive]
    snap = Snapshot(tuple(ex), (), CATS)
    res = train_filter(snap, tax, HashingEmbedder(32), prototype_texts={"union_membership": ["union dues strike vote"]},
                       lexicon={"union_membership": ("union rep",)})  # fmt: skip
    assert res.bundle.sensitive_rules["union_membership"] == "prototype"
    assert res.bundle.sensitive_models["union_membership"] is None
    v = res.bundle.judge(["Our union rep called"], HashingEmbedder(32))[0]
    assert "union_membership" in v.sensitive
    res2 = train_filter(
        snap,
        tax,
        None,
        config=TrainConfig(use_embeddings=False),
        lexicon={"union_membership": ("union rep",)},
    )
    assert res2.bundle.sensitive_rules["union_membership"] == "lexicon_only"
    assert res2.bundle.judge(["ask my union rep"], None)[0].sensitive == ("union_membership",)


def test_train_rejects_empty_snapshot() -> None:
    tax = load_taxonomy()
    with pytest.raises(ValueError):
        train_filter(Snapshot((), (), CATS), tax, HashingEmbedder())


def test_calibration_sets_aside_positives_that_look_like_typical_negatives() -> None:
    from experiments.training import _plausible_positives

    rng = np.random.default_rng(0)
    neg = rng.uniform(0.0, 0.4, 500)
    true_pos = rng.uniform(0.6, 1.0, 95)
    noisy = np.array([0.05, 0.1, 0.12, 0.15, 0.18])  # mislabelled negatives
    pos = np.concatenate([true_pos, noisy])
    kept, n_out = _plausible_positives(pos, neg, 0.5)
    assert n_out == 5 and kept.min() >= 0.6
    # a noise budget: at most max_share of the positives are set aside (the lowest ones)
    kept2, n_out2 = _plausible_positives(pos, neg, 0.5, max_share=0.03)
    assert n_out2 == 3 and kept2.min() == pytest.approx(0.15)
    # calibrating on all positives would put the threshold among the negatives
    assert calibrate_recall_threshold(pos, 0.99) <= 0.1
    assert calibrate_recall_threshold(kept, 0.99) >= 0.6
    # disabled, too few negatives, or most positives implausible: calibrate on everything
    assert _plausible_positives(pos, neg, None)[1] == 0
    assert _plausible_positives(pos, neg[:10], 0.5)[1] == 0
    assert _plausible_positives(noisy, neg, 0.5)[1] == 0  # 10 % of 5 positives: none


def test_noisy_positive_labels_do_not_drag_the_threshold_into_the_negatives() -> None:
    policy = load_policy()
    tax = load_taxonomy(categories=policy.categories)
    exs = _examples()
    # three travel conversations wrongly labelled religion (a spurious annotator answer)
    exs = [replace(e, sensitive=("religion",)) if e.conversation_id in {"n2", "n5", "n8"} else e
           for e in exs]  # fmt: skip
    snap = Snapshot(tuple(exs), (), CATS)
    kw = {"lexicon": dict.fromkeys(CATS, ())}
    robust = train_filter(snap, tax, HashingEmbedder(32), config=TrainConfig(), **kw)
    naive = train_filter(snap, tax, HashingEmbedder(32), config=TrainConfig(label_noise_quantile=None), **kw)  # fmt: skip
    assert robust.calibration["religion"]["suspect_positives"] >= 1
    assert naive.calibration["religion"]["suspect_positives"] == 0
    assert (
        robust.calibration["religion"]["val_false_block"]
        < naive.calibration["religion"]["val_false_block"]
    )


def test_fallback_threshold_is_capped_by_a_false_block_budget() -> None:
    policy = load_policy()
    tax = load_taxonomy(categories=policy.categories)
    # one travel conversation wrongly labelled union_membership (5 real union examples: fallback)
    exs = [replace(e, sensitive=("union_membership",)) if e.conversation_id == "n2" else e
           for e in _examples()]  # fmt: skip
    kw = {"lexicon": dict.fromkeys(CATS, ())}
    snap = Snapshot(tuple(exs), (), CATS)
    res = train_filter(snap, tax, HashingEmbedder(32), config=TrainConfig(), **kw)
    cal = res.calibration["union_membership"]
    assert cal["rule"] == "fallback_low" and cal.get("capped_by_false_block_budget") is True
    assert cal["val_false_block"] <= 0.05
    loose = train_filter(snap, tax, HashingEmbedder(32),
                         config=TrainConfig(fallback_false_block_budget=1.0), **kw)  # fmt: skip
    assert loose.calibration["union_membership"]["val_false_block"] > cal["val_false_block"]
