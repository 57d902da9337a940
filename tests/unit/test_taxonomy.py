"""Tests for labeling.taxonomy (shipped files + tmp_path fixtures only; never /work/shared)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from labeling.taxonomy import (
    DEFAULT_INTERESTS_PATH,
    DEFAULT_SENSITIVE_MAP_PATH,
    Interest,
    Taxonomy,
    TaxonomyError,
    load_taxonomy,
)

POLICY_CATEGORIES = (
    "religion",
    "sexual_orientation",
    "political_views",
    "health",
    "ethnicity",
    "philosophical_beliefs",
    "union_membership",
)

# Distinct gold.interests labels found in the dev data (/work/shared/data/dev/*.jsonl), with the
# IAB 3.1 id they must resolve to. "Movies" and "Music and Audio" are IAB 2.x tier-1 names; in
# 3.1 they are tier-2 nodes under Entertainment.
DEV_GOLD_LABELS = {
    "Automotive": "1",
    "Careers": "123",
    "Education": "132",
    "Events": "8VZQHL",
    "Food & Drink": "210",
    "Home & Garden": "274",
    "Movies": "324",
    "Music and Audio": "338",
    "Personal Finance": "391",
    "Real Estate": "441",
    "Science": "464",
    "Shopping": "473",
    "Sports": "483",
    "Technology & Computing": "596",
    "Travel": "653",
}

HEADER = "id\tname\ttier\tparent_id\tpath\n"
SMALL_INTERESTS = (
    HEADER
    + "483\tSports\t1\t\tSports\n"
    + "533\tSoccer\t2\t483\tSports > Soccer\n"
    + "653\tTravel\t1\t\tTravel\n"
)
SMALL_SENSITIVE = """\
schema: 1
sensitive:
  - {id: "386", category: political_views, name: "Politics"}
  - {id: "286", category: health, name: "Medical Health"}
excluded:
  - {id: "v9i3On", name: "Sensitive Topics", reason: "brand safety"}
