"""Training: segment-level multiple-instance learning, max aggregation, thresholds with few
positives (fake embedder, no model files)."""

from __future__ import annotations

import pickle
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from experiments.composition import compose_long_dialogues
from experiments.dataset import Example, Snapshot
from experiments.training import (
    CachedEmbedder,
    TrainConfig,
    _balance_sources,
    _capped_floor,
    _drop_implausible_witnesses,
    _fit_segments,
    _plausible_positives,
    _sample_clean_rows,
    calibrate_recall_threshold,
    segment_cap,
    subsample_clean,
    train_filter,
    tune_f1_threshold,
    wilson_interval,
    with_source_columns,
)
from labeling.policy import load_policy
from labeling.taxonomy import load_taxonomy
from targeting.scorer import (
    CLEAN,
    BlendedSegmentModel,
    FilterBundle,
    HashingEmbedder,
    Lexicon,
    segment_words,
)

CATS = ("religion", "health", "union_membership")
NO_LEXICON = Lexicon(dict.fromkeys(CATS, ()), dict.fromkeys(CATS, ()))


# ------------------------------------------------------------------------------ thresholds
def test_recall_threshold_reaches_target() -> None:
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 1, size=500)
    for target in (0.5, 0.9, 0.99, 1.0):
        t = calibrate_recall_threshold(pos, target)
        assert (pos >= t).mean() >= target
        higher = pos[pos > t]
        if higher.size:  # the highest such threshold: the next higher score misses the target
            assert (pos >= higher.min()).mean() < target


def test_recall_threshold_small_and_invalid() -> None:
    assert calibrate_recall_threshold([0.9, 0.2, 0.5], 0.99) == 0.2
    assert calibrate_recall_threshold([0.9, 0.2, 0.5], 0.6) == 0.5
    with pytest.raises(ValueError):
        calibrate_recall_threshold([], 0.9)
    with pytest.raises(ValueError):
        calibrate_recall_threshold([0.1], 0.0)


def test_f1_threshold() -> None:
    t, f1 = tune_f1_threshold([0.9, 0.8, 0.7, 0.3, 0.2, 0.1], [1, 1, 1, 0, 0, 0])
    assert f1 == 1.0 and 0.3 < t <= 0.7


def test_wilson_interval() -> None:
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and 0.25 < hi < 0.35  # 0 of 10 still allows a ~30 % rate
    lo, hi = wilson_interval(50, 100)
    assert lo < 0.5 < hi and hi - lo < 0.2
    assert all(np.isnan(v) for v in wilson_interval(0, 0))


def test_floor_with_few_positives_is_capped_by_the_false_block_budget() -> None:
    rng = np.random.default_rng(0)
    neg = rng.uniform(0.0, 0.5, 200)
    pos = np.array([0.9, 0.8, 0.05])  # three positives, one scoring like the bulk of the negatives
    scores = np.concatenate([pos, neg])
    pos_mask = np.zeros(scores.size, bool)
    pos_mask[:3] = True
    nothing = np.zeros(scores.size, bool)
    # catching all three would need t = 0.05, blocking ~90 % of the negatives: the budget caps it
    thr, capped = _capped_floor(scores, nothing, pos_mask, ~pos_mask, 1.0, 0.02)
    assert capped and (neg >= thr).mean() <= 0.02 + 1e-9 and thr <= 0.8
    # without a budget (1.0) it catches all three
    thr2, capped2 = _capped_floor(scores, nothing, pos_mask, ~pos_mask, 1.0, 1.0)
    assert not capped2 and thr2 == pytest.approx(0.05)
    # positives already blocked by the any-threshold need no floor
    already = pos_mask.copy()
    assert _capped_floor(scores, already, pos_mask, ~pos_mask, 1.0, 0.02) == (1.01, False)


def test_floor_is_capped_per_clean_segment_for_long_dialogues() -> None:
    rng = np.random.default_rng(0)
    # conversation level a floor at 0.6 looks cheap; but clean segments score that high one in a
    # hundred times, so a 20-turn clean dialogue would cross it ~18 % of the time
    clean_segments = np.where(rng.uniform(size=20_000) < 0.01, 0.7, rng.uniform(0.0, 0.3, 20_000))
    cap = segment_cap(clean_segments, 0.005, 20)
    assert cap is not None and cap >= 0.7 - 1e-9
    p_dialogue = 1 - (1 - (clean_segments >= cap + 1e-9).mean()) ** 20
    assert p_dialogue <= 0.005
    # no reference length, or no clean segment: no cap
    assert segment_cap(clean_segments, 0.005, None) is None
    assert segment_cap(clean_segments[:0], 0.005, 20) is None
    # too few segments to estimate a 1-in-4000 quantile: it lies beyond the sample, so the cap is
    # at least the highest clean segment score (a floor below it would block a clean segment
    # seen in training)
    few = clean_segments[:1000]
    assert segment_cap(few, 0.005, 20) == few.max()
    assert segment_cap(few, 0.005, 20) >= float(np.quantile(few, 0.999))
    scores = np.concatenate([np.array([0.9, 0.6, 0.65]), rng.uniform(0.0, 0.5, 200)])
    pos_mask = np.zeros(scores.size, bool)
    pos_mask[:3] = True
    nothing = np.zeros(scores.size, bool)
    assert _capped_floor(scores, nothing, pos_mask, ~pos_mask, 1.0, 0.02) == (0.6, False)
    thr, capped = _capped_floor(scores, nothing, pos_mask, ~pos_mask, 1.0, 0.02, cap)
    assert capped and thr == cap


