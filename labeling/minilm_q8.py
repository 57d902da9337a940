"""all-MiniLM-L6-v2 with int8 matrix products, derived from the bundled int8-weight file.

The bundled ONNX file (``labeling.assets.ensure_embedding_model``) stores int8 weights but
multiplies in float. This derivation folds those weights to float (onnxruntime's basic graph
optimisation) and quantises every matrix product with ``quantize_dynamic``: int8 weights per
output channel, activations quantised per call with one scale for the call's tensor. The
weights use the full int8 range: on a CPU with AVX2 and no VNNI onnxruntime's int8 products
saturate (``labeling.int8``), so this file's vectors there differ from a VNNI machine's; the
exact 7-bit grid (``reduce_range``) was measured and not kept (its all-dev model failed the
gate, ``docs/filter-quality.md``). A trained model's run records the training machine's CPU
(``training_int8_full_range_exact``). To keep a
text's vector independent of the texts embedded with it, the encoder that uses this file
(``labeling.encoders``, name ``minilm-q8``) embeds **one text per call** and runs calls on
several threads instead of batching. Measured: ``docs/serving.md``.

The folded float weights with a **weight delta** added, then quantised the same way (the changed
tensors by stochastic rounding: :func:`build_minilm_tuned`), give the tuned network
(``minilm-pairs``): all-MiniLM-L6-v2 tuned on the
LLM-written contrast pairs (``benchmarks/finetune_encoder.py tune-pairs``), its change from the
untuned weights stored as low-rank int8 factors per matrix and float vectors for the biases and
layer norms (``benchmarks/finetune_encoder.py delta``; the file, ``labeling/data/``, is sha256
-pinned in ``labeling.assets``). A delta tensor is named after the network's parameter
(``encoder.layer.0.attention.self.key.weight``); a matrix product's weight is found by the
named bias added to its product, so the names do not depend on how a graph was exported.

The derivation is deterministic for a given source file, delta and onnxruntime version; all are
recorded in the build's manifest (``labeling.assets.ensure_minilm_q8_model``,
``labeling.assets.ensure_minilm_pairs_model``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: bump when the derivation below changes (the manifest then no longer matches: rebuilt)
Q8_DERIVATION_VERSION = "1"
Q8_ONNX_FILENAME = "model.onnx"
Q8_TOKENIZER_FILENAME = "tokenizer.json"
#: seed of the stochastic rounding of a tuned network's changed weights (:func:`build_minilm_tuned`)
DITHER_SEED = 20261205


#: a low-rank delta of the matrix ``NAME`` is stored as ``NAME.a`` (rows x rank, int8),
#: ``NAME.b`` (rank x columns, int8) and their per-component scales; a dense one as ``NAME``
LOW_RANK_PARTS = (".a", ".a_scale", ".b", ".b_scale")
#: parameter names start at one of these (an export prefixes them with its wrapper's name)
_PARAM_ROOTS = ("embeddings.", "encoder.")


class DeltaError(ValueError):
    """A weight delta that does not fit the network it is applied to."""


def parameter_initializers(model: Any) -> dict[str, str]:
    """The network's parameter name -> the graph's initializer holding it.

    Named initializers (``inner.encoder.layer.0.attention.self.key.bias``) keep their name
    from ``embeddings.``/``encoder.`` on; a matrix product's weight (an anonymous initializer)
    takes the name of the bias added to its product, ``.bias`` -> ``.weight``."""
    inits = {i.name for i in model.graph.initializer}
    out: dict[str, str] = {}
    for name in inits:
        param = _param_name(name)
        if param:
            out[param] = name
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for x in node.input:
            consumers.setdefault(x, []).append(node)
    for node in model.graph.node:
        weights = [x for x in node.input if x in inits and not _param_name(x)]
        if node.op_type != "MatMul" or len(weights) != 1:
            continue
        for nxt in consumers.get(node.output[0], []):
            bias = [_param_name(x) for x in nxt.input if x in inits]
            if nxt.op_type == "Add" and len(bias) == 1 and bias[0].endswith(".bias"):
                out[bias[0][: -len(".bias")] + ".weight"] = weights[0]
    return out


def _param_name(initializer: str) -> str:
    for root in _PARAM_ROOTS:
        at = initializer.find(root)
        if at == 0 or (at > 0 and initializer[at - 1] == "."):
            return initializer[at:]
    return ""


def delta_tensors(delta: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The float32 change per parameter name of a stored delta (low-rank parts multiplied out)."""
    out: dict[str, np.ndarray] = {}
    low_rank = {k[: -len(".a")] for k in delta if k.endswith(".a")}
    for name in sorted(low_rank):
        parts = [name + p for p in LOW_RANK_PARTS]
        missing = [p for p in parts if p not in delta]
        if missing:
            raise DeltaError(f"delta of {name}: {', '.join(missing)} missing")
        a = delta[name + ".a"].astype(np.float32) * delta[name + ".a_scale"][None, :]
        b = delta[name + ".b"].astype(np.float32) * delta[name + ".b_scale"][:, None]
        out[name] = a @ b
    for key, value in delta.items():
        if not any(key.endswith(p) and key[: -len(p)] in low_rank for p in LOW_RANK_PARTS):
            out[key] = np.asarray(value, dtype=np.float32)
    return out


def apply_delta(model: Any, delta: Mapping[str, np.ndarray]) -> int:
    """Add ``delta`` (as stored: :func:`delta_tensors`) to ``model``'s float initializers in
    place; return how many tensors changed. Every tensor of the delta must name a parameter of
    the model with the same shape."""
    return len(_add_changes(model, delta_tensors(delta)))


