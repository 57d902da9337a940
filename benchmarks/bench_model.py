"""A real trained targeting filter for the speed benchmarks, saved as a local MLflow model.

    uv run --no-sync python benchmarks/bench_model.py --data ../shared/data/dev --out DIR [--n 3000] \\
        [--encoder NAME]

Trains ``experiments.training.train_filter`` (the default encoder unless ``--encoder`` names another
of ``labeling.encoders``, ``TrainConfig(c_segment=8.0)``) on up to
``--n`` records with gold, round-robin over the dev files (the same sample helper as
``filter_speed.py``), and saves the pyfunc with ``mlflow.pyfunc.save_model`` into ``DIR`` (no
MLflow server needed: ``LABELLOOP_FILTER_MODEL_URI=DIR`` serves it). Embeddings are cached on
disk by text hash (``--cache``), so a second training on the same data embeds nothing.
Benchmarks may read ../shared; tests never do.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def train_model(
    data: Path,
    out: Path,
    *,
    n: int = 3000,
    models_dir: Path,
    cache: Path | None = None,
    encoder: str | None = None,
) -> dict[str, Any]:
    """Train on ``data`` and save the pyfunc to ``out`` (replaced); returns a summary."""
    import shutil

    import mlflow.pyfunc

    from experiments.dataset import snapshot_from_records
    from experiments.registry import default_prototypes
    from experiments.training import TrainConfig, train_filter
    from labeling.embedding_cache import CachedTextEmbedder
    from labeling.encoders import DEFAULT_ENCODER, encoder_from_models_dir
    from labeling.policy import load_policy
    from labeling.records import Conversation, parse_record
    from labeling.taxonomy import load_taxonomy
    from targeting.model import TargetingFilterModel, model_artifacts, save_bundle

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from filter_speed import load_sample

    policy = load_policy()
    taxonomy = load_taxonomy(categories=policy.categories)
    cfg = TrainConfig(c_segment=8.0)
    recs = [
        c
        for i, r in enumerate(load_sample(data, n))
        if isinstance(c := parse_record(r, source="bench", line=i + 1, raw=""), Conversation)
        and c.gold is not None
    ]
    snap = snapshot_from_records(recs, taxonomy, policy.categories, errors=[])
    encoder = encoder or DEFAULT_ENCODER
    inner = encoder_from_models_dir(encoder, models_dir, max_length=cfg.embed_max_length)
    embedder: Any = inner
    if cache is not None:
        embedder = CachedTextEmbedder(inner, cache)
    t0 = time.perf_counter()
    res = train_filter(snap, taxonomy, embedder, config=cfg,
                       prototype_texts=default_prototypes(policy),
                       embedding_model_id=f"{inner.model_id}-L{cfg.embed_max_length}",
                       encoder=encoder)  # fmt: skip
    train_s = time.perf_counter() - t0
    if out.exists():
        shutil.rmtree(out)
    work = out.with_name(out.name + ".parts")
    bpath = save_bundle(res.bundle, work / "filter_bundle.pkl")
    arts = model_artifacts(
        bpath, policy, onnx_path=inner.onnx_path, tokenizer_path=inner.tokenizer_path
    )
    mlflow.pyfunc.save_model(str(out), python_model=TargetingFilterModel(), artifacts=arts)
    shutil.rmtree(work, ignore_errors=True)
    return {
        "model_dir": str(out),
        "encoder": encoder,
        "train_records": len(snap.train),
        "eval_records": len(snap.eval),
        "train_s": round(train_s, 1),
        "any_threshold": round(res.bundle.any_threshold, 4),
        "val_false_block_rate": res.val_false_block_rate,
        "val_leak_rate": res.val_leak_rate,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "dev")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--models-dir", type=Path, default=ROOT / ".labelloop" / "models")
    ap.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="embedding cache (SQLite) file; one per encoder (it stores vectors by text hash only)",
    )
    ap.add_argument(
        "--encoder", default=None, help="an encoder of labeling.encoders (default: the product's)"
    )
    args = ap.parse_args(argv)
    print(json.dumps(train_model(args.data, args.out, n=args.n, models_dir=args.models_dir,
                                 cache=args.cache, encoder=args.encoder), indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