def test_calibration_sets_aside_positives_that_look_like_typical_negatives() -> None:
    rng = np.random.default_rng(0)
    neg = rng.uniform(0.0, 0.4, 500)
    noisy = np.array([0.05, 0.1, 0.12, 0.15, 0.18])  # mislabelled clean conversations
    pos = np.concatenate([rng.uniform(0.6, 1.0, 95), noisy])
    kept, n_out = _plausible_positives(pos, neg, 0.5)
    assert n_out == 5 and kept.min() >= 0.6
    kept2, n_out2 = _plausible_positives(pos, neg, 0.5, max_share=0.03)  # a noise budget
    assert n_out2 == 3 and kept2.min() == pytest.approx(0.15)
    assert calibrate_recall_threshold(pos, 0.99) <= 0.1
    assert calibrate_recall_threshold(kept, 0.99) >= 0.6
    assert _plausible_positives(pos, neg, None)[1] == 0
    assert _plausible_positives(pos, neg[:10], 0.5)[1] == 0
    assert _plausible_positives(noisy, neg, 0.5)[1] == 0  # 10 % of 5 positives: none


# ------------------------------------------------------------------------------ aggregation
class KeywordSegmentModel:
    """A stand-in segment classifier: P(religion) = 0.9 for segments that mention 'mosque'."""

    classes_ = np.array([CLEAN, "religion"])

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts

    def predict_proba(self, x: Any) -> np.ndarray:
        # x rows follow the segment texts the bundle featurised; the test passes them through
        p = np.array([0.9 if "mosque" in t else 0.02 for t in self.texts])
        return np.stack([1 - p, p], axis=1)


class TextFeatures(FilterBundle):
    def segment_features(self, texts: Any, embeddings: Any) -> Any:
        self.segment_model.texts = list(texts)
        return np.zeros((len(texts), 1))


def _keyword_bundle() -> FilterBundle:
    b = TextFeatures.empty(
        CATS, segment_model=KeywordSegmentModel([]), segment_classes=(CLEAN, "religion"),
        any_threshold=0.5, uses_embeddings=False, segment_chars=120,
    )  # fmt: skip
    return b


def _dialogue(n: int, sensitive_at: int | None) -> list[str]:
    turns = [
        f"{'user' if i % 2 == 0 else 'assistant'}: booking a table for {i} people" for i in range(n)
    ]
    if sensitive_at is not None:
        turns[sensitive_at] = "user: is there a mosque near the restaurant"
    return turns


def test_one_sensitive_turn_anywhere_blocks_and_names_its_turn() -> None:
    b = _keyword_bundle()
    for pos in (0, 15, 29):
        (v,) = b.judge([_dialogue(30, pos)], None)
        assert v.blocked and v.sensitive_category == "religion" and v.trigger_turn == pos
        assert len(v.turn_scores) == 30 and v.turn_scores[pos] == pytest.approx(0.9)
        assert max(s for i, s in enumerate(v.turn_scores) if i != pos) < 0.5
    (clean,) = b.judge([_dialogue(30, None)], None)
    assert not clean.blocked and clean.trigger_turn is None


def test_a_sensitive_sentence_inside_a_long_turn_is_seen() -> None:
    b = _keyword_bundle()
    long_turn = "user: " + " ".join(f"Sentence number {i} is about pasta." for i in range(40))
    (v,) = b.judge([[long_turn]], None)
    assert not v.blocked
    (v,) = b.judge([[long_turn + " Also, is there a mosque nearby?"]], None)
    assert v.blocked and v.trigger_turn == 0


def test_conversation_unit_truncation_is_what_segments_fix() -> None:
    # the whole conversation as one unit (the old design) sees the late turn only if its
    # features do; with per-segment scoring the verdict does not depend on the position
    b = replace(_keyword_bundle(), unit="conversation")
    (v,) = b.judge([_dialogue(30, 29)], None)
    assert v.blocked  # the keyword stand-in reads the whole text; real encoders truncate


