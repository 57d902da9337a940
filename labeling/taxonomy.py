"""The interest taxonomy: which IAB Content Taxonomy 3.1 nodes may be ad interests.

Two files shipped in ``labeling/data`` define it (both derived from IAB Tech Lab Content Taxonomy
3.1, CC BY 3.0; ids and names are IAB's, the selection and the sensitive mapping are ours):

* ``interests.tsv`` -- columns ``id, name, tier, parent_id, path``: the non-sensitive tier-1 nodes
  and the tier-2 nodes advertisers target.
* ``sensitive_map.yaml`` -- ``sensitive``: IAB node id -> sensitive category (health, ...);
  ``excluded``: nodes kept out of the interests for other reasons (brand safety, minors, ...).

Loading **fails closed**: an interest that is (or descends from) a sensitive or excluded node, a
sensitive category the policy does not know, duplicate ids, a dangling parent or an ambiguous name
all raise :class:`TaxonomyError`. The version is the sha256 of the two files' bytes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

DATA_DIR: Final = Path(__file__).parent / "data"
DEFAULT_INTERESTS_PATH: Final = DATA_DIR / "interests.tsv"
DEFAULT_SENSITIVE_MAP_PATH: Final = DATA_DIR / "sensitive_map.yaml"

INTERESTS_COLUMNS: Final = ("id", "name", "tier", "parent_id", "path")
PATH_SEPARATOR: Final = " > "

# Names used by labels that are not the node's 3.1 name: IAB Content Taxonomy 2.x had
# "Music and Audio" (id 338) as a tier-1; 3.x moved it under Entertainment as "Music".
# ("Movies", id 324, kept its name.) An alias is active only if its id is an interest.
LEGACY_NAME_ALIASES: Final[Mapping[str, str]] = {"Music and Audio": "338"}


class TaxonomyError(ValueError):
    """The taxonomy files are invalid or violate the sensitive-data rules."""


@dataclass(frozen=True)
class Interest:
    """One ad-interest node (an IAB Content Taxonomy 3.1 category)."""

    id: str
    name: str
    tier: int
    parent_id: str | None
    path: str


def normalize_name(name: str) -> str:
    """Case-, whitespace- and '&'/'and'-insensitive key for name lookups."""
    s = name.casefold().replace("&", " and ")
    return re.sub(r"\s+", " ", s).strip()


class Taxonomy:
    """A validated, immutable set of interests plus the sensitive map.

    Constructing one runs every check (see the module docstring); use :func:`load_taxonomy`.
    """

    __slots__ = (
        "_by_id",
        "_by_name",
        "_excluded",
        "_interests",
        "_sensitive_map",
        "_version",
    )

    def __init__(
        self,
        interests: Iterable[Interest],
        sensitive_map: Mapping[str, str],
        *,
        version: str,
        excluded: Mapping[str, str] | None = None,
        categories: Iterable[str] | None = None,
    ) -> None:
        self._interests = tuple(interests)
        self._sensitive_map = dict(sensitive_map)
        self._excluded = dict(excluded or {})
        self._version = version
        self._by_id = _index_by_id(self._interests)
        _check_sensitive_map(self._sensitive_map, categories)
        _check_tree(self._by_id)
        _check_not_sensitive(self._by_id, self._sensitive_map, self._excluded)
        self._by_name = _index_by_name(self._interests, self._by_id)

    # ---- data --------------------------------------------------------------------------------
    @property
    def interests(self) -> tuple[Interest, ...]:
        return self._interests

    @property
    def sensitive_map(self) -> dict[str, str]:
        """IAB node id -> sensitive category (a copy)."""
        return dict(self._sensitive_map)

    @property
    def excluded(self) -> dict[str, str]:
        """IAB node id -> reason it is never an interest (non-category reasons; a copy)."""
        return dict(self._excluded)

    @property
    def version(self) -> str:
        """sha256 (hex) of the interests file and sensitive map bytes."""
        return self._version

    @property
    def short_version(self) -> str:
        return self._version[:12]

    # ---- lookups -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._interests)

    def __contains__(self, interest_id: object) -> bool:
        return isinstance(interest_id, str) and interest_id in self._by_id

    def ids(self) -> tuple[str, ...]:
        """All interest ids, in file order."""
        return tuple(i.id for i in self._interests)

    def tier1(self) -> tuple[Interest, ...]:
        return tuple(i for i in self._interests if i.tier == 1)

    def by_id(self, interest_id: str) -> Interest:
        try:
            return self._by_id[interest_id]
        except KeyError:
            raise KeyError(f"unknown interest id {interest_id!r}") from None

    def by_name(self, name: str) -> Interest:
        """Look up by name: case-insensitive, '&' == 'and', also accepts a full path
        ("Entertainment > Movies") and legacy labels (``LEGACY_NAME_ALIASES``)."""
        hit = self._by_name.get(normalize_name(name))
        if hit is None:
            raise KeyError(f"unknown interest label {name!r}")
        return self._by_id[hit]

    def name_to_id(self, name: str) -> str:
        return self.by_name(name).id

    def tier1_of(self, interest_id: str) -> Interest:
        """The tier-1 ancestor of an interest (a tier-1 interest is its own tier-1)."""
        node = self.by_id(interest_id)
        while node.parent_id is not None:
            node = self._by_id[node.parent_id]
        return node

    def children(self, interest_id: str) -> tuple[Interest, ...]:
        self.by_id(interest_id)
        return tuple(i for i in self._interests if i.parent_id == interest_id)

    def sensitive_category_of(self, iab_id: str) -> str | None:
        """The sensitive category an IAB node implies, or None."""
        return self._sensitive_map.get(iab_id)

    def __repr__(self) -> str:
        return (
            f"Taxonomy({len(self._interests)} interests, {len(self._sensitive_map)} sensitive "
            f"nodes, version={self.short_version})"
        )


# ---- loading ---------------------------------------------------------------------------------
def load_taxonomy(
    interests_path: Path | None = None,
    sensitive_map_path: Path | None = None,
    categories: Iterable[str] | None = None,
) -> Taxonomy:
    """Load and validate the taxonomy (defaults: the files shipped in ``labeling/data``).

    ``categories``: the policy's sensitive categories; when given, every sensitive-map entry must
    use one of them.
    """
    ipath = interests_path or DEFAULT_INTERESTS_PATH
    spath = sensitive_map_path or DEFAULT_SENSITIVE_MAP_PATH
    ibytes = _read_bytes(ipath)
    sbytes = _read_bytes(spath)
    interests = _parse_interests(ibytes, ipath)
    sensitive, excluded = _parse_sensitive_map(sbytes, spath)
    return Taxonomy(
        interests,
        sensitive,
        excluded=excluded,
        categories=categories,
        version=compute_version(ibytes, sbytes),
    )


def compute_version(interests_bytes: bytes, sensitive_map_bytes: bytes) -> str:
    """sha256 hex over both files (each length-prefixed, so the boundary is unambiguous)."""
    h = hashlib.sha256()
    for b in (interests_bytes, sensitive_map_bytes):
        h.update(len(b).to_bytes(8, "big"))
        h.update(b)
    return h.hexdigest()


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise TaxonomyError(f"cannot read taxonomy file {path}: {e}") from e


def _parse_interests(data: bytes, path: Path) -> list[Interest]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TaxonomyError(f"{path}: not UTF-8: {e}") from e
    rows = list(csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows or tuple(c.strip() for c in rows[0]) != INTERESTS_COLUMNS:
        raise TaxonomyError(f"{path}: header must be the tab-separated {INTERESTS_COLUMNS}")
    out: list[Interest] = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(INTERESTS_COLUMNS):
            raise TaxonomyError(
                f"{path}:{lineno}: expected {len(INTERESTS_COLUMNS)} columns, got {len(row)}"
            )
        iid, name, tier_s, parent, ipath = (c.strip() for c in row)
        if not iid or not name or not ipath:
            raise TaxonomyError(f"{path}:{lineno}: empty id, name or path")
        try:
            tier = int(tier_s)
        except ValueError:
            raise TaxonomyError(f"{path}:{lineno}: interest {iid!r}: bad tier {tier_s!r}") from None
        out.append(Interest(iid, name, tier, parent or None, ipath))
    return out


def _parse_sensitive_map(data: bytes, path: Path) -> tuple[dict[str, str], dict[str, str]]:
    try:
        doc: Any = yaml.safe_load(data)
    except yaml.YAMLError as e:
        raise TaxonomyError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("sensitive"), list):
        raise TaxonomyError(f"{path}: expected a mapping with a 'sensitive' list")
    unknown = set(doc) - {"schema", "sensitive", "excluded"}
    if unknown:
        raise TaxonomyError(f"{path}: unknown top-level keys {sorted(unknown)}")
    sensitive = _parse_entries(doc["sensitive"], "category", path, "sensitive")
    excluded = _parse_entries(doc.get("excluded") or [], "reason", path, "excluded")
    both = sorted(set(sensitive) & set(excluded))
    if both:
        raise TaxonomyError(f"{path}: ids both sensitive and excluded: {both}")
    return sensitive, excluded


def _parse_entries(entries: Any, value_key: str, path: Path, section: str) -> dict[str, str]:
    if not isinstance(entries, list):
        raise TaxonomyError(f"{path}: '{section}' must be a list")
    out: dict[str, str] = {}
    for n, e in enumerate(entries):
        where = f"{path}: {section}[{n}]"
        if not isinstance(e, dict):
            raise TaxonomyError(f"{where}: expected a mapping")
        iid, value = e.get("id"), e.get(value_key)
        if not isinstance(iid, str) or not iid.strip():
            raise TaxonomyError(f"{where}: 'id' must be a non-empty string (quote it), got {iid!r}")
        if not isinstance(value, str) or not value.strip():
            raise TaxonomyError(f"{where}: id {iid!r}: '{value_key}' must be a non-empty string")
        iid = iid.strip()
        if iid in out:
            raise TaxonomyError(f"{where}: duplicate id {iid!r}")
        out[iid] = value.strip()
    return out


# ---- checks ----------------------------------------------------------------------------------
def _index_by_id(interests: tuple[Interest, ...]) -> dict[str, Interest]:
    by_id: dict[str, Interest] = {}
    for i in interests:
        if i.id in by_id:
            raise TaxonomyError(f"duplicate interest id {i.id!r} ({i.name!r})")
        by_id[i.id] = i
    return by_id


def _check_sensitive_map(
    sensitive_map: Mapping[str, str], categories: Iterable[str] | None
) -> None:
    if categories is None:
        return
    allowed = frozenset(categories)
    for iid, cat in sensitive_map.items():
        if cat not in allowed:
            raise TaxonomyError(
                f"sensitive map: id {iid!r} maps to category {cat!r}, which is not a policy "
                f"category {sorted(allowed)}"
            )


def _check_tree(by_id: Mapping[str, Interest]) -> None:
    for i in by_id.values():
        if i.tier < 1:
            raise TaxonomyError(f"interest {i.id!r} ({i.name!r}): tier must be >= 1")
        if i.tier == 1:
            if i.parent_id is not None:
                raise TaxonomyError(f"tier-1 interest {i.id!r} ({i.name!r}) has a parent")
            expected = i.name
        else:
            parent = by_id.get(i.parent_id) if i.parent_id is not None else None
            if parent is None:
                raise TaxonomyError(
                    f"tier-{i.tier} interest {i.id!r} ({i.name!r}): parent {i.parent_id!r} "
                    "is not in the interests file"
                )
            if parent.tier != i.tier - 1:
                raise TaxonomyError(
                    f"interest {i.id!r}: parent {parent.id!r} has tier {parent.tier}, "
                    f"expected {i.tier - 1}"
                )
            expected = parent.path + PATH_SEPARATOR + i.name
        if i.path != expected:
            raise TaxonomyError(f"interest {i.id!r}: path {i.path!r}, expected {expected!r}")


def _check_not_sensitive(
    by_id: Mapping[str, Interest], sensitive: Mapping[str, str], excluded: Mapping[str, str]
) -> None:
    for i in by_id.values():
        node: Interest | None = i
        while node is not None:
            what = "it" if node is i else f"its ancestor {node.id!r} ({node.name!r})"
            if node.id in sensitive:
                raise TaxonomyError(
                    f"interest {i.id!r} ({i.name!r}) is not allowed: {what} is sensitive "
                    f"({sensitive[node.id]})"
                )
            if node.id in excluded:
                raise TaxonomyError(
                    f"interest {i.id!r} ({i.name!r}) is not allowed: {what} is excluded "
                    f"({excluded[node.id]})"
                )
            node = by_id[node.parent_id] if node.parent_id is not None else None


def _index_by_name(
    interests: tuple[Interest, ...], by_id: Mapping[str, Interest]
) -> dict[str, str]:
    index: dict[str, str] = {}

    def add(key: str, iid: str, what: str) -> None:
        k = normalize_name(key)
        other = index.get(k)
        if other is not None and other != iid:
            raise TaxonomyError(f"ambiguous interest {what} {key!r}: ids {other!r} and {iid!r}")
        index[k] = iid

    for i in interests:
        add(i.name, i.id, "name")
    for i in interests:
        add(i.path, i.id, "path")
    for alias, iid in LEGACY_NAME_ALIASES.items():
        if iid in by_id:
            add(alias, iid, "alias")
    return index