def _add_changes(model: Any, changes: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """:func:`apply_delta` on changes already multiplied out; returns the changed initializers'
    new weights by initializer name."""
    from onnx import numpy_helper

    names = parameter_initializers(model)
    by_name = {i.name: i for i in model.graph.initializer}
    unknown = sorted(set(changes) - set(names))
    if unknown:
        raise DeltaError(f"delta names {len(unknown)} parameters the network lacks: {unknown[:3]}")
    weights = {p: numpy_helper.to_array(by_name[names[p]]) for p in changes}
    for param, change in changes.items():  # all checked before any is changed
        weight = weights[param]
        if weight.shape != change.shape or weight.dtype != np.float32:
            raise DeltaError(
                f"delta of {param}: shape {change.shape}, the network's {weight.shape} "
                f"({weight.dtype}; a float network is expected)"
            )
    new: dict[str, np.ndarray] = {}
    for param, change in changes.items():
        init = by_name[names[param]]
        new[init.name] = weights[param] + change
        init.CopyFrom(numpy_helper.from_array(new[init.name], init.name))
    return new


def build_minilm_q8(source_onnx: Path, tokenizer: Path, out_dir: Path) -> None:
    """Write ``model.onnx`` (int8 matrix products) and a copy of ``tokenizer.json`` into
    ``out_dir``."""
    import shutil

    out_dir.mkdir(parents=True, exist_ok=True)
    folded = out_dir / "folded.onnx"
    _fold(source_onnx, folded)
    _quantise(folded, out_dir / Q8_ONNX_FILENAME)
    shutil.copyfile(tokenizer, out_dir / Q8_TOKENIZER_FILENAME)


def build_minilm_tuned(source_onnx: Path, tokenizer: Path, delta: Path, out_dir: Path) -> None:
    """Write ``model.onnx`` (the bundled network's weights folded to float plus ``delta``, an
    ``.npz`` of :func:`apply_delta`'s form, with int8 matrix products) and a copy of
    ``tokenizer.json`` into ``out_dir``.

    The bundled weights lie on an int8 grid and a tuning's change is mostly smaller than half
    its step: quantised again by rounding to the nearest, most of the change would be rounded
    away (measured: 39 % of the vectors' change kept). The tensors the delta changes are
    therefore quantised by **stochastic rounding** with a fixed seed (same scales and zero
    points as ``quantize_dynamic``'s): a weight moves to the next grid point with the
    probability of its fraction of a step, so the change is kept on average (86-91 % kept,
    ``docs/filter-quality.md``), and the build is the same on every run."""
    import shutil

    import onnx
    from onnx import numpy_helper

    out_dir.mkdir(parents=True, exist_ok=True)
    folded = out_dir / "folded.onnx"
    _fold(source_onnx, folded)
    model = onnx.load(str(folded))
    with np.load(delta) as stored:
        floats = _add_changes(model, delta_tensors({k: stored[k] for k in stored.files}))
    onnx.save(model, str(folded))
    quantised = out_dir / Q8_ONNX_FILENAME
    _quantise(folded, quantised)
    qmodel = onnx.load(str(quantised))
    by_name = {i.name: i for i in qmodel.graph.initializer}
    rng = np.random.default_rng(DITHER_SEED)
    redone = 0
    for name in sorted(floats):
        qname = name + "_quantized"
        if qname not in by_name:  # a tensor quantize_dynamic keeps float (biases, norms)
            continue
        old = numpy_helper.to_array(by_name[qname])
        scale = numpy_helper.to_array(by_name[name + "_scale"]).astype(np.float64)
        zero = numpy_helper.to_array(by_name[name + "_zero_point"]).astype(np.float64)
        info = np.iinfo(old.dtype)
        x = floats[name].astype(np.float64)
        if scale.ndim and scale.shape != (x.shape[-1],):  # per output column, or one scale
            raise DeltaError(f"{name}: quantisation scales {scale.shape} for weights {x.shape}")
        x = x / scale + zero
        new = np.clip(np.floor(x + rng.random(x.shape)), info.min, info.max).astype(old.dtype)
        by_name[qname].CopyFrom(numpy_helper.from_array(new, qname))
        redone += 1
    if redone == 0:
        raise DeltaError("the delta changed no quantised tensor")
    onnx.save(qmodel, str(quantised))
    shutil.copyfile(tokenizer, out_dir / Q8_TOKENIZER_FILENAME)


def _quantise(folded: Path, out: Path) -> None:
    """int8 weights per output column, activations per call (``quantize_dynamic``); removes
    ``folded``."""
    from onnxruntime import quantization as q

    # quantize_dynamic logs, on the root logger, advice to pre-process that is for calibrated
    # quantisation; drop that one record only, not the process's other logging
    root = logging.getLogger()
    advice = _DropMessage("Please consider to run pre-processing")
    root.addFilter(advice)
    try:
        q.quantize_dynamic(folded, out, per_channel=True, weight_type=q.QuantType.QInt8)
    finally:
        root.removeFilter(advice)
        folded.unlink(missing_ok=True)


def _fold(source_onnx: Path, out: Path) -> None:
    """The source's int8 weights folded to float (onnxruntime's basic graph optimisation)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(out)
    opts.log_severity_level = 3
    ort.InferenceSession(str(source_onnx), opts, providers=["CPUExecutionProvider"])


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)