# ------------------------------------------------------------------------------ training
def _examples() -> list[Example]:
    rng = np.random.default_rng(1)
    fillers = ["today", "please", "thanks", "quickly", "now", "later", "again", "soon"]
    out: list[Example] = []
    for i in range(360):  # as in real traffic, most conversations are clean
        f = " ".join(rng.choice(fillers, 3))
        small_talk = [f"user: hello there {f}", "assistant: hi, how can I help?"]
        if i % 6 == 0:  # the sensitive turn sits among neutral ones
            turns = [*small_talk, f"user: where is the church and mosque for scripture prayer {f}",
                     "assistant: here are some options", "user: thanks bye"]  # fmt: skip
            out.append(Example(f"r{i}", tuple(turns), ("religion",), ("422",)))
        elif i % 6 == 1:
            turns = [*small_talk, f"user: my doctor prescribed medication for the illness {f}"]
            out.append(Example(f"h{i}", tuple(turns), ("health",), None))
        else:
            turns = [*small_talk, f"user: book a cheap flight and hotel for travel {f}",
                     "assistant: here are some options", "user: thanks bye"]  # fmt: skip
            out.append(Example(f"n{i}", tuple(turns), (), ("653",)))
    return out


def _train(exs: list[Example], **cfg: Any) -> Any:
    tax = load_taxonomy(categories=load_policy().categories)
    return train_filter(Snapshot(tuple(exs), (), CATS), tax, HashingEmbedder(32),
                        config=TrainConfig(**cfg), lexicon=NO_LEXICON)  # fmt: skip


def test_multiple_instance_training_finds_the_sensitive_turn() -> None:
    res = _train(_examples())
    # witnesses: the religion turn (index 2) of each religion conversation, not the small talk
    rel = [w for cid, w in res.witnesses.items() if cid.startswith("r")]
    assert rel and sum(1 for w in rel if 2 in w) / len(rel) >= 0.9
    assert sum(1 for w in rel if 0 in w or 4 in w) / len(rel) <= 0.2
    cal = res.calibration["any"]
    assert cal["leak"]["rate"] <= 0.05 and cal["false_block"]["rate"] <= 0.05
    assert 0.0 <= cal["leak"]["ci95"][0] <= cal["leak"]["rate"] <= cal["leak"]["ci95"][1]
    assert res.bundle.sensitive_rules["union_membership"] in ("prototype", "lexicon_only")
    b = res.bundle
    vs = b.judge([
        ("user: book a cheap flight and hotel for travel", "assistant: done"),
        ("user: book a cheap flight", "assistant: done", "user: where is the church and mosque for scripture prayer"),
    ], HashingEmbedder(32))  # fmt: skip
    assert not vs[0].blocked and vs[1].blocked and vs[1].trigger_turn == 2
    assert vs[1].sensitive_category == "religion"
    # interests are learned where known; out-of-fold probabilities for the label-error check
    assert set(b.interest_ids) <= {"422", "653"}
    known = {e.conversation_id for e in _examples() if e.interests is not None}
    assert set(res.oof_interests) == known


def test_parallel_fits_give_the_same_model() -> None:
    one, two = _train(_examples(), n_jobs=1), _train(_examples(), n_jobs=2)
    assert one.bundle.any_threshold == two.bundle.any_threshold
    assert one.bundle.sensitive_thresholds == two.bundle.sensitive_thresholds
    np.testing.assert_array_equal(one.oof_any, two.oof_any)
    np.testing.assert_array_equal(one.bundle.segment_model.coef_, two.bundle.segment_model.coef_)
    assert one.bundle.interest_thresholds == two.bundle.interest_thresholds


def test_blended_segment_head_averages_the_linear_model_and_the_network() -> None:
    res = _train(_examples(), segment_head="blend", segment_net_hidden=16, segment_net_epochs=50)
    m = res.bundle.segment_model
    assert isinstance(m, BlendedSegmentModel) and m.w == 0.5
    # the network sees only the dense columns: the embedding (32) and the cue counts (3)
    assert len(m.dense_cols) == 32 + len(CATS)
    b = res.bundle
    texts = ["user: where is the church and mosque for scripture prayer", "user: book a flight"]
    x = b.segment_features(texts, HashingEmbedder(32).embed(texts))
    want = 0.5 * m.linear.predict_proba(x) + 0.5 * m.network.predict_proba(m.dense(x))
    np.testing.assert_allclose(m.predict_proba(x), want)
    assert b.judge([("user: where is the church and mosque for scripture prayer",)],
                   HashingEmbedder(32))[0].blocked  # fmt: skip
    with pytest.raises(ValueError, match="segment_head"):
        _train(_examples(), segment_head="forest")


