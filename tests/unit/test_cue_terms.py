"""benchmarks/cue_terms.py: cue-term hits per gold side, on small record files."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.cue_terms import term_counts


def _record(text: str, sensitive: list[str]) -> str:
    return json.dumps({"turns": [{"role": "user", "text": text}], "gold": {"sensitive": sensitive}})


def test_hits_are_counted_by_gold_side_once_per_conversation(tmp_path: Path) -> None:
    lex = tmp_path / "lex.yaml"
    lex.write_text(
        "categories:\n  ethnicity:\n    cues: [chinese]\n    cue_not_before: [food]\n"
        "  religion:\n    cues: [church*]\n"
    )
    data = tmp_path / "a.jsonl"
    data.write_text(
        "\n".join(
            [
                _record("chinese food, then chinese lessons, then the chinese one", []),
                _record("chinese food only", []),
                _record("as a chinese woman at church", ["ethnicity"]),
                _record("churches everywhere", ["health"]),
                "not json",
                json.dumps({"turns": []}),
            ]
        )
    )
    counts = term_counts([data], lex)
    assert counts[("ethnicity", "chinese")] == {"clean": 1, "clean:a": 1, "own": 1}
    assert counts[("religion", "church*")] == {"other": 2}
    assert counts[("", "")]["skipped"] == 2
