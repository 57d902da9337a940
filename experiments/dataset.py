"""Training snapshots: gold (+ down-weighted silver) labels, and the frozen evaluation split.

A :class:`Snapshot` is an immutable, content-hashed set of labelled examples split into
``train`` and ``eval``. Each example holds its *redacted*, rendered turns
(:func:`labeling.segments.turn_texts`), exactly what the filter scores at serving time.

The evaluation split (gold only, never trained on) is frozen and only grows:

* rule ``hash``: a new gold item joins eval iff ``h(conversation_id) < eval_fraction``, where ``h`` is
  a salted sha256 mapped to [0, 1). Deterministic: the same id always gets the same answer, so
  stratification holds in expectation within every stratum and nothing depends on arrival order;
* rule ``stratum_min``: a stratum (``has-sensitive / first sensitive category``) with at least
  ``min_stratum_size`` gold items but no eval item gets its lowest-hash item added (rare
  categories must be measured too);
* items are never removed: in the label store the split is persisted (table ``eval_split``) and
  the existing rows are always kept, whatever the current rule parameters are.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labeling.records import Conversation
from labeling.segments import scored_texts, turn_texts
from labeling.taxonomy import Taxonomy

if TYPE_CHECKING:
    import pandas as pd

    from labelloop.store import LabelStore

DEFAULT_EVAL_FRACTION = 0.2
DEFAULT_EVAL_SALT = "labelloop-eval-v1"
DEFAULT_MIN_STRATUM_SIZE = 3
SILVER_MIN_CONFIDENCE = 0.5
FRAME_COLUMNS = ("conversation_id", "text", "sensitive", "interests", "weight", "origin")


@dataclass(frozen=True)
class Example:
    """One labelled conversation: its redacted, rendered turns (``labeling.segments.turn_texts``)."""

    conversation_id: str
    turns: tuple[str, ...]
    sensitive: tuple[str, ...]
    interests: tuple[str, ...] | None  # IAB ids; None = unknown (masked out of interest training)
    weight: float = 1.0
    origin: str = "gold"  # gold origins (human|adjudicated|seed|records), "silver" or "augmented"

    def __post_init__(self) -> None:
        # a conversation text given as one string: one turn per line
        turns: Any = self.turns
        if isinstance(turns, str):
            object.__setattr__(self, "turns", tuple(turns.split("\n")))
        elif not isinstance(turns, tuple):
            object.__setattr__(self, "turns", tuple(str(t) for t in turns))

    @property
    def text(self) -> str:
        """The conversation as one text (one line per turn)."""
        return "\n".join(self.turns)

    @property
    def stratum(self) -> str:
        return stratum_of(self.sensitive)

    def to_row(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "turns": list(self.turns),
            "sensitive": list(self.sensitive),
            "interests": None if self.interests is None else list(self.interests),
            "weight": self.weight,
            "origin": self.origin,
        }

    def to_frame_row(self, max_chars: int = 2000) -> dict[str, Any]:
        """A flat row for tables (MLflow dataset inputs): the text instead of the turn list."""
        row = {k: v for k, v in self.to_row().items() if k != "turns"}
        return {**row, "text": self.text[:max_chars]}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Example:
        ints = row.get("interests")
        turns = row.get("turns")
        return cls(
            conversation_id=str(row["conversation_id"]),
            # rows written before turns were kept have the text: one turn per line
            turns=tuple(str(t) for t in turns) if turns is not None else str(row["text"]),  # type: ignore[arg-type]
            sensitive=tuple(row.get("sensitive") or ()),
            interests=None if ints is None else tuple(ints),
            weight=float(row.get("weight", 1.0)),
            origin=str(row.get("origin", "gold")),
        )


@dataclass(frozen=True)
class Snapshot:
    train: tuple[Example, ...]
    eval: tuple[Example, ...]
    categories: tuple[str, ...]
    lineage: dict[str, str] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        return snapshot_hash(self.train, self.eval)

    @property
    def interest_ids(self) -> tuple[str, ...]:
        """Interest ids that occur in the training labels (the classifier's label space)."""
        ids = {i for e in self.train if e.interests for i in e.interests}
        return tuple(sorted(ids))

    def summary(self) -> dict[str, Any]:
        def counts(xs: Sequence[Example]) -> dict[str, int]:
            c: dict[str, int] = defaultdict(int)
            for e in xs:
                for s in e.sensitive:
                    c[s] += 1
            return dict(sorted(c.items()))

        return {
            "n_train": len(self.train),
            "n_eval": len(self.eval),
            "n_train_silver": sum(1 for e in self.train if e.origin == "silver"),
            "n_train_interests_known": sum(1 for e in self.train if e.interests is not None),
            "n_eval_interests_known": sum(1 for e in self.eval if e.interests is not None),
            "train_sensitive": counts(self.train),
            "eval_sensitive": counts(self.eval),
        }

    def to_frame(self, part: str = "train") -> pd.DataFrame:
        import pandas as pd

        rows = [e.to_frame_row() for e in (self.train if part == "train" else self.eval)]
        return pd.DataFrame(rows, columns=list(FRAME_COLUMNS))


def stratum_of(sensitive: Sequence[str]) -> str:
    return f"sensitive:{sorted(sensitive)[0]}" if sensitive else "none"


def unit_hash(conversation_id: str, salt: str = DEFAULT_EVAL_SALT) -> float:
    """Deterministic hash of an id into [0, 1)."""
    h = hashlib.sha256(f"{salt}\x00{conversation_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def snapshot_hash(train: Iterable[Example], eval_: Iterable[Example]) -> str:
    """sha256 over the sorted canonical rows of both parts (order-independent)."""
    h = hashlib.sha256()
    for part, rows in (("train", train), ("eval", eval_)):
        lines = sorted(
            json.dumps({"part": part, **e.to_row()}, sort_keys=True, ensure_ascii=False)
            for e in rows
        )
        for line in lines:
            h.update(line.encode("utf-8"))
            h.update(b"\n")
    return h.hexdigest()


def assign_eval(
    gold: Sequence[Example],
    existing: Iterable[str] = (),
    *,
    fraction: float = DEFAULT_EVAL_FRACTION,
    salt: str = DEFAULT_EVAL_SALT,
    min_stratum_size: int = DEFAULT_MIN_STRATUM_SIZE,
) -> dict[str, str]:
    """The eval split after adding ``gold``: ``{conversation_id: rule}`` for *new* members only.

    ``existing`` ids stay members (the caller keeps them); new members come from the hash rule and
    the per-stratum minimum rule (see the module docstring).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError("eval fraction must be in [0, 1)")
    members = set(existing)
    new: dict[str, str] = {}
    for e in gold:
        if e.conversation_id not in members and unit_hash(e.conversation_id, salt) < fraction:
            new[e.conversation_id] = "hash"
    if min_stratum_size > 0 and fraction > 0:
        by_stratum: dict[str, list[Example]] = defaultdict(list)
        for e in gold:
            by_stratum[e.stratum].append(e)
        for items in by_stratum.values():
            if len(items) < min_stratum_size:
                continue
            if any(e.conversation_id in members or e.conversation_id in new for e in items):
                continue
            first = min(items, key=lambda e: unit_hash(e.conversation_id, salt))
            new[first.conversation_id] = "stratum_min"
    return new


def split_examples(
    gold: Sequence[Example], silver: Sequence[Example], eval_ids: Iterable[str]
) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
    ev = set(eval_ids)
    gold_ids = {e.conversation_id for e in gold}
    train = [e for e in gold if e.conversation_id not in ev]
    train += [
        e for e in silver if e.conversation_id not in ev and e.conversation_id not in gold_ids
    ]
    eval_ = [e for e in gold if e.conversation_id in ev]
    key = lambda e: e.conversation_id  # noqa: E731
    return tuple(sorted(train, key=key)), tuple(sorted(eval_, key=key))


# ------------------------------------------------------------------------------------ records
def interests_to_ids(
    names: Sequence[str] | None, taxonomy: Taxonomy, *, where: str = ""
) -> tuple[str, ...] | None:
    """Gold interest names (dev data: tier-1 names) -> IAB ids. Unknown names raise, naming the record."""
    if names is None:
        return None
    out: list[str] = []
    for n in names:
        try:
            out.append(taxonomy.name_to_id(n))
        except KeyError as exc:
            raise ValueError(f"{where}: field 'gold.interests': unknown interest {n!r}") from exc
    return tuple(sorted(set(out)))


def example_from_record(
    conv: Conversation, taxonomy: Taxonomy, categories: Sequence[str]
) -> Example | None:
    """An :class:`Example` from a record with gold labels (None when it has no gold)."""
    if conv.gold is None:
        return None
    where = f"record {conv.conversation_id!r}"
    unknown = [s for s in conv.gold.sensitive if s not in categories]
    if unknown:
        raise ValueError(f"{where}: field 'gold.sensitive': {unknown} are not policy categories")
    return Example(
        conversation_id=conv.conversation_id,
        turns=scored_texts(conv),
        sensitive=tuple(sorted(set(conv.gold.sensitive))),
        interests=interests_to_ids(conv.gold.interests, taxonomy, where=where),
        origin="records",
    )


def snapshot_from_records(
    convs: Sequence[Conversation],
    taxonomy: Taxonomy,
    categories: Sequence[str] | None = None,
    *,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    salt: str = DEFAULT_EVAL_SALT,
    min_stratum_size: int = DEFAULT_MIN_STRATUM_SIZE,
    lineage: Mapping[str, str] | None = None,
    errors: list[str] | None = None,
    workers: int = 1,
) -> Snapshot:
    """A snapshot straight from records with gold (benchmarks, tests, ``train --from-records``).

    Records without gold are skipped; a record with bad gold is skipped and described in
    ``errors`` (when given) instead of failing the batch. ``workers`` > 1 redacts and renders
    large inputs in that many processes (the same examples, in the same order).
    """
    cats = tuple(categories) if categories is not None else _default_categories()
    gold: list[Example] = []
    for item in _examples_of(convs, taxonomy, cats, workers):
        if isinstance(item, str):
            if errors is None:
                raise ValueError(item)
            errors.append(item)
        elif item is not None:
            gold.append(item)
    ev = assign_eval(gold, fraction=eval_fraction, salt=salt, min_stratum_size=min_stratum_size)
    train, eval_ = split_examples(gold, [], ev)
    lin = {"source": "records", "n_gold": str(len(gold)), "taxonomy_version": taxonomy.version}
    lin.update(lineage or {})
    return Snapshot(train, eval_, cats, lin)


PARALLEL_MIN_RECORDS = 4000  # below this, starting worker processes costs more than it saves


def _examples_chunk(
    convs: Sequence[Conversation], taxonomy: Taxonomy, categories: Sequence[str]
) -> list[Example | str | None]:
    """Each record's example (None without gold), or the error that names it."""
    out: list[Example | str | None] = []
    for c in convs:
        try:
            out.append(example_from_record(c, taxonomy, categories))
        except ValueError as exc:
            out.append(str(exc))
    return out


def _examples_of(
    convs: Sequence[Conversation], taxonomy: Taxonomy, categories: Sequence[str], workers: int
) -> list[Example | str | None]:
    if workers <= 1 or len(convs) < PARALLEL_MIN_RECORDS:
        return _examples_chunk(convs, taxonomy, categories)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    size = math.ceil(len(convs) / (workers * 4))
    chunks = [list(convs[i : i + size]) for i in range(0, len(convs), size)]
    # fork: the workers need no fresh interpreter and must not re-run the caller's main module
    # (a script without a ``__main__`` guard would train again in every worker under spawn)
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        parts = pool.map(_examples_chunk, chunks, [taxonomy] * len(chunks),
                         [tuple(categories)] * len(chunks))  # fmt: skip
        return [item for part in parts for item in part]


def _default_categories() -> tuple[str, ...]:
    from labeling.policy import load_policy

    return load_policy().categories


# ------------------------------------------------------------------------------------ store
@dataclass(frozen=True)
class StoreSnapshotConfig:
    eval_fraction: float = DEFAULT_EVAL_FRACTION
    salt: str = DEFAULT_EVAL_SALT
    min_stratum_size: int = DEFAULT_MIN_STRATUM_SIZE
    silver_precision: float = 0.8  # measured QA precision of auto-accepted proposals = their weight
    silver_min_confidence: float = SILVER_MIN_CONFIDENCE
    include_silver: bool = True


def snapshot_from_store(
    store: LabelStore,
    categories: Sequence[str],
    *,
    config: StoreSnapshotConfig = StoreSnapshotConfig(),
    lineage: Mapping[str, str] | None = None,
    persist_eval: bool = True,
) -> Snapshot:
    """Build a snapshot from the label store; grows (and persists) the frozen eval split."""
    cats = tuple(categories)
    use_silver = config.include_silver and config.silver_precision > 0
    data = store.training_data(include_silver=use_silver)
    gold: list[Example] = []
    for g, turns in data.gold:
        if not turns:
            continue
        gold.append(
            Example(
                conversation_id=g.conversation_id,
                turns=turn_texts(turns, redacted=True),
                sensitive=tuple(sorted({c for c in g.sensitive if c in cats})),
                interests=tuple(sorted(set(g.interests))),
                weight=float(g.weight if g.weight is not None else 1.0),
                origin=g.origin,
            )
        )
    gold_ids = {e.conversation_id for e in gold}
    silver: list[Example] = []
    for p, turns in data.silver:
        if p.conversation_id in gold_ids or not turns:
            continue
        thr = config.silver_min_confidence
        silver.append(
            Example(
                conversation_id=p.conversation_id,
                turns=turn_texts(turns, redacted=True),
                sensitive=tuple(
                    sorted(
                        c for c, v in (p.sensitive or {}).items() if c in cats and float(v) >= thr
                    )
                ),
                interests=tuple(
                    sorted(i for i, v in (p.interests or {}).items() if float(v) >= thr)
                ),
                weight=float(config.silver_precision),
                origin="silver",
            )
        )
    existing = data.eval_ids
    new = assign_eval(
        gold,
        existing,
        fraction=config.eval_fraction,
        salt=config.salt,
        min_stratum_size=config.min_stratum_size,
    )
    if persist_eval and new:
        strata = {e.conversation_id: e.stratum for e in gold}
        store.add_eval_split(
            [
                {"conversation_id": cid, "stratum": strata[cid], "rule": rule}
                for cid, rule in sorted(new.items())
            ]
        )
    max_id, max_rev, last = data.gold_max_id, data.gold_revisions, data.gold_last_resolved
    eval_ids = existing | set(new)
    train, eval_ = split_examples(gold, silver, eval_ids)
    lin = {
        "source": "label_store",
        "label_store_revision": f"gold:{len(gold)}/max_id:{max_id or 0}/rev:{max_rev or 0}/at:{last.isoformat() if last else 'none'}",
        "n_gold": str(len(gold)),
        "n_silver": str(len(silver)),
        "silver_precision": str(config.silver_precision),
        "eval_rule": f"hash<{config.eval_fraction}+stratum_min>={config.min_stratum_size}",
    }
    lin.update(lineage or {})
    return Snapshot(train, eval_, cats, lin)


def examples_to_jsonl(examples: Iterable[Example]) -> str:
    return "".join(json.dumps(e.to_row(), ensure_ascii=False) + "\n" for e in examples)


def examples_from_jsonl(text: str) -> list[Example]:
    out: list[Example] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(Example.from_row(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"eval set line {n}: {exc}") from exc
    return out
