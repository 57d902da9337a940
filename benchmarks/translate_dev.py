"""A multilingual evaluation sample: dev conversations machine-translated with the local LLM.

    uv run --no-sync python benchmarks/translate_dev.py ../shared/data/dev \\
        --languages es,pt,fr,hi,id --per-language 120 --out .labelloop/bench/mt_dev.jsonl

* A stratified sample of one-turn dev conversations of at most ``--max-chars`` characters, all
  from what ``filter_quality.py`` holds out for evaluation (same salt and fraction): half
  sensitive (round-robin over the categories present: identity statements, counselling questions,
  forum posts), half clean (assistant requests with interest labels).
* Each text is translated by the bundled Qwen2.5-Coder-1.5B-Instruct (the product's llama.cpp
  server, ``labeling.llm_server``, greedy). The output records keep the gold labels; their
  ``conversation_id`` is ``mt-<lang>:<original id>``, which marks them as machine-translated (the
  record contract has no free-form source field); ``<out>.manifest.json`` records the model, the
  prompt, timings and the ids. A translation that comes back empty, unchanged or in the wrong
  script is dropped (counted).
* Machine translation by a 1.5B model is noisy: read a sample before trusting a number
  (``--show N`` prints pairs). Benchmarks may read ../shared; tests never do.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from labeling.records import Conversation, read_records  # noqa: E402

LANGUAGE_NAMES = {
    "es": "Spanish (Latin American)",
    "pt": "Portuguese (Brazilian)",
    "fr": "French (Canadian)",
    "hi": "Hindi (in Devanagari script)",
    "id": "Indonesian",
}
PROMPT = (
    "Translate the user's message into {language}. Keep its meaning, tone and any names. "
    "Answer with the translation only, no quotes, no explanations."
)


def _h(s: str) -> float:
    return int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "big") / 2.0**64


def sample(
    data_dir: Path,
    per_language: int,
    max_chars: int,
    seed: str,
    eval_salt: str,
    eval_fraction: float,
) -> list[Conversation]:
    """``per_language`` one-turn conversations: half sensitive (round-robin by category), half
    clean with known interests; the same sample for every language. Only conversations the
    filter-quality benchmark holds out (its eval rule: hash of the id under ``eval_salt`` below
    ``eval_fraction``), so the benchmark never trained on their English originals."""
    from experiments.dataset import unit_hash

    by_cat: dict[str, list[Conversation]] = defaultdict(list)
    clean: list[Conversation] = []
    for f in sorted(data_dir.glob("*.jsonl")):
        for c in read_records([f]):
            if not isinstance(c, Conversation) or c.gold is None or len(c.turns) != 1:
                continue
            if len(c.turns[0].text) > max_chars or c.turns[0].role != "user":
                continue
            if unit_hash(c.conversation_id, eval_salt) >= eval_fraction:
                continue
            if c.gold.sensitive:
                by_cat[sorted(c.gold.sensitive)[0]].append(c)
            elif c.gold.interests:
                clean.append(c)
    for v in by_cat.values():
        v.sort(key=lambda c: _h(seed + c.conversation_id))
    clean.sort(key=lambda c: _h(seed + c.conversation_id))
    n_sens = per_language // 2
    picked: list[Conversation] = []
    cats = sorted(by_cat)
    k = 0
    while len(picked) < n_sens and any(by_cat.values()):
        pool = by_cat[cats[k % len(cats)]]
        if pool:
            picked.append(pool.pop(0))
        k += 1
    picked += clean[: per_language - len(picked)]
    return picked


def script_ok(lang: str, text: str) -> bool:
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return False
    deva = sum(1 for ch in letters if "\u0900" <= ch <= "\u097f")
    return deva / len(letters) > 0.5 if lang == "hi" else deva == 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--languages", default="es,pt,fr,hi,id")
    ap.add_argument("--per-language", type=int, default=120)
    ap.add_argument("--max-chars", type=int, default=280)
    ap.add_argument("--seed", default="mt-v1")
    ap.add_argument("--eval-salt", default="bench-v1", help="filter_quality.py --seed")
    ap.add_argument(
        "--eval-fraction", type=float, default=0.3, help="filter_quality.py --eval-fraction"
    )
    ap.add_argument("--models-dir", type=Path, default=ROOT / ".labelloop" / "models")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / ".labelloop" / "bench" / "mt_dev.jsonl")
    ap.add_argument("--show", type=int, default=3, help="print this many pairs per language")
    args = ap.parse_args(argv)

    import httpx

    from labeling.assets import LLM_MODELS, ensure_llm_model
    from labeling.llm_server import chat_text, embedded_server

    gguf = ensure_llm_model(args.models_dir)
    base_url = embedded_server(gguf, n_ctx=1024, threads=args.threads).base_url
    client = httpx.Client(timeout=300.0, trust_env=False)
    convs = sample(args.data_dir, args.per_language, args.max_chars, args.seed, args.eval_salt,
                   args.eval_fraction)  # fmt: skip
    langs = [x.strip() for x in args.languages.split(",") if x.strip()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done: set[str] = set()
    if args.out.exists():  # resume: keep what is there
        for line in args.out.read_text(encoding="utf-8").splitlines():
            if line.strip():
                done.add(json.loads(line)["conversation_id"])
    stats: dict[str, dict[str, Any]] = {}
    t_all = time.perf_counter()
    with args.out.open("a", encoding="utf-8") as fh:
        for lang in langs:
            st = stats.setdefault(lang, {"translated": 0, "dropped": 0, "seconds": 0.0})
            shown = 0
            for c in convs:
                cid = f"mt-{lang}:{c.conversation_id}"
                if cid in done:
                    continue
                src = c.turns[0].text
                t0 = time.perf_counter()
                messages = [
                    {"role": "system", "content": PROMPT.format(language=LANGUAGE_NAMES[lang])},
                    {"role": "user", "content": src},
                ]
                answer = chat_text(client, base_url, messages, temperature=0.0, seed=0,
                                   max_tokens=min(400, 2 * len(src) // 3 + 60))  # fmt: skip
                text = answer.strip().strip('"').strip()
                st["seconds"] += time.perf_counter() - t0
                if not text or text.lower() == src.lower() or not script_ok(lang, text):
                    st["dropped"] += 1
                    continue
                rec = c.model_dump(mode="json")
                rec["conversation_id"] = cid
                rec["turns"] = [{**rec["turns"][0], "text": text}]
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                fh.flush()
                st["translated"] += 1
                if shown < args.show:
                    print(f"[{lang}] {src!r}\n     -> {text!r}", flush=True)
                    shown += 1
            print(f"{lang}: {st}", file=sys.stderr, flush=True)
    manifest = {
        "model": LLM_MODELS["default"].filename, "runtime": "xllamacpp (labeling.llm_server)",
        "prompt": PROMPT, "languages": langs,
        "per_language": args.per_language, "max_chars": args.max_chars, "seed": args.seed,
        "sampled_ids": [c.conversation_id for c in convs], "stats": stats,
        "seconds": round(time.perf_counter() - t_all, 1),
        "note": "machine-translated by a 1.5B local model: noisy; ids are mt-<lang>:<dev id>",
    }  # fmt: skip
    args.out.with_suffix(".manifest.json").write_text(
        json.dumps(manifest, indent=1), encoding="utf-8"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
