"""Routing rules, budget priority, diversity, QA sample and overlap (labeling/routing.py)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from labeling.routing import (
    Dispatch,
    ProposalView,
    Reason,
    Route,
    RoutingConfig,
    is_sensitive_suspect,
    review_reasons,
    route,
    shingles,
)


def pv(
    cid: str,
    *,
    u: float = 0.1,
    flags: tuple[str, ...] = (),
    sens: dict[str, float] | None = None,
    text: str | None = None,
    h: str | None = None,
    emb: list[float] | None = None,
) -> ProposalView:
    return ProposalView(
        conversation_id=cid,
        interests={"653": 0.9},
        sensitive=sens or {},
        uncertainty=u,
        flags=frozenset(flags),
        proposer_id="p",
        content_hash=h,
        text=text if text is not None else f"unique text number {cid} " * 3,
        embedding=emb,
    )


CFG = RoutingConfig(qa_sample_rate=0.0, overlap_share=0.0, budget=100)


def test_confident_clean_proposal_is_auto_accepted() -> None:
    res = route([pv("a")], CFG)
    (d,) = res.decisions
    assert d.route == Route.AUTO_ACCEPTED and d.dispatch == Dispatch.AUTO and d.reasons == ()
    assert res.counts["auto_accepted"] == 1 and res.counts["needs_review"] == 0


@pytest.mark.parametrize(
    ("proposal", "reason"),
    [
        (pv("s", flags=("possible_sensitive",), sens={"health": 0.6}), Reason.SENSITIVE_SUSPECT),
        (pv("s2", flags=("possible_sensitive",)), Reason.SENSITIVE_SUSPECT),
        (pv("s3", sens={"religion": 0.4}), Reason.SENSITIVE_SUSPECT),
        (pv("d", flags=("llm_knn_disagree",)), Reason.LLM_KNN_DISAGREE),
        (pv("u", u=0.8), Reason.HIGH_UNCERTAINTY),
        (pv("i", flags=("llm_invalid_output",)), Reason.LLM_INVALID_OUTPUT),
    ],
)
def test_each_rule_sends_to_review(proposal: ProposalView, reason: Reason) -> None:
    assert reason in review_reasons(proposal, CFG)
    (d,) = route([proposal], CFG).decisions
    assert d.route == Route.NEEDS_REVIEW and d.dispatch == Dispatch.SEND


def test_confident_sensitive_call_is_not_a_suspect() -> None:
    p = pv("x", flags=("possible_sensitive",), sens={"health": 0.97})
    assert not is_sensitive_suspect(p, CFG)
    assert route([p], CFG).decisions[0].route == Route.AUTO_ACCEPTED
    # tiny background scores below the floor are no signal
    assert not is_sensitive_suspect(pv("y", sens={"health": 0.05}), CFG)


def test_uncertainty_threshold_is_strict() -> None:
    cfg = RoutingConfig(uncertainty_threshold=0.5, qa_sample_rate=0.0)
    assert review_reasons(pv("a", u=0.5), cfg) == ()
    assert review_reasons(pv("a", u=0.51), cfg) == (Reason.HIGH_UNCERTAINTY,)


def test_budget_priority_sensitive_first_then_uncertainty_and_rest_queued() -> None:
    items = [pv(f"u{i}", u=0.4 + i / 100) for i in range(10)]
    items += [pv("sens-low-u", u=0.1, flags=("possible_sensitive",))]
    res = route(items, RoutingConfig(budget=4, qa_sample_rate=0.0, overlap_share=0.0))
    sent = [d.conversation_id for d in res.to_send]
    assert "sens-low-u" in sent
    assert set(sent) == {"sens-low-u", "u9", "u8", "u7"}
    queued = {d.conversation_id for d in res.queued}
    assert queued == {f"u{i}" for i in range(7)}  # over budget: waits, not dropped
    assert res.counts["dispatch_send"] == 4 and res.counts["dispatch_queued"] == 7
    assert all(d.route == Route.NEEDS_REVIEW for d in res.queued)


def test_near_duplicates_are_deferred_by_text_hash_and_embedding() -> None:
    same = "please book me a flight to lisbon next friday in the morning"
    items = [pv(f"t{i}", u=0.9 - i / 100, text=same) for i in range(5)]
    items += [pv("h1", u=0.7, h="H"), pv("h2", u=0.69, h="H")]
    items += [
        pv("e1", u=0.6, emb=[1.0, 0.0]),
        pv("e2", u=0.59, emb=[0.999, 0.01]),
        pv("e3", u=0.58, emb=[0.0, 1.0]),
    ]
    res = route(items, RoutingConfig(budget=100, qa_sample_rate=0.0, uncertainty_threshold=0.3))
    sent = {d.conversation_id for d in res.to_send}
    assert sent == {"t0", "h1", "e1", "e3"}
    by = res.by_id()
    assert by["t3"].dispatch == Dispatch.QUEUED and by["t3"].duplicate_of == "t0"
    assert by["h2"].duplicate_of == "h1" and by["e2"].duplicate_of == "e1"
    assert res.counts["deferred_duplicate"] == 6


def test_qa_sample_is_seeded_share_of_auto_accepted() -> None:
    items = [pv(f"c{i}") for i in range(2000)]
    cfg = RoutingConfig(qa_sample_rate=0.05, budget=10_000, seed=7)
    res = route(items, cfg)
    qa = [d for d in res.decisions if Reason.QA_SAMPLE in d.reasons]
    assert 60 <= len(qa) <= 140
    assert all(d.route == Route.AUTO_ACCEPTED and d.dispatch == Dispatch.SEND for d in qa)
    again = route(list(reversed(items)), cfg)
    assert {d.conversation_id for d in again.decisions if d.reasons} == {
        d.conversation_id for d in qa
    }
    other_seed = route(items, RoutingConfig(qa_sample_rate=0.05, budget=10_000, seed=8))
    assert {d.conversation_id for d in other_seed.decisions if d.reasons} != {
        d.conversation_id for d in qa
    }


def test_qa_sample_ranks_after_sensitive_before_uncertain() -> None:
    cfg = RoutingConfig(qa_sample_rate=1.0, budget=2, overlap_share=0.0)
    items = [pv("auto"), pv("unc", u=0.99), pv("sens", flags=("possible_sensitive",))]
    sent = {d.conversation_id for d in route(items, cfg).to_send}
    assert sent == {"sens", "auto"}


def test_overlap_sensitive_always_two_and_share_of_others() -> None:
    items = [pv(f"u{i}", u=0.9) for i in range(1000)] + [pv("s", flags=("possible_sensitive",))]
    res = route(items, RoutingConfig(overlap_share=0.2, budget=10_000, qa_sample_rate=0.0))
    by = res.by_id()
    assert by["s"].overlap == 2
    share = sum(1 for i in range(1000) if by[f"u{i}"].overlap == 2) / 1000
    assert 0.15 < share < 0.25
    res = route(items, RoutingConfig(overlap_share=0.0, overlap_sensitive=False, budget=10_000))
    assert all(d.overlap == 1 for d in res.decisions if d.reasons)


def test_zero_budget_queues_everything_needing_review() -> None:
    res = route([pv("a", u=0.9), pv("b", flags=("llm_knn_disagree",))], RoutingConfig(budget=0))
    assert not res.to_send and len(res.queued) == 2


def test_from_row_validates_and_names_record_and_field() -> None:
    row = SimpleNamespace(
        conversation_id="c-1",
        interests={"653": 0.8},
        sensitive={},
        uncertainty=1.5,
        flags=[],
        proposer_id="p",
    )
    with pytest.raises(ValueError, match=r"c-1.*uncertainty"):
        ProposalView.from_row(row)
    row.uncertainty = 0.2
    row.interests = {"653": "high"}
    with pytest.raises(ValueError, match=r"c-1.*interests.653"):
        ProposalView.from_row(row)
    row.interests = {"653": 0.8}
    v = ProposalView.from_row(row, text="hello")
    assert v.labels(0.5) == (["653"], [])


def test_config_from_settings() -> None:
    from labelloop.runtime import routing_config
    from labelloop.settings import Settings

    s = Settings(_env_file=None, review_budget=7, qa_sample_rate=0.1, overlap_share=0.3)  # type: ignore[call-arg]
    cfg = routing_config(s)
    assert (cfg.budget, cfg.qa_sample_rate, cfg.overlap_share, cfg.overlap_sensitive) == (
        7,
        0.1,
        0.3,
        True,
    )
    # a one-run budget (``review push --budget``) overrides only the budget
    assert routing_config(s, budget=3) == replace(cfg, budget=3)


def test_shingles() -> None:
    assert shingles("a b c d") == frozenset({"a b c", "b c d"})
    assert shingles("") == frozenset()


# ---- selection within the budget: diversity and the sensitive share ------------------------------
def _cluster(prefix: str, centre: list[float], n: int, u: float) -> list[ProposalView]:
    out = []
    for i in range(n):
        v = [c + 0.01 * ((i * 7 + j) % 5) for j, c in enumerate(centre)]
        out.append(pv(f"{prefix}{i}", u=u - i / 1000, emb=v))
    return out


def test_diverse_selection_spreads_the_budget_over_clusters() -> None:
    items = _cluster("a", [1.0, 0.0, 0.0], 6, 0.9) + _cluster("b", [0.0, 1.0, 0.0], 6, 0.7)
    base = RoutingConfig(budget=2, qa_sample_rate=0.0, uncertainty_threshold=0.3, dup_cosine=1.01,
                         selection="uncertainty")  # fmt: skip
    by_u = {d.conversation_id for d in route(items, base).to_send}
    assert by_u == {"a0", "a1"}  # the two most uncertain, both from cluster a
    diverse = RoutingConfig(**{**base.__dict__, "selection": "diverse"})
    picked = {d.conversation_id for d in route(items, diverse).to_send}
    assert {c[0] for c in picked} == {"a", "b"}


def test_diverse_selection_prefers_typical_items_over_an_outlier() -> None:
    items = [*_cluster("t", [1.0, 0.0, 0.0], 8, 0.8), pv("odd", u=0.85, emb=[0.0, 0.0, 1.0])]
    cfg = RoutingConfig(budget=1, qa_sample_rate=0.0, uncertainty_threshold=0.3,
                        selection="diverse")  # fmt: skip
    (d,) = route(items, cfg).to_send
    assert d.conversation_id.startswith("t")
    assert (
        route(items, RoutingConfig(**{**cfg.__dict__, "selection": "uncertainty"}))
        .to_send[0]
        .conversation_id
        == "odd"
    )


def test_diverse_selection_without_embeddings_uses_the_texts_and_is_order_independent() -> None:
    texts = ["book a flight to rome", "book a flight to paris", "book a flight to oslo",
             "new running shoes for a marathon", "best running shoes for trail"]  # fmt: skip
    items = [pv(f"x{i}", u=0.9 - i / 100, text=t) for i, t in enumerate(texts)]
    cfg = RoutingConfig(budget=2, qa_sample_rate=0.0, selection="diverse", dup_jaccard=1.01)
    sent = {d.conversation_id for d in route(items, cfg).to_send}
    assert sent == {d.conversation_id for d in route(list(reversed(items)), cfg).to_send}
    assert len(sent & {"x0", "x1", "x2"}) == 1 and len(sent & {"x3", "x4"}) == 1


def test_sensitive_share_caps_suspects_and_returns_unused_budget() -> None:
    suspects = [pv(f"s{i}", u=0.5, flags=("possible_sensitive",)) for i in range(10)]
    others = [pv(f"u{i}", u=0.9 - i / 100) for i in range(10)]
    cfg = RoutingConfig(budget=4, qa_sample_rate=0.0, overlap_share=0.0, sensitive_share=0.5)
    sent = [d.conversation_id for d in route(suspects + others, cfg).to_send]
    assert sum(c.startswith("s") for c in sent) == 2 and {"u0", "u1"} <= set(sent)
    # few other items: the suspects take the budget they leave
    sent = [d.conversation_id for d in route(suspects + others[:1], cfg).to_send]
    assert sorted(sent) == ["s0", "s1", "s2", "u0"]
    full = RoutingConfig(**{**cfg.__dict__, "sensitive_share": 1.0})
    assert all(d.conversation_id.startswith("s") for d in route(suspects + others, full).to_send)


def test_routing_config_rejects_unknown_selection_and_bad_share() -> None:
    with pytest.raises(ValueError, match="selection"):
        RoutingConfig(selection="fastest")
    with pytest.raises(ValueError, match="sensitive_share"):
        RoutingConfig(sensitive_share=1.5)


def test_push_fills_missing_embeddings_through_the_embed_hook() -> None:
    from labeling.studio import _with_embeddings

    seen: list[list[str]] = []

    def embed(texts: list[str]) -> list[list[float]]:
        seen.append(list(texts))
        return [[float(len(t)), 1.0] for t in texts]

    views = [pv("a", text="abc"), pv("b", text="hello", emb=[0.0, 1.0]), pv("c", text="")]
    out = _with_embeddings(views, embed)
    assert seen == [["abc"]]  # only the view with text and no embedding is embedded
    assert [v.embedding for v in out] == [[3.0, 1.0], [0.0, 1.0], None]
    assert [v.conversation_id for v in out] == ["a", "b", "c"]


def test_explore_share_draws_part_of_the_budget_at_random_across_tiers() -> None:
    suspects = [pv(f"s{i}", u=0.5, flags=("possible_sensitive",)) for i in range(20)]
    others = [pv(f"u{i}", u=0.9 - i / 100) for i in range(20)]
    base = RoutingConfig(budget=4, qa_sample_rate=0.0, overlap_share=0.0, selection="uncertainty")
    no_explore = {d.conversation_id for d in route(suspects + others, base).to_send}
    assert all(c.startswith("s") for c in no_explore)  # sensitive tier takes the whole budget
    cfg = RoutingConfig(**{**base.__dict__, "explore_share": 0.5})
    sent = {d.conversation_id for d in route(suspects + others, cfg).to_send}
    assert len(sent) == 4
    assert sent != no_explore  # two of the four were drawn, not ranked
    assert sent == {
        d.conversation_id for d in route(list(reversed(suspects + others)), cfg).to_send
    }
    draws = {frozenset(d.conversation_id for d in route(suspects + others,
             RoutingConfig(**{**cfg.__dict__, "seed": k})).to_send) for k in range(6)}  # fmt: skip
    assert len(draws) > 1  # the draw depends on the seed
