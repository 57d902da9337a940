"""Redaction of names, identity documents, dates of birth, locations and the platform's locales.

Each case names the PII substring that must disappear and the placeholder expected in its place.
False-positive traps (ordinary words, product codes, prices, years, times, model numbers,
capitalised places and brands) must come out unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from experiments.dataset import snapshot_from_records, snapshot_from_store
from labeling.language import turn_languages
from labeling.person_names import find_person_names
from labeling.policy import load_policy
from labeling.records import Conversation
from labeling.redaction import (
    PLACEHOLDERS,
    cnpj_valid,
    cpf_valid,
    curp_valid,
    nik_valid,
    redact,
    verhoeff_valid,
    vin_check_valid,
)
from labeling.sampling import sample_into_store
from labeling.segments import scored_texts
from labeling.taxonomy import load_taxonomy
from targeting.decide import decide_batch
from targeting.scorer import ContentVerdict

# (text, the PII substring that must disappear, expected placeholder kind)
CASES: list[tuple[str, str, str]] = [
    # person names: cue phrases, titles, gazetteer pairs
    ("my name is Maria Gonzalez and I need a flight", "Gonzalez", "NAME"),
    ("my name is maria gonzalez", "gonzalez", "NAME"),
    ("tell John Smith I'll be late", "John Smith", "NAME"),
    ("Dr. Emily Chen said the scan is clear", "Emily Chen", "NAME"),
    ("Mr Okonkwo will call you", "Okonkwo", "NAME"),
    ("Emily Chen and Priya Sharma joined the call", "Priya Sharma", "NAME"),
    ("tell Thabisile Msuthu the meeting moved", "Thabisile Msuthu", "NAME"),
    # dates of birth (the date only; other dates stay)
    ("I was born on 03/14/1985, what's my sign?", "03/14/1985", "DOB"),
    ("DOB: March 3, 1985", "March 3, 1985", "DOB"),
    ("date of birth 14 March 1985", "14 March 1985", "DOB"),
    # identity documents
    ("my passport number is X1234567", "X1234567", "PASSPORT"),
    ("my NI number is QQ 12 34 56 C", "QQ 12 34 56 C", "NATIONAL_ID"),
    ("national insurance AB123456C", "AB123456C", "NATIONAL_ID"),
    ("driver's license D1234567, can I rent a car?", "D1234567", "DRIVER_LICENSE"),
    ("licence MORGA657054SM9IJ", "MORGA657054SM9IJ", "DRIVER_LICENSE"),
    ("my SSN is 078051120", "078051120", "SSN"),
    ("my social is 078051120", "078051120", "SSN"),
    ("soc sec no 078051120", "078051120", "SSN"),
    ("MRN 00482913 at the clinic", "00482913", "MEDICAL_RECORD"),
    ("medical record number MR1234567", "MR1234567", "MEDICAL_RECORD"),
    # phones the fixed patterns missed
    ("call me on 0151 23456789", "23456789", "PHONE"),
    ("Handy: 0151 23456789", "23456789", "PHONE"),
    ("London office 0044 20 7946 0958", "7946 0958", "PHONE"),
    ("US office 001 201 555 0123", "555 0123", "PHONE"),
    # obfuscated emails
    ("write to user dot x at gmail dot com", "gmail", "EMAIL"),
    ("jane.doe [at] proton [dot] me", "jane.doe", "EMAIL"),
    ("bob (at) example (dot) org", "bob", "EMAIL"),
    ("escríbeme a juan arroba gmail punto com", "juan", "EMAIL"),
    # postcodes in an address-like context
    ("zip code 94043 please", "94043", "POSTCODE"),
    ("Mountain View, CA 94043", "94043", "POSTCODE"),
    ("I live near SW1A 1AA", "SW1A 1AA", "POSTCODE"),
    ("mon code postal est H2X 1Y4", "H2X 1Y4", "POSTCODE"),
    ("CEP 01310-100, quanto é o frete?", "01310-100", "POSTCODE"),
    ("PIN code 560001", "560001", "POSTCODE"),
    # social profiles and handles
    ("my insta is https://www.instagram.com/maria.g88", "maria.g88", "URL"),
    ("linkedin.com/in/raj-patel-123 is my profile", "raj-patel", "URL"),
    ("DM me @maria_g88", "@maria_g88", "HANDLE"),
    # devices, places, vehicles
    ("router MAC 00:1A:2B:3C:4D:5E", "00:1A:2B:3C:4D:5E", "MAC"),
    ("we parked at 40.71280, -74.00601", "40.71280", "GPS"),
    ("we are at 40°26'46\"N 79°58'56\"W", "40°26'46", "GPS"),
    ("VIN 1HGCM82633A004352, any recall?", "1HGCM82633A004352", "VIN"),
    ("the VIN is WVWZZZ1JZXW000001", "WVWZZZ1JZXW000001", "VIN"),
    ("license plate 7ABC123 hit my car", "7ABC123", "PLATE"),
    ("registration AB12 CDE, is the MOT due?", "AB12 CDE", "PLATE"),
    # Latin America
    ("ligue para (11) 91234-5678 amanhã", "91234-5678", "PHONE"),
    ("meu celular é +55 11 91234-5678", "91234-5678", "PHONE"),
    ("mi cel es 55 1234 5678", "1234 5678", "PHONE"),
    ("55 1234 5678 es mi número", "1234 5678", "PHONE"),
    ("+52 55 1234 5678 es mi número", "1234 5678", "PHONE"),
    ("mi CURP es GODE561231HDFNRR00", "GODE561231HDFNRR00", "NATIONAL_ID"),
    ("RFC GODE561231GR8 para la factura", "GODE561231GR8", "NATIONAL_ID"),
    ("meu CPF é 529.982.247-25", "529.982.247-25", "NATIONAL_ID"),
    ("CNPJ 11.222.333/0001-81", "11.222.333/0001-81", "NATIONAL_ID"),
    ("mi DNI es 12.345.678", "12.345.678", "NATIONAL_ID"),
    ("mi cédula es 1020304050", "1020304050", "NATIONAL_ID"),
    ("me llamo José Pérez García", "José Pérez García", "NAME"),
    ("mi nombre es Ana de la Cruz", "Ana de la Cruz", "NAME"),
    ("la Sra. Gómez llamó", "Gómez", "NAME"),
    ("meu nome é João da Silva", "João da Silva", "NAME"),
    ("nací el 12 de marzo de 1990", "12 de marzo de 1990", "DOB"),
    ("data de nascimento 12/03/1990", "12/03/1990", "DOB"),
    # India
    ("my mobile is 98765 43210", "98765 43210", "PHONE"),
    ("98765 43210 is my WhatsApp", "98765 43210", "PHONE"),
    ("call +91 98765 43210", "98765 43210", "PHONE"),
    ("aadhaar 2345 6789 0124", "2345 6789 0124", "NATIONAL_ID"),
    ("my PAN is ABCPE1234F", "ABCPE1234F", "NATIONAL_ID"),
    ("मेरा नाम राहुल शर्मा है", "राहुल शर्मा", "NAME"),
    ("श्री अमित कुमार से बात करो", "अमित कुमार", "NAME"),
    ("mera naam Rahul Verma hai", "Rahul Verma", "NAME"),
    # Indonesia
    ("nomor hp saya 0812-3456-7890", "3456-7890", "PHONE"),
    ("WA +62 812 3456 7890", "3456 7890", "PHONE"),
    ("NIK saya 3174094507900001", "3174094507900001", "NATIONAL_ID"),
    ("nama saya Budi Santoso", "Budi Santoso", "NAME"),
    ("tolong hubungi Bapak Joko Widodo", "Joko Widodo", "NAME"),
    ("tanggal lahir 17-08-1990", "17-08-1990", "DOB"),
    # France / Canada
    ("je m'appelle Pierre Dubois", "Dubois", "NAME"),
    ("Mme Lefèvre a appelé", "Lefèvre", "NAME"),
    ("né le 3 mars 1985", "3 mars 1985", "DOB"),
    ("passeport 12AB34567", "12AB34567", "PASSPORT"),
]


@pytest.mark.parametrize(("text", "secret", "kind"), CASES)
def test_pii_is_replaced(text: str, secret: str, kind: str) -> None:
    result = redact(text)
    assert secret not in result.text, result.text
    assert PLACEHOLDERS[kind] in result.text, result.text
    assert result.counts.get(kind, 0) >= 1


def test_cue_and_title_are_kept() -> None:
    assert redact("my name is Maria Gonzalez").text == "my name is [NAME]"
    assert redact("Dr. Emily Chen").text == "Dr. [NAME]"
    assert redact("DOB: 03/14/1985").text == "DOB: [DOB]"
    assert redact("passport number X1234567").text == "passport number [PASSPORT]"


TRAPS: list[str] = [
    # ordinary words, capitalised places and brands
    "I am happy with the results, will you send them to Grace Church?",
    "May I book a table for two at Olive Garden?",
    "The Grand Canyon and the Golden Gate Bridge are on my list",
    "Happy Birthday! Best Buy and Home Depot are open on Sunday",
    "Victoria Station to Paris Gare du Nord takes two hours",
    "Feliz Navidad y Semana Santa en Ciudad de México",
    "Dia das Mães no Rio de Janeiro",
    "Joyeux Noël, je suis fatigué ce soir",
    "Selamat pagi, saya mau pesan nasi goreng di Jakarta Selatan",
    "soy vegetariano y sou fã de futebol",
    "Jordan shoes vs Nike Air Max, which is better?",
    "I'm at the gym, call me later",
    # product codes and model numbers
    "the RTX 4090 vs RX 7900 XTX, and the SM-G991B firmware",
    "Dell XPS 9570 or ThinkPad X1 Carbon Gen 11?",
    "ASIN B08N5WRWNW, part no. 0-8493-2105",
    "HDMI 2.1, USB 3.2 Gen 2x2, PCIe 4.0 x16",
    "flight UA 1234 then LH400, gate B12",
    "iPhone 15 Pro Max vs Galaxy S24 Ultra",
    "Boeing 737 MAX 8 and Airbus A320neo",
    "Python 3.12.1, Node 20.11.0, v2.3.1-beta",
    # prices, years, times, numbers
    "it costs $1,299.99 or R$ 1.299,90 or ₹45,000 or Rp 150.000",
    "from 1999 to 2024, the 2019-2023 period, born in the 90s",
    "meet at 10:30, or 18h30, or 7.45 pm, 12:00:00 UTC",
    "population 12 345 678 in 2020",
    "score 3-1, ratio 16:9, 1080p at 144 Hz",
    "94043 people attended the game",
    "my birthday party is on Saturday at 5",
    # code
    "@property\ndef name(self):\n    return self._name",
    "use @media (max-width: 600px) in the stylesheet",
]


@pytest.mark.parametrize("text", TRAPS)
def test_traps_stay_unredacted(text: str) -> None:
    result = redact(text)
    assert result.text == text
    assert not result.changed


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("Hi Sarah, can you resend it?", ["Sarah"]),
        ("I went with Jessica to the mall", ["Jessica"]),
        ("Grace Kelly was an actress", ["Grace Kelly"]),
        ("May I have the menu?", []),
        ("I am happy", []),
        ("Nomcebo Mbekwa and I are planning a trip", ["Nomcebo Mbekwa"]),
        ("a cab from John Wayne Airport", []),  # a place named after someone
        ("Ben Franklin Bridge is closed", []),
        ("a place called Acuario Inbursa", []),
        ("Jessica Hall called", ["Jessica Hall"]),
        ("मेरा नाम आनन्दा डी’सोउज़ा है", ["आनन्दा डी’सोउज़ा"]),
    ],
)
def test_person_name_spans(text: str, names: list[str]) -> None:
    assert [text[a:b] for a, b in find_person_names(text)] == names


def test_validators() -> None:
    assert verhoeff_valid("234567890124")
    assert not verhoeff_valid("234567890123")
    assert cpf_valid("529.982.247-25") and not cpf_valid("529.982.247-26")
    assert not cpf_valid("111.111.111-11")
    assert cnpj_valid("11.222.333/0001-81") and not cnpj_valid("11.222.333/0001-82")
    assert curp_valid("GODE561231HDFNRR00") and not curp_valid("GODE561231HDFNRR01")
    assert vin_check_valid("1HGCM82633A004352") and not vin_check_valid("1HGCM82634A004352")
    assert nik_valid("3174094507900001") and not nik_valid("9974094507900001")


def test_new_kinds_are_idempotent() -> None:
    text = " ".join(t for t, _, _ in CASES)
    once = redact(text).text
    assert redact(once).text == once


# ------------------------------------------------------------------------------ drift guard
class _RecordingJudge:
    """Keeps the texts the serving filter hands to the content scorer; says nothing is sensitive."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, ...]] = []

    def judge_conversations(self, conversations: Sequence[Sequence[str]]) -> list[ContentVerdict]:
        self.seen += [tuple(c) for c in conversations]
        return [ContentVerdict((), {}, ()) for _ in conversations]


