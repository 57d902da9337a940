"""Composed long dialogues: one sensitive (or, as a control, one neutral) turn inserted late into a
long clean dialogue from another source.

A filter that judges the conversation as a whole lets such a turn pass; a filter that judges every
turn must block it, and must not block the controls. Used by the filter-quality benchmark and by
the gate (``experiments.gate``) on the frozen eval split, and available as augmented training
examples (``origin="augmented"``, recorded in the snapshot lineage).

* hosts: clean examples with at least ``min_host_turns`` turns (with ``chain_hosts``, when there
  are none, consecutive clean examples are chained into hosts of that length: small eval splits
  of short conversations still get the check);
* donors: examples of at most ``max_donor_turns`` turns (starting with a user turn) and
  ``max_donor_chars`` characters, inserted as a block; sensitive donors make test items, clean
  donors make controls;
* a donor never comes from the host's source (the id prefix before the first ``-``), and it is
  inserted at a position drawn uniformly from the last third of the host's turns.

Deterministic for a given seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from experiments.dataset import Example

DEFAULT_MIN_HOST_TURNS = 12
DEFAULT_MAX_DONOR_CHARS = 300


def source_of(conversation_id: str) -> str:
    """The source a conversation id names (its prefix before the first ``-``)."""
    return conversation_id.split("-", 1)[0].split(":", 1)[-1]


def is_host(e: Example, min_turns: int = DEFAULT_MIN_HOST_TURNS) -> bool:
    return not e.sensitive and len(e.turns) >= min_turns


def donor_turns(
    e: Example, max_chars: int = DEFAULT_MAX_DONOR_CHARS, max_turns: int = 1
) -> tuple[str, ...] | None:
    """The turns of an example short enough to insert as a block (None otherwise)."""
    if not e.turns or len(e.turns) > max_turns or not e.turns[0].startswith("user"):
        return None
    if sum(len(t) for t in e.turns) > max_chars:
        return None
    return e.turns


def chained_hosts(examples: Sequence[Example], min_turns: int) -> list[Example]:
    """Consecutive clean examples (by id) joined into clean dialogues of >= ``min_turns`` turns."""
    out: list[Example] = []
    turns: list[str] = []
    ids: list[str] = []
    for e in sorted((e for e in examples if not e.sensitive), key=lambda e: e.conversation_id):
        turns.extend(e.turns)
        ids.append(e.conversation_id)
        if len(turns) >= min_turns:
            out.append(
                Example(f"chain-{ids[0]}..{ids[-1]}", tuple(turns), (), None, 1.0, "augmented")
            )
            turns, ids = [], []
    return out


@dataclass(frozen=True)
class ComposedSet:
    sensitive: tuple[Example, ...]  # a sensitive turn inserted: must block
    controls: tuple[Example, ...]  # a neutral turn inserted: must not block
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> inserted turns [a, b)
    donors: dict[str, str] = field(default_factory=dict)  # id -> the donor's conversation id

    @property
    def examples(self) -> tuple[Example, ...]:
        return self.sensitive + self.controls


def compose_long_dialogues(
    examples: Sequence[Example],
    *,
    n: int,
    seed: int = 0,
    min_host_turns: int = DEFAULT_MIN_HOST_TURNS,
    max_donor_chars: int = DEFAULT_MAX_DONOR_CHARS,
    max_donor_turns: int = 1,
    chain_hosts: bool = False,
    n_controls: int | None = None,
    spread_hosts: bool = False,
) -> ComposedSet:
    """Up to ``n`` sensitive items and ``n_controls`` (default ``n``) controls from ``examples``
    (see the module doc): each donor is used at most once. ``spread_hosts``: each item's host is
    drawn among the allowed hosts used least so far, so every host carries about as many items
    (a rate then depends much less on which hosts the draw happened to favour)."""
    rng = random.Random(seed)
    hosts = sorted(
        (e for e in examples if is_host(e, min_host_turns)), key=lambda e: e.conversation_id
    )
    if not hosts and chain_hosts:
        hosts = chained_hosts(examples, min_host_turns)
    donors = [
        (e, t)
        for e in sorted(examples, key=lambda e: e.conversation_id)
        if (t := donor_turns(e, max_donor_chars, max_donor_turns)) is not None
    ]
    sens_donors = [(e, t) for e, t in donors if e.sensitive]
    clean_donors = [(e, t) for e, t in donors if not e.sensitive]
    if not hosts:
        return ComposedSet((), ())
    spans: dict[str, tuple[int, int]] = {}
    donor_of: dict[str, str] = {}
    host_source = [source_of(h.conversation_id) for h in hosts]

    def build(
        pool: list[tuple[Example, tuple[str, ...]]], kind: str, size: int
    ) -> tuple[Example, ...]:
        out: list[Example] = []
        if not pool:
            return ()
        order = list(range(len(pool)))
        rng.shuffle(order)
        uses = [0] * len(hosts)
        for k in range(min(size, len(pool))):
            donor, block = pool[order[k]]
            src = source_of(donor.conversation_id)
            candidates = [j for j in range(len(hosts)) if host_source[j] != src]
            if not candidates:
                continue
            if spread_hosts:
                least = min(uses[j] for j in candidates)
                candidates = [j for j in candidates if uses[j] == least]
            j = candidates[rng.randrange(len(candidates))]
            uses[j] += 1
            host = hosts[j]
            m = len(host.turns)
            pos = rng.randint(m - m // 3, m)  # insert before index pos: within the last third
            turns = host.turns[:pos] + block + host.turns[pos:]
            cid = f"aug-{kind}:{host.conversation_id}+{donor.conversation_id}@{pos}"
            spans[cid] = (pos, pos + len(block))
            donor_of[cid] = donor.conversation_id
            out.append(
                Example(
                    conversation_id=cid,
                    turns=turns,
                    sensitive=donor.sensitive,
                    interests=None,
                    weight=1.0,
                    origin="augmented",
                )
            )
        return tuple(out)

    sensitive = build(sens_donors, "sensitive", n)
    controls = build(clean_donors, "control", n if n_controls is None else n_controls)
    return ComposedSet(sensitive, controls, spans, donor_of)
