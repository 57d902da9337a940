"""Does a trained filter decide the same on another kind of CPU?

The int8 encoders (``minilm-q8``, ``minilm-pairs``) give other vectors on a CPU whose int8
products saturate (AVX2 without VNNI) than on one where they are exact (VNNI, AMX):
``labeling.int8``. This measures what that does to a registered model's decisions: the segment
texts its evaluation embeds are written once, each machine embeds them with the model's own
encoder file (the product's ``MiniLMEmbedder``, one text per call), and the model is scored here
with each set of vectors: the gate's figures (leak, false-block, recall per category, composed
long dialogues) and the decisions that change.

    # here: the texts the model's eval set and its composed long dialogues embed
    uv run --no-sync python benchmarks/cpu_numerics.py texts --model <model artifacts dir> \\
        --eval-set <run artifacts>/eval/eval_set.jsonl --out .labelloop/bench/numerics/texts.json.gz
    # on each machine (the model's bundled model.onnx and tokenizer.json)
    uv run --no-sync python benchmarks/cpu_numerics.py embed --model <model artifacts dir> \\
        --texts .labelloop/bench/numerics/texts.json.gz --out .labelloop/bench/numerics/<machine>
    # here: the model scored with each machine's vectors (the first is the baseline)
    uv run --no-sync python benchmarks/cpu_numerics.py compare --model <model artifacts dir> \\
        --eval-set <...>/eval_set.jsonl --texts .labelloop/bench/numerics/texts.json.gz \\
        .labelloop/bench/numerics/<machine a> .labelloop/bench/numerics/<machine b>

``<model artifacts dir>`` holds ``filter_bundle.pkl``, ``model.onnx`` and ``tokenizer.json`` (a
registered version's ``artifacts/artifacts`` folder). Vectors are stored as float16 in parts of
at most 20,000 texts (small enough to copy back from another machine). ``texts --cache`` reads
vectors this machine already embedded with the same file (the training's embedding cache).
"""

from __future__ import annotations

import argparse
import gzip
import json
import pickle
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PART = 20_000
DIM = 384


def _bundle(model: Path) -> Any:
    with (model / "filter_bundle.pkl").open("rb") as fh:
        return pickle.load(fh)  # a model this project trained


def _examples(eval_set: Path) -> list[Any]:
    from experiments.dataset import examples_from_jsonl

    return examples_from_jsonl(eval_set.read_text(encoding="utf-8"))


def _score(bundle: Any, examples: Sequence[Any], embedder: Any) -> tuple[Any, list[bool], Any]:
    from experiments.evaluation import evaluate_bundle, evaluate_long_dialogues

    report, _, verdicts = evaluate_bundle(bundle, examples, embedder)
    return (
        report,
        [v.blocked for v in verdicts],
        evaluate_long_dialogues(bundle, examples, embedder),
    )


class _Recorder:
    """Embeds like the model's encoder and remembers every text it was given."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.texts = inner, dict[str, None]()

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.texts.update(dict.fromkeys(texts))
        return np.asarray(self.inner.embed(texts), dtype=np.float32)


class _Table:
    """Vectors looked up by text (every text must be there)."""

    def __init__(self, texts: Sequence[str], vectors: npt.NDArray[np.float32]) -> None:
        self.index = {t: i for i, t in enumerate(texts)}
        self.vectors = vectors

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.vectors.shape[1]), dtype=np.float32)
        missing = [t for t in texts if t not in self.index]
        if missing:
            raise KeyError(f"{len(missing)} texts were not embedded, e.g. {missing[0][:60]!r}")
        return self.vectors[[self.index[t] for t in texts]]


def _encoder(model: Path, bundle: Any) -> Any:
    from labeling.encoders import load_encoder

    return load_encoder(bundle.encoder, model / "model.onnx", model / "tokenizer.json",
                        max_length=bundle.embed_max_length)  # fmt: skip


def cmd_texts(args: argparse.Namespace) -> None:
    bundle = _bundle(args.model)
    enc = _encoder(args.model, bundle)
    if args.cache is not None:
        from labeling.embedding_cache import CachedTextEmbedder

        enc = CachedTextEmbedder(enc, args.cache)
    rec = _Recorder(enc)
    _score(bundle, _examples(args.eval_set), rec)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    spec = {
        "encoder": bundle.encoder,
        "max_length": bundle.embed_max_length,
        "texts": list(rec.texts),
    }
    args.out.write_bytes(gzip.compress(json.dumps(spec).encode("utf-8")))
    print(f"{len(rec.texts)} distinct segment texts -> {args.out}")


def _spec(path: Path) -> dict[str, Any]:
    """What ``texts`` wrote: the encoder's name, its max_length and the texts."""
    return dict(json.loads(gzip.decompress(path.read_bytes())))


def _texts(path: Path) -> list[str]:
    return list(_spec(path)["texts"])


