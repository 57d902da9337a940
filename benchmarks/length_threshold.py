"""Does a length-aware any-sensitive threshold trade better than one threshold for all lengths?

A clean dialogue of n segments gets n chances to cross the any-sensitive threshold, so its
false-block grows with n. A family-wise threshold t(n) = max(t_any, Q(1 - q / n)), Q the quantile
of the clean training segments' P(any), holds that chance near q whatever n; ``t_any + g ln n`` is
the cruder form; a higher single threshold is the baseline any of them must beat. Each rule is
applied to the saved model's own segment scores (categories' floors and the lexicon unchanged) on
the benchmark's split (a) and its long dialogues (c):

    uv run --no-sync python benchmarks/filter_quality.py ../shared/data/dev --per-file 1500 \\
        --parts split,long --variant base=encoder:minilm --save-bundles .labelloop/bench/bundles
    uv run --no-sync python benchmarks/length_threshold.py ../shared/data/dev \\
        --bundle .labelloop/bench/bundles/base.pkl
"""

from __future__ import annotations

import argparse
import functools
import pickle
import sys
from collections.abc import Callable, Sequence
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

from experiments.composition import compose_long_dialogues  # noqa: E402
from experiments.dataset import Example  # noqa: E402

Row = tuple[int, Any, bool]  # segments, P(any) per segment, blocked by a floor or the lexicon


def rows_of(bundle: Any, examples: Sequence[Example], embedder: Any) -> list[Row]:
    thr_c = np.array([bundle.sensitive_thresholds.get(c, 1.01) for c in bundle.categories])
    out: list[Row] = []
    for start in range(0, len(examples), 256):
        chunk = examples[start : start + 256]
        seg = bundle.score_segments([e.turns for e in chunk], embedder)
        p_any: list[list[float]] = [[] for _ in chunk]
        other = [False] * len(chunk)
        for k in range(len(seg.segments)):
            i = int(seg.owner[k])
            p_any[i].append(float(seg.any[k]))
            other[i] |= bool((seg.categories[k] >= thr_c).any() or seg.lexicon_hits[k])
        out += [(len(p), np.asarray(p), o) for p, o in zip(p_any, other, strict=True)]
    return out


def blocked(rows: Sequence[Row], t: Callable[[int], float]) -> Any:
    return np.array([o or bool(n and (p >= t(n)).any()) for n, p, o in rows])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("data_dir", type=Path)
    ap.add_argument(
        "--bundle", type=Path, required=True, help="saved by filter_quality.py --save-bundles"
    )
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--n-long", type=int, default=400)
    add_split_arguments(ap)
    args = ap.parse_args(argv)
    _, _, _, snap = split_from_args(args)
    embedder = encoder_for(args.encoder, args.models_dir, args.cache_dir, args.max_length)
    with args.bundle.open("rb") as fh:
        bundle = pickle.load(fh)  # our own file, written by --save-bundles
    train_rows = rows_of(bundle, [e for e in snap.train if not e.sensitive], embedder)
    clean_seg = np.concatenate([p for n, p, _ in train_rows if n])
    ev = list(snap.eval)
    sens = np.array([bool(e.sensitive) for e in ev])
    ev_rows = rows_of(bundle, ev, embedder)
    comp = compose_long_dialogues(ev, n=args.n_long, seed=0, max_donor_turns=1,
                                  max_donor_chars=300, chain_hosts=True)  # fmt: skip
    ns = len(comp.sensitive)
    long_rows = rows_of(bundle, list(comp.examples), embedder)
    t0 = float(bundle.any_threshold)
    print(f"t_any {t0:.4f}; {clean_seg.size} clean training segments; split {len(ev)} "
          f"(median {np.median([r[0] for r in ev_rows]):.0f} segments), long {ns} sensitive + "
          f"{len(long_rows) - ns} controls (median {np.median([r[0] for r in long_rows]):.0f})")  # fmt: skip

    @functools.cache  # one quantile per (length, q), not one per conversation
    def q_at(n: int, q: float) -> float:
        return max(t0, float(np.quantile(clean_seg, 1.0 - q / n)))

    rules: list[tuple[str, Callable[[int], float]]] = [
        ("one threshold t_any (the model's)", lambda _n: t0)
    ]
    rules += [(f"one threshold {t}", lambda _n, t=t: t) for t in (0.1, 0.12, 0.15, 0.2, 0.25, 0.3)]
    rules += [
        (f"family-wise q={q}", lambda n, q=q: q_at(n, q))
        for q in (0.005, 0.01, 0.02, 0.03, 0.05, 0.08)
    ]
    rules += [
        (f"t_any + {g} ln n", lambda n, g=g: min(0.999, t0 + g * float(np.log(n))))
        for g in (0.02, 0.05, 0.1, 0.15)
    ]
    print(
        "| rule | (a) leak | (a) false-block | (c) long leak | (c) control FB |\n|---|---:|---:|---:|---:|"
    )
    for name, t in rules:
        bs, bl = blocked(ev_rows, t), blocked(long_rows, t)
        print(f"| {name} | {100 * (~bs[sens]).mean():.1f} | {100 * bs[~sens].mean():.1f} | "
              f"{100 * (~bl[:ns]).mean():.1f} | {100 * bl[ns:].mean():.1f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
