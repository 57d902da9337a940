"""all-MiniLM-L6-v2 with int8 matrix products, derived from the bundled int8-weight file.

The bundled ONNX file (``labeling.assets.ensure_embedding_model``) stores int8 weights but
multiplies in float. This derivation folds those weights to float (onnxruntime's basic graph
optimisation) and quantises every matrix product with ``quantize_dynamic``: int8 weights per
output channel, activations quantised per call with one scale for the call's tensor. To keep a
text's vector independent of the texts embedded with it, the encoder that uses this file
(``labeling.encoders``, name ``minilm-q8``) embeds **one text per call** and runs calls on
several threads instead of batching. Measured: ``docs/serving.md``.

The derivation is deterministic for a given source file and onnxruntime version; both are
recorded in the build's manifest (``labeling.assets.ensure_minilm_q8_model``).
"""

from __future__ import annotations

import logging
from pathlib import Path

#: bump when the derivation below changes (the manifest then no longer matches: rebuilt)
Q8_DERIVATION_VERSION = "1"
Q8_ONNX_FILENAME = "model.onnx"
Q8_TOKENIZER_FILENAME = "tokenizer.json"


def build_minilm_q8(source_onnx: Path, tokenizer: Path, out_dir: Path) -> None:
    """Write ``model.onnx`` (int8 matrix products) and a copy of ``tokenizer.json`` into
    ``out_dir``."""
    import shutil

    import onnxruntime as ort
    from onnxruntime import quantization as q

    out_dir.mkdir(parents=True, exist_ok=True)
    folded = out_dir / "folded.onnx"
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(folded)
    opts.log_severity_level = 3
    ort.InferenceSession(str(source_onnx), opts, providers=["CPUExecutionProvider"])
    # quantize_dynamic logs, on the root logger, advice to pre-process that is for calibrated
    # quantisation; drop that one record only, not the process's other logging
    root = logging.getLogger()
    advice = _DropMessage("Please consider to run pre-processing")
    root.addFilter(advice)
    try:
        q.quantize_dynamic(
            folded, out_dir / Q8_ONNX_FILENAME, per_channel=True, weight_type=q.QuantType.QInt8
        )
    finally:
        root.removeFilter(advice)
        folded.unlink(missing_ok=True)
    shutil.copyfile(tokenizer, out_dir / Q8_TOKENIZER_FILENAME)


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)
