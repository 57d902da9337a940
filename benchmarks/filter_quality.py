"""Filter quality on the development data: train on part of ``dev/*.jsonl``, evaluate on the rest.

    uv run --no-sync python benchmarks/filter_quality.py [DATA_DIR] [--per-file N] [--variants ...]

* Each file is subsampled deterministically (the ``--per-file`` cap, by a hash of the id) and
  split by the frozen-eval rule (``--eval-fraction`` of each file's items, hash of the id, plus one
  item per otherwise-unrepresented stratum) into train and held-out eval.
* Texts are redacted exactly as in serving. MiniLM embeddings are cached on disk (``--cache``) by
  text hash, so reruns and variants do not re-embed.
* Variants: ``emb`` (MiniLM only), ``tfidf`` (lexical only), ``emb+tfidf`` (both); all with the
  keyword lexicon safety net and prototype fallback. Reports leak rate, false-block rate,
  per-category recall and interest micro-F1 against the targets (leak <= 2 %, false-block <= 10 %,
  interest micro-F1 >= 0.80).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments.dataset import Snapshot, snapshot_from_records, unit_hash  # noqa: E402
from experiments.evaluation import evaluate_bundle  # noqa: E402
from experiments.registry import default_prototypes  # noqa: E402
from experiments.training import TrainConfig, recalibrate, train_filter  # noqa: E402
from labeling.policy import load_policy  # noqa: E402
from labeling.records import Conversation, read_records  # noqa: E402
from labeling.taxonomy import load_taxonomy  # noqa: E402

TARGETS = {"leak_rate": 0.02, "false_block_rate": 0.10, "interest_micro_f1": 0.80}


class DiskCachedEmbedder:
    """Embeds each distinct text once; vectors persist in an .npz keyed by sha256(text)."""

    def __init__(self, inner: Any, path: Path) -> None:
        self.inner = inner
        self.path = path
        self.cache: dict[str, npt.NDArray[np.float32]] = {}
        if path.exists():
            with np.load(path) as z:
                self.cache = {k: z[k] for k in z.files}
        self.embedded = 0

    @staticmethod
    def key(t: str) -> str:
        return hashlib.sha256(t.encode("utf-8")).hexdigest()

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        keys = [self.key(t) for t in texts]
        todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in self.cache}
        if todo:
            items = list(todo.items())
            for start in range(0, len(items), 512):
                chunk = items[start : start + 512]
                vecs = self.inner.embed([t for _, t in chunk])
                for (k, _), v in zip(chunk, vecs, strict=True):
                    self.cache[k] = np.asarray(v, dtype=np.float32)
                self.embedded += len(chunk)
                self.save()
                print(f"  embedded {self.embedded}/{len(items)}", file=sys.stderr, flush=True)
        return np.stack([self.cache[k] for k in keys]) if keys else np.zeros((0, 384), np.float32)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, **self.cache)  # type: ignore[arg-type]
        tmp.replace(self.path)


def load_dev(data_dir: Path, per_file: int, seed: str) -> dict[str, list[Conversation]]:
    out: dict[str, list[Conversation]] = {}
    for f in sorted(data_dir.glob("*.jsonl")):
        convs = [c for c in read_records([f]) if isinstance(c, Conversation) and c.gold is not None]
        convs.sort(key=lambda c: unit_hash(c.conversation_id, seed + "-subsample"))
        out[f.stem] = convs[:per_file]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("data_dir", nargs="?", default=str(ROOT.parent / "shared" / "data" / "dev"))
    ap.add_argument(
        "--per-file", type=int, default=1500, help="max records per dev file (subsample)"
    )
    ap.add_argument("--eval-fraction", type=float, default=0.3)
    ap.add_argument("--variants", default="emb+tfidf,tfidf,emb")
    ap.add_argument("--recall-target", type=float, default=0.99)
    ap.add_argument(
        "--sweep",
        default="0.99,0.98,0.97,0.95,0.9",
        help="also report these recall targets (re-calibrated from out-of-fold scores)",
    )
    ap.add_argument("--max-length", type=int, default=128, help="MiniLM tokens per text")
    ap.add_argument("--cache", default=str(ROOT / ".labelloop" / "cache" / "bench-embeddings.npz"))
    ap.add_argument("--models-dir", default=str(ROOT / ".labelloop" / "models"))
    ap.add_argument("--seed", default="bench-v1")
    ap.add_argument("--json", dest="json_out", default=None, help="write the results here")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    policy = load_policy()
    taxonomy = load_taxonomy(categories=policy.categories)
    files = load_dev(Path(args.data_dir), args.per_file, args.seed)
    train: list[Any] = []
    eval_: list[Any] = []
    per_source_eval: dict[str, set[str]] = defaultdict(set)
    for name, convs in files.items():
        snap = snapshot_from_records(
            convs, taxonomy, policy.categories, eval_fraction=args.eval_fraction, salt=args.seed
        )
        train += snap.train
        eval_ += snap.eval
        per_source_eval[name] = {e.conversation_id for e in snap.eval}
        print(f"{name}: {len(snap.train)} train / {len(snap.eval)} eval", file=sys.stderr)
    snapshot = Snapshot(tuple(train), tuple(eval_), policy.categories, {"source": "dev-benchmark"})
    print(json.dumps(snapshot.summary()), file=sys.stderr)
    t_load = time.perf_counter() - t_start

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    embedder: DiskCachedEmbedder | None = None
    t_embed = 0.0
    if any("emb" in v.split("+") for v in variants):
        from labeling.assets import ensure_embedding_model
        from labeling.embeddings import MiniLMEmbedder

        onnx, tok = ensure_embedding_model(Path(args.models_dir))
        cache = Path(args.cache).with_name(Path(args.cache).stem + f"-L{args.max_length}.npz")
        embedder = DiskCachedEmbedder(MiniLMEmbedder(onnx, tok, max_length=args.max_length), cache)
        t0 = time.perf_counter()
        embedder.embed([e.text for e in snapshot.train] + [e.text for e in snapshot.eval])
        t_embed = time.perf_counter() - t0

    results: dict[str, Any] = {
        "n_train": len(snapshot.train),
        "n_eval": len(snapshot.eval),
        "variants": {},
    }
    for v in variants:
        parts = set(v.split("+"))
        cfg = TrainConfig(recall_target=args.recall_target, use_embeddings="emb" in parts, use_tfidf="tfidf" in parts,
                          embed_max_length=args.max_length)  # fmt: skip
        t0 = time.perf_counter()
        res = train_filter(snapshot, taxonomy, embedder if "emb" in parts else None, config=cfg,
                           prototype_texts=default_prototypes(policy))  # fmt: skip
        t_train = time.perf_counter() - t0
        report, _, verdicts = evaluate_bundle(
            res.bundle, list(snapshot.eval), embedder if "emb" in parts else None
        )
        by_source = {}
        for name, ids in per_source_eval.items():
            idx = [i for i, e in enumerate(snapshot.eval) if e.conversation_id in ids]
            sens = [i for i in idx if snapshot.eval[i].sensitive]
            non = [i for i in idx if not snapshot.eval[i].sensitive]
            by_source[name] = {
                "leak_rate": (sum(1 for i in sens if not verdicts[i].blocked) / len(sens))
                if sens
                else None,
                "false_block_rate": (sum(1 for i in non if verdicts[i].blocked) / len(non))
                if non
                else None,
                "n": len(idx),
            }
        m = report.metrics()
        results["variants"][v] = {
            "leak_rate": report.leak_rate,
            "false_block_rate": report.false_block_rate,
            "interest_micro_f1": report.interest_micro_f1,
            "interest_macro_f1": report.interest_macro_f1,
            "interest_micro_f1_e2e": report.interest_micro_f1_e2e,
            "per_category_recall": {c: m[f"recall_{c}"] for c in policy.categories},
            "per_category_support": {c: m[f"support_{c}"] for c in policy.categories},
            "thresholds": {
                c: (round(res.bundle.sensitive_thresholds[c], 4), res.bundle.sensitive_rules[c])
                for c in policy.categories
            },
            "val_false_block_rate": res.val_false_block_rate,
            "val_per_category": {
                c: {
                    k: res.calibration[c].get(k) for k in ("n_pos", "val_recall", "val_false_block")
                }
                for c in policy.categories
            },
            "val_leak_rate": res.val_leak_rate,
            "by_source": by_source,
            "train_s": round(t_train, 1),
        }
        print(f"\n=== {v} (train {t_train:.0f}s) ===")
        print(report.table_markdown())
        print("by source:", json.dumps(by_source))
        ok = {
            k: (report.metrics()[k] <= t if k != "interest_micro_f1" else report.metrics()[k] >= t)
            for k, t in TARGETS.items()
        }
        print("targets:", json.dumps(ok))
        sweep = {}
        for tgt in [float(x) for x in args.sweep.split(",") if x.strip()]:
            rr = recalibrate(res, tgt)
            rep2, _, _ = evaluate_bundle(
                rr.bundle, list(snapshot.eval), embedder if "emb" in parts else None
            )
            sweep[str(tgt)] = {"leak_rate": round(rep2.leak_rate, 4), "false_block_rate": round(rep2.false_block_rate, 4),
                               "min_category_recall": round(min(m2["recall"] for m2 in rep2.per_category.values()
                                                                if m2["support"] > 0), 4)}  # fmt: skip
        results["variants"][v]["recall_target_sweep"] = sweep
        print("recall-target sweep:", json.dumps(sweep))
    results["seconds"] = {"load_redact": round(t_load, 1), "embed": round(t_embed, 1),
                          "total": round(time.perf_counter() - t_start, 1)}  # fmt: skip
    print("\n" + json.dumps(results["seconds"]))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
