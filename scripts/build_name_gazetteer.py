"""Rebuild ``labeling/data/person_names.tsv``, the names gazetteer of the redactor's name pass.

Sources: Faker's person providers (first and last names) for the locales the platform serves, and
Faker's lorem word lists (English, Spanish, French common words) to flag names that are also
ordinary words ("Will", "Grace", "Rosa", "Pierre"...), plus a short hand list of such words.

Usage (Faker is a dev dependency)::

    uv run --no-sync python scripts/build_name_gazetteer.py

Output columns: ``name<TAB>kinds`` where kinds is a comma list of ``first``, ``last`` and
``common`` (a name that is also an ordinary word: it counts only next to other evidence), or
``word`` alone (an ordinary word, capitalised, that is not a name: never part of a name).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from faker import Faker

LOCALES = (
    "en_US", "en_GB", "en_CA", "en_IN", "en_PH", "es_MX", "es_ES", "es_AR", "es_CO", "es_CL",
    "pt_BR", "pt_PT", "fr_FR", "fr_CA", "hi_IN", "id_ID", "de_DE", "it_IT",
)  # fmt: skip
WORD_LOCALES = ("en_US", "es_ES", "fr_FR")

# Names that are ordinary words, months, places or brands in the platform's languages.
# fmt: off
HAND_COMMON = {
    "Will", "May", "June", "April", "August", "Grace", "Faith", "Hope", "Joy", "Mark", "Bill",
    "Rose", "Summer", "Autumn", "Winter", "Spring", "Art", "Guy", "Frank", "Jack", "Sue", "Pat",
    "Rich", "Ray", "Dawn", "Chase", "Hunter", "Page", "Paris", "Georgia", "Virginia", "Jordan",
    "Austin", "Dallas", "Florence", "Victoria", "Lincoln", "Washington", "Ford", "Apple",
    "Amazon", "Sky", "Star", "Angel", "Crystal", "Ruby", "Pearl", "Amber", "Ivy", "Holly",
    "Daisy", "Lily", "Iris", "Violet", "Jade", "Rocky", "Sandy", "Dusty", "Mercedes", "Porsche",
    "Sterling", "Royal", "King", "Prince", "Princess", "Duke", "Earl", "Baron", "Major", "Miles",
    "Price", "Case", "Cash", "Rusty", "Christian", "Christmas", "Easter", "Eve", "Sunny",
    "Brooklyn", "Madison", "Phoenix", "Houston", "Denver", "Orlando", "Memphis", "Cleveland",
    "Carolina", "Dakota", "Savannah", "Chelsea", "Kent", "Troy", "Sydney", "Asia", "India",
    "China", "Israel", "Santiago", "Lima", "Sofia", "Adelaide", "Alexandria", "Mary",
    "Bay", "Brook", "River", "Forest", "Stone", "Wood", "Hill", "Field", "Marsh", "Lake",
    "Young", "Long", "Short", "Little", "Small", "Strong", "Best", "Good", "Love", "Gay",
    "Black", "White", "Brown", "Green", "Gray", "Grey", "Bell", "Banks", "Bond", "Cook",
    "Baker", "Carpenter", "Mason", "Miller", "Fisher", "Hunt", "Walker", "Rice", "Hall",
    "Church", "Street", "Lane", "Park", "Parks", "Post", "West", "East", "North", "South",
    "Day", "Knight", "Nation", "Power", "Powers", "Ward", "Wells", "Woods", "Cross", "Guerra",
    "Paz", "Luz", "Cruz", "Sol", "Mar", "Flor", "Rosa", "Blanca", "Dolores", "Amparo",
    "Consuelo", "Socorro", "Rosario", "Pilar", "Reyes", "Santos", "Pierre",
    "Michel", "Bonnet", "Blanc", "Petit", "Roux", "Fontaine", "Lune", "Marin", "Ange",
    "Baptiste", "Constant", "Clement", "Noel", "Aurore", "Mai", "Juin", "Avril", "Agustus",
    "Indah", "Bunga", "Cahya", "Intan", "Mutiara", "Bintang", "Ratu", "Raja", "Jaya", "Java", "Bali", "Citra", "Asa", "Reed", "Gene", "Van",
    "Don", "Dean", "Drew", "Bob", "Bud", "Jean", "Max", "Nick", "Bo",
    "Al", "Ed", "Rob", "Ken", "Di",
}
# fmt: on


def main(out: Path) -> int:
    kinds: dict[str, set[str]] = defaultdict(set)
    for loc in LOCALES:
        fake = Faker(loc)
        person = next(p for p in fake.providers if "person" in type(p).__module__)
        for attr, kind in (
            ("first_names", "first"),
            ("first_names_male", "first"),
            ("first_names_female", "first"),
            ("last_names", "last"),
        ):
            for name in getattr(person, attr, ()) or ():
                for part in str(name).replace("-", " ").split():
                    if len(part) >= 2 and (part[0].isupper() or not part.isascii()):
                        kinds[part].add(kind)
    common = set(HAND_COMMON)
    for loc in WORD_LOCALES:
        fake = Faker(loc)
        lorem = next(p for p in fake.providers if "lorem" in type(p).__module__)
        common.update(w.capitalize() for w in getattr(lorem, "word_list", ()))
    for name, ks in kinds.items():
        if name in common:
            ks.add("common")
    for word in common:
        if word not in kinds and word.isalpha():
            kinds[word].add("word")
    lines = [f"{n}\t{','.join(sorted(ks))}" for n, ks in sorted(kinds.items())]
    out.write_text(
        "# person-name gazetteer; built by scripts/build_name_gazetteer.py from Faker\n"
        + "\n".join(lines)
        + "\n",
        encoding="utf-8",
    )
    n_words = sum(k == {"word"} for k in kinds.values())
    n_common = sum("common" in k for k in kinds.values())
    print(f"{len(lines) - n_words} names ({n_common} also words), {n_words} words -> {out}")
    return 0


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    sys.exit(main(root / "labeling" / "data" / "person_names.tsv"))