def test_serving_and_training_render_the_same_text(
    record_factory: Any, write_jsonl: Any, tmp_path: Path
) -> None:
    """The filter scores exactly the text it was trained on, for every path that renders it:
    serving (``decide_batch``), ``train --from-records`` (``snapshot_from_records``) and training
    from the label store (``sample_into_store`` then ``snapshot_from_store``)."""
    from labelloop.store import LabelStore
    from labelloop.store.models import Base, GoldLabelRow

    turns = [{"role": "user", "text": t, "modality": "text"} for t, _, _ in CASES[::3]] + [
        {
            "role": "assistant",
            "text": "Sure, Maria. I'll note +55 11 91234-5678.",
            "modality": "voice",
        }
    ]
    rec = record_factory(
        conversation_id="drift-1",
        turns=turns,
        gold={"sensitive": [], "interests": ["Travel"]},
    )
    conv = Conversation.model_validate(rec)
    policy = load_policy()
    tax = load_taxonomy(categories=policy.categories)
    expected = scored_texts(conv)

    # serving: the production filter's decision path; the record mixes languages on purpose, so
    # the serving policy here lists every language it contains (the gate is not under test)
    langs = turn_languages((t.text for t in conv.turns), supported=policy.supported_languages)
    all_langs = sorted({*policy.doc.supported_languages, *(c for c in langs if c != "und")})
    serving_policy = replace(
        policy, doc=policy.doc.model_copy(update={"supported_languages": all_langs})
    )
    judge = _RecordingJudge()
    (decision,) = decide_batch([rec], policy=serving_policy, judge=judge, model_version="m")
    assert decision.eligible, (decision.excluded_reason, decision.detail)
    assert judge.seen == [expected]

    # training from records (train --from-records)
    snap = snapshot_from_records([conv], tax, policy.categories)
    (from_records,) = [e for e in (*snap.train, *snap.eval) if e.conversation_id == "drift-1"]

    # the label store: sample the record in, label it, build the training snapshot from the store
    store = LabelStore(f"sqlite:///{tmp_path / 'ls.db'}")
    Base.metadata.create_all(store.engine)
    report = sample_into_store(
        [write_jsonl([rec])], policy=policy, store=store, quarantine_path=tmp_path / "q.jsonl"
    )
    assert report.inserted == 1 and report.eligible == 1, report.as_dict()
    with store.session() as s:
        s.add(GoldLabelRow(conversation_id="drift-1", interests=[], sensitive=[], origin="human"))
    store_snap = snapshot_from_store(store, policy.categories, persist_eval=False)
    (from_store,) = [
        e for e in (*store_snap.train, *store_snap.eval) if e.conversation_id == "drift-1"
    ]
    store.dispose()

    assert from_records.turns == expected == from_store.turns
    text = "\n".join(expected)
    for t, secret, _ in CASES[::3]:
        assert secret not in text, (t, text)
