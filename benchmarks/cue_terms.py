"""Which cue terms of the sensitive vocabulary fire on clean conversations?

A cue term is a feature of the targeting filter (``labeling/data/sensitive_lexicon.yaml``,
``cues``): the classifier learns one weight per category from how often that category's terms
occur in sensitive and in clean training segments. A term that mostly means something else
("party" in "birthday party", "union" in "Union Station", "chinese" in "chinese food") teaches the
classifier that the category's terms say little, which costs most where they matter: a source the
model has never seen. This lists, per cue term (``cue_not_before`` applied), in how many record
files' conversations it occurs, by gold: clean, sensitive in the term's own category, sensitive in
another; and the clean ones per file.

    uv run --no-sync python benchmarks/cue_terms.py ../shared/data/dev/*.jsonl --top 40
    uv run --no-sync python benchmarks/cue_terms.py FILES --lexicon OTHER.yaml   # compare
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from targeting.scorer import TermMatcher, load_lexicon_file  # noqa: E402


def term_counts(files: list[Path], lexicon: Path | None) -> dict[tuple[str, str], Counter[str]]:
    """``{(category, term): Counter(clean=, own=, other=, "clean:<file stem>"=)}``, counted
    once per conversation. Records without ``gold.sensitive`` (or unreadable lines) are skipped
    and counted under ``("", "")``."""
    lex = load_lexicon_file(lexicon)
    keys = [(c, t) for c, terms in lex.cues.items() for t in terms]
    m = TermMatcher(
        {f"{c}\t{t}": (t,) for c, t in keys},
        {f"{c}\t{t}": lex.cue_not_before.get(c, ()) for c, t in keys},
    )
    out: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for path in files:
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                    gold = set(rec["gold"]["sensitive"] or [])
                    text = "\n".join(str(t.get("text", "")) for t in rec["turns"])
                except (ValueError, KeyError, TypeError, AttributeError):
                    out[("", "")]["skipped"] += 1
                    continue
                for key in m.hits(text):
                    cat, term = key.split("\t")
                    side = "own" if cat in gold else ("clean" if not gold else "other")
                    out[(cat, term)][side] += 1
                    if side == "clean":
                        out[(cat, term)][f"clean:{path.stem}"] += 1
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path, help="record files (JSONL with gold)")
    ap.add_argument("--lexicon", type=Path, default=None, help="default: the shipped vocabulary")
    ap.add_argument("--top", type=int, default=40, help="terms with the most clean hits")
    args = ap.parse_args(argv)
    counts = term_counts(args.files, args.lexicon)
    skipped = counts.pop(("", ""), Counter())["skipped"]
    rows = sorted(counts.items(), key=lambda kv: (-kv[1]["clean"], kv[0]))
    print("| category | term | clean | own category | other category | clean by file |")
    print("|---|---|---:|---:|---:|---|")
    for (cat, term), n in rows[: args.top]:
        by_file = ", ".join(f"{k[6:]} {v}" for k, v in sorted(n.items()) if k.startswith("clean:"))
        print(f"| {cat} | {term} | {n['clean']} | {n['own']} | {n['other']} | {by_file} |")
    clean, own = (sum(n[k] for n in counts.values()) for k in ("clean", "own"))
    print(
        f"\nconversation-term hits, all terms: clean {clean}, own category {own}; "
        f"records skipped: {skipped}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
