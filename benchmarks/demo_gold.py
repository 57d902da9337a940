"""How much gold the demo's first model needs to pass its gate (no servers, no LLM).

    uv run --no-sync python benchmarks/demo_gold.py --n 120 200 300 500 800 1200

For each ``n``: the demo's synthetic conversations (``labeling.synth.generate(n, seed)``), the
policy-eligible ones (the demo reviews nearly all of them), their *true* synthetic labels as gold
(a best case: the demo's simulated annotators are 95 % accurate), the eval split as the store
snapshot draws it (``eval_fraction``), the filter trained like ``labelloop train`` (same settings,
MiniLM embeddings from ``.labelloop/models``), and the gate's absolute rules (no champion) on the
eval split and on the long dialogues composed from it. Prints one row per ``n``: gold, eval items,
the gate verdict and every failed check. Nothing is logged to MLflow.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments.dataset import snapshot_from_records  # noqa: E402
from experiments.evaluation import evaluate_bundle, evaluate_long_dialogues  # noqa: E402
from experiments.gate import apply_rules  # noqa: E402
from experiments.registry import default_prototypes  # noqa: E402
from experiments.training import CachedEmbedder, train_filter  # noqa: E402
from labeling.encoders import encoder_files, load_encoder  # noqa: E402
from labeling.records import Conversation  # noqa: E402
from labeling.synth import generate  # noqa: E402
from labelloop.runtime import gate_rules, policy_and_taxonomy, train_config  # noqa: E402
from labelloop.settings import get_settings  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[120, 300, 800], help="synthetic sizes")
    ap.add_argument("--seed", type=int, default=7, help="the demo's seed")
    args = ap.parse_args(argv)

    s = get_settings()
    policy, taxonomy = policy_and_taxonomy(s)
    cfg = train_config(s)
    onnx, tok = encoder_files(s.filter_encoder, s.models_dir)
    embedder = CachedEmbedder(
        load_encoder(s.filter_encoder, onnx, tok, max_length=cfg.embed_max_length)
    )
    print("| synthetic | gold (eligible) | train | eval (clean) | gate | failed checks | s |")
    print("|---|---|---|---|---|---|---|")
    for n in args.n:
        t0 = time.perf_counter()
        eligible = [r for r in generate(n, args.seed) if policy.check(r).eligible]
        convs = [Conversation.model_validate(r) for r in eligible]
        snap = snapshot_from_records(
            convs, taxonomy, policy.categories, eval_fraction=s.eval_fraction
        )
        res = train_filter(snap, taxonomy, embedder, config=cfg,
                           prototype_texts=default_prototypes(policy),
                           embedding_model_id=str(getattr(embedder.inner, "model_id", "none")))  # fmt: skip
        ev = list(snap.eval)
        report, _, _ = evaluate_bundle(res.bundle, ev, embedder)
        long_dialogues = evaluate_long_dialogues(res.bundle, ev, embedder)
        passed, checks = apply_rules(report, None, gate_rules(s), long_dialogues)
        failed = "; ".join(
            f"{c.name}: {c.challenger if c.challenger is None else round(c.challenger, 3)} "
            f"({c.detail})"
            for c in checks
            if not c.passed
        )
        print(f"| {n} | {len(eligible)} | {len(snap.train)} | {len(ev)} "
              f"({report.n_non_sensitive}) | {'passed' if passed else 'failed'} | {failed or '-'} "
              f"| {time.perf_counter() - t0:.0f} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