def test_short_segment_cues_are_dense_columns_of_the_trained_model() -> None:
    lex = Lexicon(dict.fromkeys(CATS, ()), {"religion": ("church",), "health": ("doctor",),
                                            "union_membership": ()})  # fmt: skip
    tax = load_taxonomy(categories=load_policy().categories)
    res = train_filter(Snapshot(tuple(_examples()), (), CATS), tax, HashingEmbedder(32),
                       config=TrainConfig(segment_head="blend", segment_net_hidden=16,
                                          segment_net_epochs=5, cue_short_weight=2.0),
                       lexicon=lex)  # fmt: skip
    b, m = res.bundle, res.bundle.segment_model
    assert b.cue_short_weight == 2.0
    # the embedding (32), the cue counts (3) and the short-segment cues (3), the last columns
    assert len(m.dense_cols) == 32 + 2 * len(CATS)
    texts = ["user: church", "user: book a flight"]
    x = np.asarray(b.segment_features(texts, HashingEmbedder(32).embed(texts)).todense())
    assert x[0, -len(CATS) + CATS.index("religion")] == 2.0
    assert int(m.dense_cols[-1]) == x.shape[1] - 1
    assert x[1, -2 * len(CATS) :].sum() == 0


def test_blended_segment_head_refuses_models_fitted_on_different_classes() -> None:
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(0).normal(size=(12, 3))
    a = LogisticRegression().fit(x, ["clean", "health"] * 6)
    b = LogisticRegression().fit(x, ["clean", "religion"] * 6)
    with pytest.raises(ValueError, match="different classes"):
        BlendedSegmentModel(a, b, np.arange(3), 0.5)


def test_composed_long_dialogues_block_late_turns_only() -> None:
    exs = _examples()
    res = _train(exs)
    hosts = [Example(f"sgd-{i}", tuple(f"user: book a cheap flight and hotel number {j}" for j in range(14)), (), None)
             for i in range(20)]  # fmt: skip
    donors = [Example(f"hb-{i}", ("user: where is the church and mosque for scripture prayer",), ("religion",), None)
              for i in range(10)] + [Example(f"cl-{i}", ("user: book a cheap flight",), (), None) for i in range(10)]  # fmt: skip
    comp = compose_long_dialogues(hosts + donors, n=10, seed=0)
    assert len(comp.sensitive) == 10 and len(comp.controls) == 10
    # each donor once: sizes beyond the donors give every donor, the controls sized on their own
    more = compose_long_dialogues(hosts + donors, n=50, seed=0, n_controls=4)
    assert len(more.sensitive) == 10 and len(more.controls) == 4
    assert len(set(more.donors.values())) == 14
    # hosts spread evenly: 20 hosts, 10 + 10 items -> no host twice in a kind; at random, some are
    spread = compose_long_dialogues(hosts + donors, n=10, seed=0, spread_hosts=True)
    for kind in (spread.sensitive, spread.controls):
        used = [e.conversation_id.split(":", 1)[1].split("+", 1)[0] for e in kind]
        assert len(set(used)) == len(used) == 10
    drawn = [e.conversation_id.split(":", 1)[1].split("+", 1)[0] for e in comp.examples]
    assert len(set(drawn)) < len(drawn)
    assert all(e.origin == "augmented" and len(e.turns) == 15 for e in comp.examples)
    vs = res.bundle.judge([e.turns for e in comp.examples], HashingEmbedder(32))
    assert all(v.blocked for v in vs[:10]) and not any(v.blocked for v in vs[10:])
    for e, v in zip(comp.sensitive, vs[:10], strict=True):
        a, b = comp.spans[e.conversation_id]
        assert b == a + 1 and v.trigger_turn == a >= 14 - 14 // 3


def test_composed_training_dialogues_have_their_inserted_turn_as_witness() -> None:
    hosts = [Example(f"sgd-{i}", tuple(f"user: book a cheap flight and hotel number {j}" for j in range(14)), (), None)
             for i in range(12)]  # fmt: skip
    donors = [Example(f"hb-{i}", (f"user: where is the church and mosque for scripture prayer {i}",), ("religion",), None)
              for i in range(8)]  # fmt: skip
    exs = _examples() + hosts + donors
    plain = _train(exs)
    res = _train(exs, composed_training=5)
    assert plain.bundle.meta["n_composed"] == 0 and res.bundle.meta["n_composed"] == 5
    composed = [i for i in res.example_ids if i.startswith("aug-")]
    assert len(composed) == 5 and not any(i.startswith("aug-") for i in plain.example_ids)
    for cid in composed:
        pos = int(cid.rsplit("@", 1)[1])
        assert res.witnesses[cid] == (pos,)  # the inserted turn, never a host turn
        k = res.example_ids.index(cid)
        # augmented: no part in the calibration
        assert res.val_is_gold is not None and not res.val_is_gold[k]
    assert res.bundle.judge([hosts[0].turns[:10] + donors[0].turns + hosts[0].turns[10:]],
                            HashingEmbedder(32))[0].blocked  # fmt: skip


