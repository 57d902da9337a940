"""The gold-example vector store (Chroma), the kNN vote and few-shot selection.

* One Chroma collection (``Settings.chroma_collection``) of reviewed examples: the document is the
  redacted conversation text, the id is the conversation id (upserts are idempotent), the labels
  are metadata (``interests_json`` = IAB ids as a JSON list or ``null`` when unknown,
  ``sensitive_json``, ``origin`` = human|adjudicated|seed|silver|dev). Embedded in
  ``Settings.chroma_dir`` by default (``chromadb.PersistentClient``), or a Chroma server when
  ``Settings.chroma_url`` is set (``chromadb.HttpClient``). Vectors come from
  :class:`labeling.embeddings.MiniLMChromaEmbeddingFunction` (cosine space).
* **Cold start**: :meth:`GoldIndex.ensure_seeded` loads ``labeling/data/seed_examples.yaml`` when the
  collection is empty. Seeds stay afterwards with a lower vote weight (``Settings.knn_seed_weight``)
  because the rarest categories (union_membership, philosophical_beliefs) have almost no other data.
* **kNN vote** (:func:`knn_vote`): the ``k`` nearest examples vote with weight
  ``origin_weight * exp((sim - max_sim) / T)`` (``sim`` = cosine similarity, ``T`` =
  ``Settings.knn_temperature``); a label's probability is the weighted share of neighbours that
  carry it. Interests are voted only among neighbours whose interests are known, and mapped to
  their tier-1 node (the label set of proposals).
* **Few-shot selection** (:func:`select_few_shot`): first, for every label carried by some
  neighbour, the nearest neighbour carrying it (labels in order of vote weight), then the rest by
  similarity; each example's text is cut to a fixed size and examples are added while the token
  budget allows, so every candidate label among the neighbours appears at least once whenever the
  budget permits it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import yaml

from labeling.taxonomy import Taxonomy

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection


SEED_PATH: Final = Path(__file__).parent / "data" / "seed_examples.yaml"
SEED_PREFIX: Final = "seed:"

__all__ = [
    "SEED_PATH",
    "GoldIndex",
    "IndexedExample",
    "KnnVote",
    "Lexicon",
    "Neighbor",
    "VectorStoreConfig",
    "knn_vote",
    "load_seed_examples",
    "open_chroma_client",
    "select_few_shot",
]


@dataclass(frozen=True)
class IndexedExample:
    id: str
    text: str
    interests: tuple[str, ...] | None  # IAB ids; None = unknown
    sensitive: tuple[str, ...]
    origin: str = "human"

    def metadata(self) -> dict[str, Any]:
        return {
            "interests_json": json.dumps(list(self.interests))
            if self.interests is not None
            else "null",
            "sensitive_json": json.dumps(list(self.sensitive)),
            "interests_known": self.interests is not None,
            "origin": self.origin,
        }


@dataclass(frozen=True)
class Neighbor:
    id: str
    text: str
    similarity: float
    interests: tuple[str, ...] | None
    sensitive: tuple[str, ...]
    origin: str

    @classmethod
    def from_chroma(cls, id_: str, doc: str, distance: float, meta: Mapping[str, Any]) -> Neighbor:
        ij = json.loads(str(meta.get("interests_json", "null")))
        return cls(
            id=id_,
            text=doc,
            similarity=1.0 - float(distance),
            interests=tuple(ij) if ij is not None else None,
            sensitive=tuple(json.loads(str(meta.get("sensitive_json", "[]")))),
            origin=str(meta.get("origin", "human")),
        )


@dataclass(frozen=True)
class KnnVote:
    interests: dict[str, float]
    sensitive: dict[str, float]
    max_similarity: float
    n: int
    n_interest_known: int


# --------------------------------------------------------------------------- pure functions


def _weights(neighbors: Sequence[Neighbor], temperature: float, seed_weight: float) -> list[float]:
    if not neighbors:
        return []
    top = max(n.similarity for n in neighbors)
    t = max(temperature, 1e-6)
    return [
        (seed_weight if n.origin == "seed" else 1.0) * math.exp((n.similarity - top) / t)
        for n in neighbors
    ]


def knn_vote(
    neighbors: Sequence[Neighbor],
    *,
    temperature: float = 0.05,
    seed_weight: float = 0.5,
    interest_map: Callable[[str], str | None] | None = None,
) -> KnnVote:
    """Distance-weighted label distribution of ``neighbors`` (see the module docstring).

    ``interest_map`` maps a stored interest id to the proposal label (e.g. its tier-1), or None to
    drop it.
    """
    w = _weights(neighbors, temperature, seed_weight)
    sens: dict[str, float] = {}
    ints: dict[str, float] = {}
    total = sum(w)
    total_known = 0.0
    known = 0
    for n, wi in zip(neighbors, w, strict=True):
        for c in set(n.sensitive):
            sens[c] = sens.get(c, 0.0) + wi
        if n.interests is not None:
            known += 1
            total_known += wi
            labels = {interest_map(i) if interest_map else i for i in n.interests}
            for i in labels:
                if i is not None:
                    ints[i] = ints.get(i, 0.0) + wi
    return KnnVote(
        interests={k: v / total_known for k, v in ints.items()} if total_known > 0 else {},
        sensitive={k: v / total for k, v in sens.items()} if total > 0 else {},
        max_similarity=max((n.similarity for n in neighbors), default=0.0),
        n=len(neighbors),
        n_interest_known=known,
    )


def _labels_of(n: Neighbor) -> list[str]:
    return [f"s:{c}" for c in n.sensitive] + [f"i:{i}" for i in (n.interests or ())]


def select_few_shot(
    neighbors: Sequence[Neighbor],
    *,
    k: int,
    token_budget: int,
    count_tokens: Callable[[str], int],
    max_chars: int = 280,
    render: Callable[[Neighbor, str], str] | None = None,
) -> list[Neighbor]:
    """Nearest examples with label diversity, within ``token_budget`` (see module docstring).

    ``render(neighbor, text)`` gives the text whose tokens are counted (default: the text).
    """
    ordered = sorted(neighbors, key=lambda n: -n.similarity)
    label_weight: dict[str, float] = {}
    for n in ordered:
        for lab in _labels_of(n):
            label_weight[lab] = label_weight.get(lab, 0.0) + max(n.similarity, 0.0)
    queue: list[Neighbor] = []
    for lab in sorted(label_weight, key=lambda x: -label_weight[x]):
        if any(lab in _labels_of(q) for q in queue):
            continue
        first = next((n for n in ordered if lab in _labels_of(n)), None)
        if first is not None and first not in queue:
            queue.append(first)
    queue.extend(n for n in ordered if n not in queue)
    chosen: list[Neighbor] = []
    used = 0
    for n in queue:
        if len(chosen) >= k:
            break
        text = truncate_chars(n.text, max_chars)
        cost = count_tokens(render(n, text) if render else text)
        if used + cost > token_budget:
            continue
        chosen.append(n)
        used += cost
    return chosen


def truncate_chars(text: str, max_chars: int) -> str:
    """Whitespace-normalised text cut at a word boundary to at most ``max_chars`` (+ an ellipsis)."""
    t = re.sub(r"\s+", " ", text).strip()
    if len(t) <= max_chars:
        return t
    cut = t[:max_chars].rsplit(" ", 1)[0]
    return cut + " …"


# --------------------------------------------------------------------------- seeds and lexicon


class Lexicon:
    """Cue words per sensitive category (``lexicon`` of the seed file); whole words, ``*`` = prefix."""

    def __init__(self, cues: Mapping[str, Iterable[str]]) -> None:
        self.patterns: dict[str, re.Pattern[str]] = {}
        for cat, words in cues.items():
            alts = []
            for w in words:
                w = str(w).strip().lower()
                if not w:
                    continue
                stem = re.escape(w.rstrip("*")).replace(r"\ ", r"\s+")
                alts.append(stem + (r"\w*" if w.endswith("*") else "") + r"\b")
            if alts:
                self.patterns[cat] = re.compile(r"\b(?:" + "|".join(alts) + ")", re.IGNORECASE)

    def match(self, text: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for cat, pat in self.patterns.items():
            hits = sorted({m.group(0).lower() for m in pat.finditer(text)})
            if hits:
                out[cat] = hits[:5]
        return out


def load_seed_examples(
    taxonomy: Taxonomy, categories: Sequence[str], path: Path | None = None
) -> tuple[list[IndexedExample], Lexicon]:
    """The seed examples (interest names -> IAB ids) and the lexicon; validated against policy."""
    p = path or SEED_PATH
    doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("examples"), list):
        raise ValueError(f"{p}: expected a mapping with an 'examples' list")
    cats = set(categories)
    out: list[IndexedExample] = []
    for n, e in enumerate(doc["examples"]):
        where = f"{p}: examples[{n}]"
        if not isinstance(e, dict) or not isinstance(e.get("text"), str):
            raise ValueError(f"{where}: needs a 'text'")
        sens = tuple(e.get("sensitive") or [])
        unknown = [c for c in sens if c not in cats]
        if unknown:
            raise ValueError(f"{where}: unknown sensitive categories {unknown}")
        try:
            ints = tuple(taxonomy.name_to_id(x) for x in e.get("interests") or [])
        except KeyError as exc:
            raise ValueError(f"{where}: {exc}") from exc
        out.append(IndexedExample(f"{SEED_PREFIX}{n:03d}", e["text"], ints, sens, "seed"))
    lex = doc.get("lexicon") or {}
    unknown_lex = [c for c in lex if c not in cats]
    if unknown_lex:
        raise ValueError(f"{p}: lexicon has unknown categories {unknown_lex}")
    return out, Lexicon(lex)


# --------------------------------------------------------------------------- Chroma


@dataclass(frozen=True)
class VectorStoreConfig:
    """Where the gold index lives: a Chroma server at ``url``, else a local ``path``."""

    path: Path
    url: str | None = None


def open_chroma_client(config: VectorStoreConfig) -> ClientAPI:
    """PersistentClient in ``config.path``, or HttpClient for ``config.url``."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if config.url:
        from urllib.parse import urlsplit

        u = urlsplit(config.url)
        return chromadb.HttpClient(
            host=u.hostname or "localhost",
            port=u.port or (443 if u.scheme == "https" else 8000),
            ssl=u.scheme == "https",
            settings=chroma_settings,
        )
    config.path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(config.path), settings=chroma_settings)


