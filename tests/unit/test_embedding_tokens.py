"""The embedder's special-token lookup: BERT WordPiece or RoBERTa/MPNet names, else a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

from labeling.embeddings import _special_ids


def _tok(vocab: list[str]) -> Tokenizer:
    return Tokenizer(WordLevel({t: i for i, t in enumerate(vocab)}, unk_token=vocab[0]))


def test_bert_tokens() -> None:
    tok = _tok(["[UNK]", "[PAD]", "hello", "[CLS]", "[SEP]"])
    assert _special_ids(tok, Path("t.json")) == (3, 4, 1)


def test_roberta_style_tokens() -> None:
    tok = _tok(["<unk>", "<s>", "<pad>", "</s>", "hello"])
    assert _special_ids(tok, Path("t.json")) == (1, 3, 2)


def test_missing_tokens_name_the_file_and_both_sets() -> None:
    tok = _tok(["<unk>", "[CLS]", "[SEP]", "<s>", "</s>"])  # neither set complete
    with pytest.raises(ValueError, match=r"odd\.json.*\[CLS\]/\[SEP\]/\[PAD\].*<s>/</s>/<pad>"):
        _special_ids(tok, Path("odd.json"))