"""


def write(
    tmp_path: Path, interests: str = SMALL_INTERESTS, sensitive: str = SMALL_SENSITIVE
) -> tuple[Path, Path]:
    ip, sp = tmp_path / "interests.tsv", tmp_path / "sensitive_map.yaml"
    ip.write_text(interests, encoding="utf-8")
    sp.write_text(sensitive, encoding="utf-8")
    return ip, sp


@pytest.fixture(scope="module")
def tax() -> Taxonomy:
    return load_taxonomy(categories=POLICY_CATEGORIES)


# ---- shipped files ---------------------------------------------------------------------------
def test_shipped_taxonomy_loads(tax: Taxonomy) -> None:
    assert len(tax.tier1()) >= 30
    tier2 = [i for i in tax.interests if i.tier == 2]
    assert 60 <= len(tier2) <= 150
    assert len(tax.ids()) == len(set(tax.ids())) == len(tax)
    assert all(isinstance(i, Interest) for i in tax.interests)
    assert set(tax.sensitive_map.values()) <= set(POLICY_CATEGORIES)
    assert len(tax.version) == 64
    int(tax.version, 16)


def test_shipped_files_are_small() -> None:
    assert DEFAULT_INTERESTS_PATH.stat().st_size < 200_000
    assert DEFAULT_SENSITIVE_MAP_PATH.stat().st_size < 200_000


def test_interest_is_frozen(tax: Taxonomy) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        tax.interests[0].name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("iab_id", "name", "category"),
    [
        ("286", "Medical Health", "health"),
        ("453", "Religion & Spirituality", "religion"),
        ("386", "Politics", "political_views"),
    ],
)
def test_sensitive_tier1_are_not_interests(
    tax: Taxonomy, iab_id: str, name: str, category: str
) -> None:
    assert iab_id not in tax
    assert tax.sensitive_category_of(iab_id) == category
    with pytest.raises(KeyError, match=name):
        tax.by_name(name)
    with pytest.raises(KeyError):
        tax.by_id(iab_id)


@pytest.mark.parametrize(
    ("iab_id", "category"),
    [
        ("462", "religion"),  # Judaism (not SCD-flagged upstream)
        ("463", "religion"),  # Sikhism (not SCD-flagged upstream)
        ("457", "philosophical_beliefs"),  # Atheism
        ("301", "health"),  # Mental Health
        ("238", "health"),  # Healthy Living > Women's Health
        ("387", "political_views"),  # Elections
        ("273", "ethnicity"),  # Genealogy and Ancestry
    ],
)
def test_sensitive_nodes_mapped_and_not_interests(
    tax: Taxonomy, iab_id: str, category: str
) -> None:
    assert tax.sensitive_map[iab_id] == category
    assert iab_id not in tax


def test_brand_safety_branch_is_excluded(tax: Taxonomy) -> None:
    assert "v9i3On" in tax.excluded
    assert "v9i3On" not in tax
    with pytest.raises(KeyError):
        tax.by_name("Sensitive Topics")


def test_no_interest_is_sensitive_or_under_sensitive(tax: Taxonomy) -> None:
    for i in tax.interests:
        assert i.id not in tax.sensitive_map
        assert tax.tier1_of(i.id).id not in tax.sensitive_map


def test_healthy_living_fitness_is_an_interest(tax: Taxonomy) -> None:
    fit = tax.by_name("Fitness and Exercise")
    assert tax.tier1_of(fit.id).name == "Healthy Living"


@pytest.mark.parametrize(("label", "iab_id"), sorted(DEV_GOLD_LABELS.items()))
def test_dev_gold_labels_resolve(tax: Taxonomy, label: str, iab_id: str) -> None:
    assert tax.name_to_id(label) == iab_id
    assert tax.by_name(label.upper()).id == iab_id


def test_legacy_labels_map_under_entertainment(tax: Taxonomy) -> None:
    assert tax.tier1_of(tax.name_to_id("Movies")).name == "Entertainment"
    music = tax.by_name("Music and Audio")
    assert music.name == "Music"
    assert music.path == "Entertainment > Music"


def test_name_lookup_normalizes(tax: Taxonomy) -> None:
    assert tax.name_to_id("food and drink") == "210"
    assert tax.name_to_id("  Technology   &  computing ") == "596"
    assert tax.name_to_id("Attractions > Outdoor Activities") == "159"


def test_unknown_name_raises_naming_label(tax: Taxonomy) -> None:
    with pytest.raises(KeyError, match="Underwater Basket Weaving"):
        tax.name_to_id("Underwater Basket Weaving")
    with pytest.raises(KeyError, match="nope"):
        tax.by_id("nope")


def test_tier2_parent_mapping(tax: Taxonomy) -> None:
    outdoor = tax.by_name("Outdoor Activities")
    assert outdoor.tier == 2
    assert outdoor.parent_id == "150"
    assert tax.tier1_of(outdoor.id) == tax.by_id("150")
    assert tax.tier1_of("483").id == "483"
    soccer = tax.by_name("Soccer")
    assert tax.tier1_of(soccer.id).name == "Sports"
    assert soccer in tax.children("483")
    for i in tax.interests:
        if i.tier == 2:
            assert i.parent_id is not None
            assert tax.by_id(i.parent_id).tier == 1
            assert i.path == f"{tax.by_id(i.parent_id).name} > {i.name}"


# ---- version ---------------------------------------------------------------------------------
def test_version_stable_and_changes(tmp_path: Path) -> None:
    ip, sp = write(tmp_path)
    v1 = load_taxonomy(ip, sp).version
    assert load_taxonomy(ip, sp).version == v1
    sp.write_text(SMALL_SENSITIVE + "\n# comment\n", encoding="utf-8")
    v2 = load_taxonomy(ip, sp).version
    assert v2 != v1
    ip.write_text(SMALL_INTERESTS.replace("653\tTravel\t1\t\tTravel\n", ""), encoding="utf-8")
    assert load_taxonomy(ip, sp).version not in {v1, v2}


def test_shipped_version_stable() -> None:
    assert load_taxonomy().version == load_taxonomy().version


# ---- rejection -------------------------------------------------------------------------------
def test_small_fixture_loads(tmp_path: Path) -> None:
    tax = load_taxonomy(*write(tmp_path), categories=POLICY_CATEGORIES)
    assert tax.ids() == ("483", "533", "653")
    assert tax.tier1_of("533").name == "Sports"


def test_rejects_interest_in_sensitive_map(tmp_path: Path) -> None:
    interests = SMALL_INTERESTS + "386\tPolitics\t1\t\tPolitics\n"
    with pytest.raises(TaxonomyError, match=r"'386'.*sensitive"):
        load_taxonomy(*write(tmp_path, interests=interests))


def test_rejects_interest_under_sensitive_ancestor(tmp_path: Path) -> None:
    sensitive = SMALL_SENSITIVE.replace(
        "sensitive:\n", 'sensitive:\n  - {id: "483", category: health, name: "Sports"}\n'
    )
    with pytest.raises(TaxonomyError, match="'483'"):
        load_taxonomy(*write(tmp_path, sensitive=sensitive))


def test_rejects_interest_under_excluded(tmp_path: Path) -> None:
    interests = (
        SMALL_INTERESTS
        + "v9i3On\tSensitive Topics\t1\t\tSensitive Topics\n"
        + "Rm3SiT\tAdult\t2\tv9i3On\tSensitive Topics > Adult\n"
    )
    with pytest.raises(TaxonomyError, match=r"v9i3On.*excluded"):
        load_taxonomy(*write(tmp_path, interests=interests))


def test_rejects_unknown_category(tmp_path: Path) -> None:
    sensitive = SMALL_SENSITIVE.replace("category: health", "category: wellbeing")
    ip, sp = write(tmp_path, sensitive=sensitive)
    load_taxonomy(ip, sp)  # no category list given: not checked
    with pytest.raises(TaxonomyError, match=r"'286'.*wellbeing"):
        load_taxonomy(ip, sp, categories=POLICY_CATEGORIES)


def test_rejects_duplicate_ids(tmp_path: Path) -> None:
    interests = SMALL_INTERESTS + "653\tTravel Again\t1\t\tTravel Again\n"
    with pytest.raises(TaxonomyError, match="duplicate interest id '653'"):
        load_taxonomy(*write(tmp_path, interests=interests))


def test_rejects_duplicate_sensitive_ids(tmp_path: Path) -> None:
    sensitive = SMALL_SENSITIVE.replace("excluded:", '  - {id: "286", category: health}\nexcluded:')
    with pytest.raises(TaxonomyError, match="duplicate id '286'"):
        load_taxonomy(*write(tmp_path, sensitive=sensitive))


def test_rejects_dangling_parent(tmp_path: Path) -> None:
    interests = SMALL_INTERESTS + "159\tOutdoors\t2\t150\tAttractions > Outdoors\n"
    with pytest.raises(TaxonomyError, match=r"'159'.*parent '150'"):
        load_taxonomy(*write(tmp_path, interests=interests))


def test_rejects_ambiguous_name(tmp_path: Path) -> None:
    interests = SMALL_INTERESTS + "999\tsoccer\t2\t653\tTravel > soccer\n"
    with pytest.raises(TaxonomyError, match="ambiguous"):
        load_taxonomy(*write(tmp_path, interests=interests))


@pytest.mark.parametrize(
    ("interests", "sensitive", "match"),
    [
        ("id\tname\n1\tX\n", SMALL_SENSITIVE, "header"),
        (HEADER + "1\tX\tone\t\tX\n", SMALL_SENSITIVE, "bad tier"),
        (HEADER + "1\tX\t1\t\tY\n", SMALL_SENSITIVE, "path"),
        (SMALL_INTERESTS, "sensitive: [{id: 286, category: health}]\n", "quote it"),
        (SMALL_INTERESTS, "- just a list\n", "'sensitive' list"),
        (SMALL_INTERESTS, "sensitive: [\n", "invalid YAML"),
    ],
)
def test_rejects_malformed_files(
    tmp_path: Path, interests: str, sensitive: str, match: str
) -> None:
    with pytest.raises(TaxonomyError, match=match):
        load_taxonomy(*write(tmp_path, interests=interests, sensitive=sensitive))


def test_missing_file_is_taxonomy_error(tmp_path: Path) -> None:
    with pytest.raises(TaxonomyError, match="cannot read"):
        load_taxonomy(tmp_path / "nope.tsv", DEFAULT_SENSITIVE_MAP_PATH)