class GoldIndex:
    """The gold-example collection. ``embedding_function``: a chromadb EmbeddingFunction."""

    def __init__(
        self, client: ClientAPI, embedding_function: Any, name: str = "gold_examples"
    ) -> None:
        self.client = client
        self.name = name
        self.embedding_function = embedding_function
        self.collection: Collection = client.get_or_create_collection(
            name=name,
            embedding_function=embedding_function,
            configuration={"hnsw": {"space": "cosine"}},
        )

    def count(self) -> int:
        return int(self.collection.count())

    def upsert(self, examples: Sequence[IndexedExample], batch_size: int = 256) -> int:
        """Insert or replace examples by id (conversation id): re-running is a no-op."""
        for i in range(0, len(examples), batch_size):
            chunk = examples[i : i + batch_size]
            self.collection.upsert(
                ids=[e.id for e in chunk],
                documents=[e.text for e in chunk],
                metadatas=[e.metadata() for e in chunk],
            )
        return len(examples)

    def ensure_seeded(self, seeds: Sequence[IndexedExample]) -> int:
        """Bring the seed examples in the collection in line with the seed file.

        On an empty collection this is the cold start; later it only upserts seeds whose text or
        labels changed and deletes seeds no longer in the file. Returns the number written.
        """
        have = self.collection.get(where={"origin": "seed"}, include=["documents", "metadatas"])
        current = {
            i: (d, dict(m or {}))
            for i, d, m in zip(
                have["ids"], have["documents"] or [], have["metadatas"] or [], strict=False
            )
        }
        changed = [s for s in seeds if current.get(s.id) != (s.text, s.metadata())]
        stale = sorted(set(current) - {s.id for s in seeds})
        if stale:
            self.collection.delete(ids=stale)
        return self.upsert(changed) if changed else 0

    def query(self, texts: Sequence[str], k: int) -> list[list[Neighbor]]:
        if not texts:
            return []
        n = self.count()
        if n == 0:
            return [[] for _ in texts]
        res = self.collection.query(
            query_texts=list(texts),
            n_results=min(k, n),
            include=["documents", "metadatas", "distances"],
        )
        out: list[list[Neighbor]] = []
        ids = res["ids"]
        docs = res["documents"] or [[] for _ in ids]
        metas = res["metadatas"] or [[] for _ in ids]
        dists = res["distances"] or [[] for _ in ids]
        for qi in range(len(ids)):
            out.append(
                [
                    Neighbor.from_chroma(i, d or "", dist, m or {})
                    for i, d, dist, m in zip(ids[qi], docs[qi], dists[qi], metas[qi], strict=False)
                ]
            )
        return out
