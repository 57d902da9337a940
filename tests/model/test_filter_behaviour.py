"""Behaviour of a filter trained with the real sentence encoder (the default, ``minilm-pairs``).

The model is trained here on synthetic conversations (``labeling.synth``), with the training
defaults of ``labelloop train``, then probed:

* a sensitive sentence blocks the conversation wherever it sits in a 30-turn dialogue, and the
  decision names that turn (audit only);
* a neutral turn added anywhere in a clean dialogue does not block it;
* renaming a hiking trail does not change the interests;
* a sensitive sentence in another language is refused as ``unsupported_language`` (English-only
  policy), never passed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from experiments.dataset import snapshot_from_records
from experiments.registry import default_prototypes
from experiments.training import train_filter
from labeling.assets import AssetError
from labeling.policy import load_policy
from labeling.records import Conversation
from labeling.segments import turn_texts
from labeling.synth import generate
from labeling.taxonomy import load_taxonomy
from labelloop.runtime import train_config, training_pairs
from labelloop.settings import Settings
from labelloop.stages import with_training_pairs
from targeting.model import TargetingFilterModel
from tests.support.models import model_unavailable

pytestmark = pytest.mark.model

POLICY = load_policy()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> TargetingFilterModel:
    from labeling.encoders import DEFAULT_ENCODER, encoder_from_models_dir

    try:  # the shipped encoder
        embedder = encoder_from_models_dir(DEFAULT_ENCODER, tmp_path_factory.mktemp("models"))
    except AssetError as exc:  # pragma: no cover - depends on the environment
        model_unavailable("the embedding model", exc)
    tax = load_taxonomy(categories=POLICY.categories)
    convs = [Conversation.model_validate(r) for r in generate(600, 7)]
    snap = snapshot_from_records(convs, tax, POLICY.categories, eval_fraction=0.0)
    # trained as `labelloop train` trains by default (its configuration and contrast pairs), so a
    # change of those defaults meets these probes
    settings = Settings(_env_file=None)
    cfg = train_config(settings)
    snap = with_training_pairs(snap, training_pairs(settings), cfg)
    res = train_filter(snap, tax, embedder, config=cfg,
                       prototype_texts=default_prototypes(POLICY))  # fmt: skip
    return TargetingFilterModel.from_parts(res.bundle, POLICY, tax, embedder, "test")


def _record(turns: list[str], cid: str = "b-1") -> dict[str, Any]:
    return {
        "conversation_id": cid, "account_id": "acct-1", "surface": "assistant_chat",
        "country": "US", "account_linked": True, "started_at": "2026-03-01T12:00:00Z",
        "turns": [{"role": "user" if i % 2 == 0 else "assistant", "text": t} for i, t in enumerate(turns)],
    }  # fmt: skip


CLEAN_TURNS = [
    "Can you find me a table for four at an Italian place downtown tonight?",
    "Sure, Trattoria Roma has a table at 7:30 pm.",
    "Great, book it please.",
    "Done. Anything else?",
    "What's the weather going to be like tomorrow morning?",
    "Sunny, around 22 degrees.",
    "Recommend a sci-fi movie for the weekend.",
    "You could watch Arrival, it is a thoughtful one.",
    "Which running shoes are good for a beginner?",
    "Light trainers with good cushioning work well for most beginners.",
]
SENSITIVE = (
    "My therapist thinks my anxiety got worse since the panic attacks started, what can I do?"
)


def _dialogue(n: int = 30) -> list[str]:
    return [CLEAN_TURNS[i % len(CLEAN_TURNS)] for i in range(n)]


def test_a_sensitive_sentence_blocks_wherever_it_sits(model: TargetingFilterModel) -> None:
    (clean,) = model.decide([_record(_dialogue())])
    assert clean.eligible, clean
    for pos in (0, 15, 29):
        turns = _dialogue()
        turns[pos] = SENSITIVE
        (d,) = model.decide([_record(turns)])
        assert not d.eligible and d.excluded_reason == "sensitive_topic", (pos, d)
        assert d.trigger_turn == pos and d.sensitive_category == "health"
        assert "trigger_turn" not in d.public() and "sensitive_category" not in d.public()


def test_a_neutral_turn_added_anywhere_does_not_block(model: TargetingFilterModel) -> None:
    for pos in (0, 10, 30):
        turns = _dialogue()
        turns.insert(pos, "Thanks, that sounds good to me.")
        (d,) = model.decide([_record(turns)])
        assert d.eligible, (pos, d)


def test_renaming_a_hiking_trail_changes_no_interest(model: TargetingFilterModel) -> None:
    # the interest model reads names as one placeholder (labeling.proper_names): every interest
    # score, not only the labels above their thresholds, is the same whatever the trail is called
    assert model.bundle is not None and model.bundle.interest_names_masked
    requests = (
        ("Which boots should I buy for the {trail} trail near Denver this weekend?",
         "For {trail}, light waterproof hiking boots are a good choice."),
        ("What gear do I need to start trail running on the {trail} trail near Denver?",
         "For trail running on {trail}, light shoes with good grip are a good start."),
    )  # fmt: skip

    def judged(turns: tuple[str, ...], trail: str) -> tuple[np.ndarray, set[str]]:
        rec = _record([t.format(trail=trail) for t in turns])
        (d,) = model.decide([rec])
        assert d.eligible
        assert model.bundle is not None
        batch = model.bundle.score([turn_texts(rec["turns"])], model.embedder)
        return batch.interests[0], {i.id for i in d.interests}

    for turns in requests:
        base_scores, base = judged(turns, "Red Rocks")
        for name in ("Bear Creek", "Mount Falcon", "Chautauqua"):
            scores, ids = judged(turns, name)
            np.testing.assert_allclose(scores, base_scores, atol=1e-6, err_msg=name)
            assert ids == base, name
    # the running request is one the training corpus teaches: it carries interests at all
    assert judged(requests[1], "Red Rocks")[1]


def test_a_sensitive_sentence_in_another_language_is_refused(model: TargetingFilterModel) -> None:
    turns = _dialogue(12)
    turns[11] = (
        "Estoy embarazada de tres meses y mi médico dice que debo descansar, ¿qué ropa compro?"
    )
    (d,) = model.decide([_record(turns)])
    assert not d.eligible and d.excluded_reason == "unsupported_language"
    assert d.languages[11] == "es"