def test_composed_witnesses_are_the_inserted_turns_whatever_round_zero_chose() -> None:
    from experiments.composition import ComposedSet
    from experiments.training import _composed_witnesses

    ids = ["r1", "aug-sensitive:sgd-1+hb-1@3"]
    comp = ComposedSet((), (), {ids[1]: (3, 4)}, {ids[1]: "hb-1"})
    seg_owner = np.array([0, 0, 1, 1, 1, 1, 1])
    seg_turn = [0, 1, 0, 1, 2, 3, 4]
    round0 = np.array([False, True, True, False, False, False, False])  # a host turn chosen
    got = _composed_witnesses(round0, seg_owner, seg_turn, ids, comp)
    assert got.tolist() == [False, True, False, False, False, True, False]
    assert round0[2]  # the input is not modified


def test_category_without_positives_uses_prototypes_or_lexicon() -> None:
    tax = load_taxonomy(categories=load_policy().categories)
    snap = Snapshot(tuple(_examples()), (), CATS)
    lex = Lexicon({"union_membership": ("union rep",)}, {})
    res = train_filter(snap, tax, HashingEmbedder(32), lexicon=lex,
                       prototype_texts={"union_membership": ["union dues strike vote"]})  # fmt: skip
    assert res.bundle.sensitive_rules["union_membership"] == "prototype"
    assert (
        "union_membership"
        in res.bundle.judge([("user: Our union rep called",)], HashingEmbedder(32))[0].sensitive
    )
    res2 = train_filter(snap, tax, None, config=TrainConfig(use_embeddings=False), lexicon=lex)
    assert res2.bundle.sensitive_rules["union_membership"] == "lexicon_only"
    assert res2.bundle.judge([("user: ask my union rep",)], None)[0].sensitive == (
        "union_membership",
    )


def test_train_rejects_empty_snapshot() -> None:
    with pytest.raises(ValueError):
        train_filter(Snapshot((), (), CATS), load_taxonomy(), HashingEmbedder())


def test_noisy_positive_labels_are_set_aside_from_the_calibration() -> None:
    exs = [replace(e, sensitive=("religion",)) if e.conversation_id in {"n2", "n3", "n4"} else e
           for e in _examples()]  # fmt: skip
    robust = _train(exs)
    naive = _train(exs, label_noise_quantile=None)
    assert robust.calibration["any"]["suspect_positives"] >= 1
    assert naive.calibration["any"]["suspect_positives"] == 0
    assert robust.bundle.any_threshold >= naive.bundle.any_threshold
    assert (
        robust.calibration["any"]["false_block"]["rate"]
        <= naive.calibration["any"]["false_block"]["rate"]
    )


def test_cached_embedder_embeds_each_text_once() -> None:
    class Counting(HashingEmbedder):
        calls = 0

        def embed(self, texts: Any) -> Any:
            Counting.calls += len(texts)
            return super().embed(texts)

    c = CachedEmbedder(Counting(16))
    c.embed(["a b", "c d", "a b"])
    c.embed(["a b"])
    assert Counting.calls == 2 and len(c.cache) == 2


