"""Could the policy's own examples be a second, source-independent rule of the filter?

Every policy category has a description and examples (``experiments.registry.default_prototypes``),
which no training source wrote. A segment whose MiniLM vector is close enough to one of its
category's prototypes would be blocked whatever the segment model says. This measures the rule
alone, per dev source: its thresholds are the quantiles of the clean training segments'
similarities (the rule's per-segment false-positive rate ``q``), its recall on each source's
sensitive conversations and its block rate on its clean ones (whole subsample of the source):

    uv run --no-sync python benchmarks/prototype_rule.py ../shared/data/dev
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from filter_quality import (  # type: ignore[import-not-found]  # noqa: E402
    add_split_arguments,
    encoder_for,
    split_from_args,
)

from experiments.dataset import Example  # noqa: E402
from experiments.registry import default_prototypes  # noqa: E402
from labeling.segments import segment_turns  # noqa: E402


def similarities(
    examples: Sequence[Example], embedder: Any, protos: dict[str, Any], segment_chars: int
) -> tuple[Any, Any]:
    """(segments x categories) best cosine to a prototype, and each segment's conversation."""
    texts: list[str] = []
    owner: list[int] = []
    for i, e in enumerate(examples):
        for s in segment_turns(e.turns, segment_chars):
            texts.append(s.text)
            owner.append(i)
    vecs = embedder.embed(texts)
    sims = np.stack([(vecs @ p.T).max(axis=1) for p in protos.values()], axis=1)
    return sims, np.asarray(owner)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--segment-chars", type=int, default=400)
    ap.add_argument("--rates", default="0.00025,0.001,0.005,0.02", help="per-segment rates q")
    add_split_arguments(ap)
    args = ap.parse_args(argv)
    policy, _, per_source, snap = split_from_args(args)
    embedder = encoder_for("minilm", args.models_dir, args.cache_dir, args.max_length)
    texts = default_prototypes(policy)
    protos = {c: embedder.embed(list(texts[c])) for c in policy.categories if texts.get(c)}
    print("prototypes per category:", {c: len(texts[c]) for c in protos})
    clean_train = [e for e in snap.train if not e.sensitive]
    ref, _ = similarities(clean_train, embedder, protos, args.segment_chars)
    sources = {
        s: similarities(list(sn.train) + list(sn.eval), embedder, protos, args.segment_chars)
        for s, sn in per_source.items()
    }
    print(
        "| q (per clean segment) | "
        + " | ".join(f"{s} recall / clean blocked" for s in sources)
        + " |"
    )
    print("|---|" + "---|" * len(sources))
    for q in (float(x) for x in args.rates.split(",")):
        thr = np.quantile(ref, 1.0 - q, axis=0)
        cells = []
        for s, (sims, owner) in sources.items():
            ex = list(per_source[s].train) + list(per_source[s].eval)
            hit = np.zeros(len(ex), dtype=bool)
            np.logical_or.at(hit, owner, (sims >= thr).any(axis=1))
            sens = np.array([bool(e.sensitive) for e in ex])
            r = f"{100 * hit[sens].mean():.1f}" if sens.any() else "-"
            f = f"{100 * hit[~sens].mean():.1f}" if (~sens).any() else "-"
            cells.append(f"{r} / {f}")
        print(f"| {q:g} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