def cmd_embed(args: argparse.Namespace) -> None:
    """Needs the encoder file alone, not the model: another machine needs no scikit-learn."""
    from labeling.encoders import load_encoder
    from labeling.int8 import encoder_numerics, machine_facts

    spec = _spec(args.texts)
    texts = list(spec["texts"])
    enc = load_encoder(spec["encoder"], args.model / "model.onnx", args.model / "tokenizer.json",
                       max_length=int(spec["max_length"]))  # fmt: skip
    if args.workers and hasattr(enc, "use_threads"):
        enc.use_threads(args.workers)  # one text per call: more calls at once, the same vectors
    enc.embed(texts[:32])  # session and tokenizer loaded before the clock starts
    t0 = time.perf_counter()
    vecs = np.asarray(enc.embed(texts), dtype=np.float32)
    seconds = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    for n, start in enumerate(range(0, len(texts), PART)):
        np.save(args.out / f"vectors{n}.npy", vecs[start : start + PART].astype(np.float16))
    facts = {"machine": machine_facts(), "numerics": encoder_numerics(args.model / "model.onnx"),
             "encoder": spec["encoder"], "texts": len(texts), "seconds": seconds}  # fmt: skip
    (args.out / "facts.json").write_text(json.dumps(facts, indent=2), encoding="utf-8")
    print(json.dumps(facts))
    print(
        f"{len(texts)} texts in {seconds:.1f} s ({len(texts) / seconds:.0f} texts/s) -> {args.out}"
    )


def _vectors(folder: Path) -> npt.NDArray[np.float32]:
    parts = sorted(folder.glob("vectors*.npy"), key=lambda p: int(p.stem.removeprefix("vectors")))
    return np.concatenate([np.load(p) for p in parts]).astype(np.float32)


def _summary(report: Any, long: Any) -> dict[str, float]:
    m = report.metrics()
    keys = ["leak_rate", "false_block_rate", "interest_micro_f1"]
    keys += sorted(k for k in m if k.startswith("recall_") and m[k] == m[k])  # no NaN
    out = {k: round(float(m[k]), 4) for k in keys}
    out["long_leak_rate"] = round(long.leak_rate, 4)
    out["long_control_false_block_rate"] = round(long.control_false_block_rate, 4)
    return out


def cmd_compare(args: argparse.Namespace) -> None:
    bundle = _bundle(args.model)
    examples = _examples(args.eval_set)
    texts = _texts(args.texts)
    sensitive = np.array([bool(e.sensitive) for e in examples])
    base_vecs = _vectors(args.vectors[0])
    runs: list[tuple[str, npt.NDArray[np.float32]]] = [(str(args.vectors[0]), base_vecs)]
    runs += [(str(v), _vectors(v)) for v in args.vectors[1:]]
    base_blocked: npt.NDArray[np.bool_] | None = None
    for name, vecs in runs:
        facts = json.loads((Path(name) / "facts.json").read_text(encoding="utf-8"))
        report, blocked_list, long = _score(bundle, examples, _Table(texts, vecs))
        blocked = np.array(blocked_list)
        row: dict[str, Any] = {"vectors": name, "cpu": facts["machine"]["cpu"],
                               "int8_products_exact": facts["numerics"]["int8_products_exact"],
                               **_summary(report, long)}  # fmt: skip
        if base_blocked is None:
            base_blocked = blocked
        else:
            cos = (vecs * base_vecs).sum(1) / np.clip(
                np.linalg.norm(vecs, axis=1) * np.linalg.norm(base_vecs, axis=1), 1e-12, None
            )
            changed = blocked != base_blocked
            row.update({
                "cosine_to_baseline_mean": round(float(cos.mean()), 5),
                "cosine_to_baseline_p01": round(float(np.quantile(cos, 0.01)), 5),
                "cosine_to_baseline_min": round(float(cos.min()), 5),
                "decisions_changed": int(changed.sum()),
                "sensitive_newly_passed": int((changed & ~blocked & sensitive).sum()),
                "sensitive_newly_blocked": int((changed & blocked & sensitive).sum()),
                "clean_newly_blocked": int((changed & blocked & ~sensitive).sum()),
                "clean_newly_passed": int((changed & ~blocked & ~sensitive).sum()),
            })  # fmt: skip
        print(json.dumps(row))
    print(f"{len(examples)} eval conversations, {len(texts)} distinct segment texts")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("texts", help="the segment texts a model's evaluation embeds")
    t.add_argument("--model", type=Path, required=True)
    t.add_argument("--eval-set", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--cache", type=Path, default=None, help="an embedding cache of the same file")
    e = sub.add_parser("embed", help="this machine's vectors of those texts, and its facts")
    e.add_argument(
        "--model", type=Path, required=True, help="a folder with model.onnx and tokenizer.json"
    )
    e.add_argument("--texts", type=Path, required=True)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--workers", type=int, default=None, help="concurrent one-text calls")
    c = sub.add_parser("compare", help="the model scored with each machine's vectors")
    c.add_argument("--model", type=Path, required=True)
    c.add_argument("--eval-set", type=Path, required=True)
    c.add_argument("--texts", type=Path, required=True)
    c.add_argument("vectors", type=Path, nargs="+", help="embed outputs; the first is the baseline")
    args = ap.parse_args(argv)
    {"texts": cmd_texts, "embed": cmd_embed, "compare": cmd_compare}[args.cmd](args)


if __name__ == "__main__":
    main()