def test_every_phase_reports_progress_up_to_its_total() -> None:
    """Training shows where it is in every phase, evaluation included (no silent minutes), and
    reports on the calling thread: a flow's Prefect context (the server it reports to) is not
    in the fitting threads, where a report would start a temporary Prefect server."""
    import threading

    from experiments.evaluation import evaluate_bundle

    seen: list[tuple[str, int, int]] = []
    threads: set[int] = set()

    def progress(*a: Any) -> None:
        seen.append(a)
        threads.add(threading.get_ident())

    tax = load_taxonomy(categories=load_policy().categories)
    exs = _examples()
    res = train_filter(Snapshot(tuple(exs), (), CATS), tax, HashingEmbedder(32),
                       config=TrainConfig(n_jobs=2), lexicon=NO_LEXICON,
                       progress=progress)  # fmt: skip
    assert threads == {threading.get_ident()}
    stages = list(dict.fromkeys(s for s, _, _ in seen))
    assert stages == ["embed", "mil round 0", "out-of-fold", "thresholds", "interests"]
    for stage in stages:
        last = [(d, t) for s, d, t in seen if s == stage][-1]
        assert last[0] == last[1] > 0, (stage, last)
    done: list[tuple[int, int]] = []
    evaluate_bundle(res.bundle, exs, HashingEmbedder(32), batch_size=7,
                    progress=lambda d, t: done.append((d, t)))  # fmt: skip
    assert done[-1] == (len(exs), len(exs)) and len(done) == -(-len(exs) // 7)
    assert [d for d, _ in done] == sorted(d for d, _ in done)


def test_the_clean_caps_keep_every_augmented_example_and_do_not_count_it() -> None:
    def ex(cid: str, sensitive: tuple[str, ...] = (), origin: str = "gold") -> Example:
        return Example(cid, (f"user: {cid}",), sensitive, None, 1.0, origin)

    train = [ex(f"c{k}") for k in range(6)] + [ex("s", ("health",)), ex("a", (), "augmented")]
    kept, left_out = subsample_clean(train, TrainConfig(max_clean_conversations=2))
    ids = {e.conversation_id for e in kept}
    assert {"s", "a"} <= ids and len(ids) == 4 and left_out == 4
    assert subsample_clean(train, TrainConfig(max_clean_conversations=None)) == (train, 0)

    # rows: 4 gold clean, 1 augmented clean, 1 sensitive; a cap of 2 samples the gold clean
    # rows only, reweighted to their full count, and keeps the augmented row as it is
    idx = np.arange(6)
    cls = [CLEAN] * 5 + ["health"]
    w = np.array([1.0, 1.0, 1.0, 1.0, 7.0, 1.0])
    exempt = np.array([False] * 4 + [True, False])
    texts = [f"text {k}" for k in range(6)]
    i2, c2, w2 = _sample_clean_rows(idx, cls, w, texts, 2, "salt", exempt)
    assert c2.count(CLEAN) == 3 and "health" in c2
    assert 4 in i2 and 5 in i2 and len(i2) == 4
    assert dict(zip(i2.tolist(), w2.tolist(), strict=True))[4] == 7.0
    assert sorted(w2.tolist()) == [1.0, 2.0, 2.0, 7.0]
    assert len(_sample_clean_rows(idx, cls, w, texts, 2, "salt")[0]) == 3  # not exempt


def test_source_balance_moves_each_side_towards_the_same_total_per_source() -> None:
    exs = [Example(f"{src}-{i}", ("user: x",), sens, None)
           for src, n, sens in (("a", 6, ()), ("b", 2, ()), ("a", 1, ("health",)),
                                ("b", 3, ("health",)))
           for i in range(n)]  # fmt: skip
    exs = [Example(f"{e.conversation_id}-{k}", e.turns, e.sensitive, None)
           for k, e in enumerate(exs)]  # fmt: skip
    owner = np.arange(len(exs))
    idx = np.arange(len(exs))
    cls = [CLEAN if not e.sensitive else "health" for e in exs]
    w = np.ones(len(exs))
    assert _balance_sources(idx, cls, w, owner, exs, 0.0) is w
    full = _balance_sources(idx, cls, w, owner, exs, 1.0)
    clean_a, clean_b = full[:6].sum(), full[6:8].sum()
    sens_a, sens_b = full[8:9].sum(), full[9:12].sum()
    assert clean_a == pytest.approx(clean_b) and sens_a == pytest.approx(sens_b)
    assert clean_a + clean_b == pytest.approx(8) and sens_a + sens_b == pytest.approx(4)
    half = _balance_sources(idx, cls, w, owner, exs, 0.5)
    # half-way: b's clean rows (2 of 8 before, 4 of 8 fully balanced) weigh 2.93 of 8
    assert half[6:8].sum() == pytest.approx(8 * 2 * 2**0.5 / (6 * (2 / 3) ** 0.5 + 2 * 2**0.5))
    assert half[:8].sum() == pytest.approx(8)


def test_unused_false_block_lowers_the_threshold_to_the_target() -> None:
    from experiments.training import lower_to_false_block

    clean = np.array([0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.04, 0.03, 0.02])
    none = np.zeros(10, dtype=bool)
    # the leak budget's 0.95 blocks 0 of 10; a 30 % target blocks 3: down to the third score
    assert lower_to_false_block(0.95, clean, none, 0.3) == 0.4
    # already past the target: unchanged
    assert lower_to_false_block(0.35, clean, none, 0.3) == 0.35
    # conversations the vocabulary blocks count towards the target
    lex = np.zeros(10, dtype=bool)
    lex[[0, 1]] = True
    assert lower_to_false_block(0.95, clean, lex, 0.3) == 0.4
    lex[2] = True
    assert lower_to_false_block(0.95, clean, lex, 0.3) == 0.95
    assert lower_to_false_block(0.95, clean[:0], none[:0], 0.3) == 0.95


def test_the_false_block_target_lowers_the_threshold_no_further_than_its_floor() -> None:
    from experiments.training import any_threshold

    pos = np.array([0.99, 0.98, 0.97, 0.96])
    clean = np.array([0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.04, 0.03, 0.02])
    none = np.zeros(10, dtype=bool)
    args = (pos, clean, none, 0.02, 0.3, None, 0.1)
    assert any_threshold(*args) == (0.4, 0.96, 0)
    assert any_threshold(*args, target_floor=0.45)[0] == 0.45
    assert any_threshold(*args, target_floor=0.1)[0] == 0.4
    # a floor above the leak budget's threshold never raises it
    assert any_threshold(*args, target_floor=0.99)[0] == 0.96


def test_positives_the_vocabulary_blocks_count_as_caught_in_the_leak_budget() -> None:
    from experiments.training import any_threshold

    pos = np.linspace(0.99, 0.50, 50)  # 50 positives the vocabulary does not block
    clean = np.full(20, 0.01)
    none = np.zeros(20, dtype=bool)
    args = (pos, clean, none, 0.02, None, None, 0.1, None)
    # alone: 2 % of 50 may leak -> 49 must be caught: the 49th highest score
    assert any_threshold(*args)[0] == pos[48]
    # 50 more that the vocabulary blocks: 2 % of 100 = 2 may leak, all among the 50 -> the 48th
    assert any_threshold(*args, pos_blocked=50)[0] == pos[47]
    # the vocabulary blocking nearly all: the threshold still catches the highest-scoring one
    assert any_threshold(*args, pos_blocked=10_000)[0] == pos[0]


def test_recalibration_keeps_the_false_block_target_of_training() -> None:
    from experiments.training import recalibrate

    res = _train(_examples(), false_block_target=0.3)
    assert res.calibration["any"]["threshold"] < res.calibration["any"]["leak_budget_threshold"]
    assert res.calibration["any"]["false_block_target_floor"] is None
    again = recalibrate(res, res.bundle.meta["train_config"]["leak_budget"])
    assert again.bundle.any_threshold == res.bundle.any_threshold
    # per turn: the floor is the score 30 % / 20 turns of the clean segments reach, and the
    # threshold stays at or above it; recalibration keeps it
    per_turn = _train(_examples(), false_block_target=0.3, false_block_target_per_turn=True)
    cal = per_turn.calibration["any"]
    assert cal["false_block_target_floor"] is not None
    assert cal["threshold"] == max(res.bundle.any_threshold, cal["false_block_target_floor"])
    assert cal["threshold"] > res.bundle.any_threshold
    again = recalibrate(per_turn, per_turn.bundle.meta["train_config"]["leak_budget"])
    assert again.bundle.any_threshold == per_turn.bundle.any_threshold


def test_segment_words_drop_the_role_tag_only() -> None:
    assert segment_words("user: Re: NCAA finals") == "re: ncaa finals"
    assert segment_words("assistant/voice: Héllo, note: x") == "hello, note: x"
    assert segment_words("user:   what time is it") == "what time is it"
    # only a leading tag: a colon later in the text stays
    assert segment_words("plain text: with a colon") == "plain text: with a colon"


def test_word_features_without_role_tags_or_stop_words_survive_pickling() -> None:
    plain = _train(_examples()).bundle.segment_tfidf.vocabulary_
    assert {"user", "assistant", "how"} <= set(plain)
    res = _train(_examples(), tfidf_role_tags=False, tfidf_stop_words="english")
    vocab = set(res.bundle.segment_tfidf.vocabulary_)
    assert not vocab & {"user", "assistant", "how", "there", "user hello", "assistant hi"}
    assert {"church", "mosque", "doctor", "hello"} <= vocab
    again = pickle.loads(pickle.dumps(res.bundle))
    texts = ["user: where is the church and mosque", "assistant: here are some options"]
    vectors = HashingEmbedder(32).embed(texts)
    p_any = [
        b.segment_probabilities(b.segment_features(texts, vectors), 2)[0]
        for b in (res.bundle, again)
    ]
    np.testing.assert_array_equal(p_any[0], p_any[1])
    assert p_any[0][0] > p_any[0][1]  # the religion segment over the neutral one


def test_the_word_columns_weigh_as_configured() -> None:
    texts = ["user: where is the church and mosque"]
    vectors = HashingEmbedder(32).embed(texts)
    one = _train(_examples()).bundle
    two = _train(_examples(), tfidf_weight=2.0).bundle
    assert two.tfidf_weight == 2.0 and one.tfidf_weight == 1.0
    n = len(one.segment_tfidf.vocabulary_)
    words = slice(32, 32 + n)  # the embedding first, then the word columns
    f1 = one.segment_features(texts, vectors).toarray()
    f2 = two.segment_features(texts, vectors).toarray()
    np.testing.assert_allclose(f2[:, words], 2.0 * f1[:, words])
    np.testing.assert_allclose(f2[:, :32], f1[:, :32])
    state = dict(two.__dict__)
    del state["tfidf_weight"]  # a model pickled before the field existed
    old = FilterBundle.__new__(FilterBundle)
    old.__setstate__(state)
    assert old.tfidf_weight == 1.0


def test_implausible_positives_give_no_witness_within_their_share() -> None:
    # 100 clean one-segment conversations scoring 0..0.099; 10 sensitive two-segment ones
    exs = [Example(f"c{i}", ("user: x",), (), None) for i in range(100)]
    exs += [Example(f"s{i}", ("user: a", "user: b"), ("health",), None) for i in range(10)]
    exs.append(Example("aug", ("user: a", "user: b"), ("health",), None, origin="augmented"))
    owner = np.array(list(range(100)) + [k for k in range(100, 111) for _ in range(2)])
    clean = np.arange(100) / 1000.0
    # s0, s1 and aug: best segment under the clean 99th percentile (0.098); s2: 0.5
    best = [0.01, 0.02, 0.5, *[0.9] * 7, 0.001]
    sens = np.array([[b / 2, b] for b in best]).ravel()
    p_any = np.concatenate([clean, sens])
    witness = np.concatenate([np.zeros(100, bool), np.tile([False, True], 11)])
    out, n = _drop_implausible_witnesses(witness, p_any, owner, exs, share=0.1)
    dropped = {exs[k].conversation_id for k in set(owner[witness]) - set(owner[out])}
    assert n == len(dropped)
    assert dropped == {"s0"}  # one of 10 gold positives; the lowest; never the augmented one
    out, n = _drop_implausible_witnesses(witness, p_any, owner, exs, share=0.5)
    dropped = {exs[k].conversation_id for k in set(owner[witness]) - set(owner[out])}
    assert n == len(dropped)
    assert dropped == {"s0", "s1"}  # only those that score like clean segments
    assert not out[:100].any() and (out <= witness).all()


def test_training_reports_the_conversations_left_without_a_witness() -> None:
    exs = _examples()
    # two religion conversations whose sensitive turn is plain small talk: labels no text explains
    exs[0] = Example(
        "r0", ("user: hello there", "assistant: hi, how can I help?"), ("religion",), None
    )
    exs[6] = Example(
        "r6", ("user: hello there", "assistant: hi, how can I help?"), ("religion",), None
    )
    res = _train(exs, witness_noise_share=0.1)
    assert res.bundle.meta["witnesses_dropped"] >= 1
    assert "r0" not in res.witnesses and "r6" not in res.witnesses
    assert _train(exs).bundle.meta["witnesses_dropped"] == 0


def test_source_columns_are_appended_per_source_and_dropped_from_the_model() -> None:
    exs = [Example(f"{src}-{i}", ("user: x",), (), None) for src in ("a", "b") for i in range(2)]
    owner = np.array([0, 0, 1, 2, 3])
    x = np.ones((5, 3))
    same, k = with_source_columns(x, owner, exs, 0.0)
    assert same is x and k == 0
    x2, k = with_source_columns(x, owner, exs, 2.0)
    assert k == 2 and x2.shape == (5, 5)
    np.testing.assert_array_equal(x2.toarray()[:, 3:], [[2, 0], [2, 0], [2, 0], [0, 2], [0, 2]])
    # the model fitted with them scores served features (no source columns) as if they were 0
    cfg = TrainConfig(source_columns=1.0)
    rng = np.random.default_rng(0)
    xf = np.hstack([rng.normal(size=(40, 3)), np.repeat(np.eye(2), 20, axis=0)])
    y = [CLEAN if i % 3 else "health" for i in range(40)]
    full = _fit_segments(xf, y, np.ones(40), replace(cfg, source_columns=0.0))
    dropped = _fit_segments(xf, y, np.ones(40), cfg, drop_last=2)
    assert dropped.coef_.shape == (1, 3)
    np.testing.assert_allclose(dropped.coef_, full.coef_[:, :3])
    served = np.hstack([xf[:, :3], np.zeros((40, 2))])
    np.testing.assert_allclose(dropped.predict_proba(xf[:, :3]), full.predict_proba(served))


def _convention_examples() -> list[Example]:
    """Source ``a``: travel requests (clean), medication (health), and a few people losing
    their temper (clean); source ``b`` calls every such temper question health."""
    rng = np.random.default_rng(2)
    fillers = ["today", "please", "thanks", "quickly", "now", "later", "again", "soon"]
    out: list[Example] = []
    for i in range(240):
        f = " ".join(rng.choice(fillers, 3))
        if i % 8 == 0:
            out.append(Example(f"a-{i}", (f"user: my doctor prescribed medication {f}",),
                               ("health",), None))  # fmt: skip
        elif i % 8 == 1:
            out.append(
                Example(f"a-{i}", (f"user: i lose my temper with my parents {f}",), (), None)
            )
        elif i % 8 in (2, 3):
            out.append(Example(f"b-{i}", (f"user: i lose my temper with my parents {f}",),
                               ("health",), None))  # fmt: skip
        else:
            out.append(Example(f"a-{i}", (f"user: book a cheap flight and hotel {f}",), (), None))
    return out


def test_source_columns_take_a_sources_convention_off_its_wording() -> None:
    exs = _convention_examples()
    probe = [("user: i lose my temper with my parents",)]
    plain = _train(exs)
    with_src = _train(exs, source_columns=1.0)
    p_plain = plain.bundle.score(probe, HashingEmbedder(32))
    p_src = with_src.bundle.score(probe, HashingEmbedder(32))
    # where source b's label is its convention, the wording alone scores lower ...
    assert p_src.any[0] < p_plain.any[0]
    # ... and medication, health in both, still scores high
    med = [("user: my doctor prescribed medication",)]
    assert with_src.bundle.score(med, HashingEmbedder(32)).any[0] > 0.5
