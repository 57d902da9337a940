"""Language identification per turn (py3langid, offline) and the unsupported-language rule."""

from __future__ import annotations

import pytest

from labeling.language import UNDETERMINED, detect, primary_language, turn_languages, unsupported

SAMPLES = {
    "en": "Which trail near Denver is good for a sunset hike this weekend?",
    "es": "¿Dónde puedo comprar zapatos para correr en la Ciudad de México?",
    "pt": "Onde posso comprar tênis de corrida baratos em São Paulo?",
    "fr": "Où puis-je acheter des chaussures de course pas chères à Montréal ?",
    "hi": "मुझे दिल्ली में सस्ते दौड़ने वाले जूते कहाँ मिलेंगे?",
    "id": "Di mana saya bisa membeli sepatu lari yang murah di Jakarta?",
}


@pytest.mark.parametrize(("code", "text"), sorted(SAMPLES.items()))
def test_detects_the_platform_languages(code: str, text: str) -> None:
    g = detect(text)
    assert g.code == code and g.confidence >= 0.8


@pytest.mark.parametrize("text", ["ok", "thanks!", "7pm", "Sí", "👍👍", "", "   "])
def test_too_short_to_tell_is_undetermined(text: str) -> None:
    assert detect(text).code == UNDETERMINED


def test_one_spanish_turn_in_an_english_chat_counts() -> None:
    turns = [SAMPLES["en"], "Sure, Red Rocks is lovely at sunset.", "ok", SAMPLES["es"]]
    langs = turn_languages(turns)
    assert langs == ("en", "en", UNDETERMINED, "es")
    assert unsupported(langs, {"en"}) == [(3, "es")]
    assert unsupported(langs, {"en", "es"}) == []
    assert primary_language(langs) == "en"
    assert primary_language((UNDETERMINED,)) == UNDETERMINED


def test_english_dialogue_turns_are_not_refused() -> None:
    # dialogue-style English with odd spacing must not look like another language
    turns = [
        "Are things still going badly with your houseguest ?",
        "Getting worse . Now he ' s eating me out of house and home .",
        "I would like to find a place to eat in San Jose tonight.",
        "Can you give me the phone number of this restaurant?",
    ]
    assert unsupported(turn_languages(turns), {"en"}) == []


@pytest.mark.parametrize(
    "text", ["Hola! Soy un budismo.", "Soy indígena americano.", "Me encanta ser hispano."]
)
def test_short_foreign_text_with_no_confident_language_is_still_not_english(text: str) -> None:
    # no language is confident here, but English gets almost nothing: the filter cannot judge it
    assert detect(text).code == UNDETERMINED
    g = detect(text, supported={"en"})
    assert g.code not in (UNDETERMINED, "en")
    assert unsupported(turn_languages([text], supported={"en"}), {"en"}) == [(0, g.code)]


@pytest.mark.parametrize(
    "text", ["Hi! I'm heterosexual.", "No problem , sir .", "Hi I'm Protestant."]
)
def test_short_english_is_not_refused(text: str) -> None:
    # English gets little here, but no other language stands out
    assert detect(text, supported={"en"}).code in ("en", UNDETERMINED)
