"""int8 matrix products that every CPU computes alike, and a probe of whether this one does.

The derived int8 encoders (``labeling.minilm_q8``: ``minilm-q8``, ``minilm-pairs``;
``labeling.e5_onnx``'s ``int8-rowwise``) multiply uint8 activations by int8 weights with
onnxruntime's ``MatMulInteger``. On a CPU with AVX2 and no VNNI that product adds the
uint8 x int8 products in pairs in int16, which saturates when both weights of a pair are large
(255 x 127 x 2 > 32,767); with VNNI (or AMX) it adds in int32 and is exact. Measured on an AMD
EPYC with AVX2 only: a product with random full-range weights differed from the exact one in
1,023 of 1,024 outputs. Weights within :data:`WEIGHT_RANGE` make every pair sum fit in int16:
exact on both kinds of CPU. The E5 conversion keeps its weights there; ``minilm-q8`` keeps the
full range (its 7-bit derivation was measured and not kept: ``docs/filter-quality.md``). Its
products can still be exact everywhere: :func:`exact_int8_model` splits each wide product into
two within that range where the CPU would saturate (the same integer product, twice the int8
work). A trained model records how its encoder was computed (:func:`encoder_numerics`) and
serving compares (:func:`numerics_differ`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: the largest int8 weight magnitude of the E5 conversion: 255 x 64 x 2 = 32,640 <= 32,767
WEIGHT_LIMIT = 64
#: the int8 weights' grid (what ``quantize_dynamic(reduce_range=True)`` gives: [-64, 64])
WEIGHT_RANGE = (-WEIGHT_LIMIT, WEIGHT_LIMIT)
#: the CPU features onnxruntime chooses its int8 product kernels by (``machine_facts``)
INT8_ISA_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp")


def int8_products_exact(low: int, high: int, *, seed: int = 0) -> bool:
    """Whether onnxruntime's ``MatMulInteger`` (uint8 activations x int8 weights on
    [``low``, ``high``], one thread) equals the exact integer product on this CPU: a 16 x 384 by
    384 x 64 product of random values with a column and a row of the largest ones. False for
    full-range weights where the CPU adds pairs in int16 (AVX2 without VNNI)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    k, n = 384, 64
    weights = rng.integers(low, high + 1, (k, n), dtype=np.int64).astype(np.int8)
    weights[:, 0] = high  # the largest pair sums: 255 x high, twice
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "int8-probe",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [None, k])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [None, n])],
        [numpy_helper.from_array(weights, "B")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    acts = rng.integers(0, 256, (16, k), dtype=np.int64).astype(np.uint8)
    acts[0] = 255
    got = np.asarray(sess.run(None, {"A": acts})[0], dtype=np.int64)
    return bool(np.array_equal(got, acts.astype(np.int64) @ weights.astype(np.int64)))


def int8_weight_extent(onnx_path: Path) -> int:
    """The largest magnitude of the int8 weights an ONNX file multiplies by with
    ``MatMulInteger`` (0: it has no integer products; its products are float)."""
    import onnx

    return _weight_extent(onnx.load(str(onnx_path)))


def _weight_extent(model: Any) -> int:
    from onnx import TensorProto, numpy_helper

    int8_inits = {t.name: t for t in model.graph.initializer if t.data_type == TensorProto.INT8}
    extent = 0
    for node in model.graph.node:
        if node.op_type != "MatMulInteger":
            continue
        for name in node.input:
            if name in int8_inits:
                values = numpy_helper.to_array(int8_inits[name]).astype(np.int16)
                if values.size:
                    extent = max(extent, int(np.abs(values).max()))
    return extent


def encoder_numerics(onnx_path: Path, *, exact: bool = False) -> dict[str, Any]:
    """How this CPU computes an encoder file's matrix products: ``int8_weight_extent`` (0: float
    products) and ``int8_products_exact`` (whether its int8 products equal the exact integer
    products here; always true for float products and for weights within :data:`WEIGHT_RANGE`,
    and with ``exact``: the file run through :func:`exact_int8_model`). Training records it in
    the model; serving compares (:func:`numerics_differ`)."""
    extent = int8_weight_extent(onnx_path)
    native = extent == 0 or int8_products_exact(-extent, min(extent, 127))
    return {"int8_weight_extent": extent, "int8_products_exact": native or exact}


def split_wide_products(model: Any, limit: int = WEIGHT_LIMIT) -> int:
    """Rewrite, in place, every ``MatMulInteger`` of an ONNX model whose constant int8 weights go
    beyond +-``limit`` as two products, by the weights clipped to +-``limit`` and by the rest
    (within +-``limit`` too for int8 weights), added in int32: the same integer product, which
    every CPU computes exactly (:data:`WEIGHT_RANGE`). The number of products split."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    weights = {t.name: t for t in graph.initializer if t.data_type == TensorProto.INT8}
    nodes, split = [], 0
    for node in graph.node:
        name = node.input[1] if node.op_type == "MatMulInteger" and len(node.input) > 1 else ""
        if name not in weights:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weights[name]).astype(np.int16)
        if w.size == 0 or int(np.abs(w).max()) <= limit:
            nodes.append(node)
            continue
        low = np.clip(w, -limit, limit)
        parts = []
        for suffix, part in (("within", low), ("rest", w - low)):
            graph.initializer.append(
                numpy_helper.from_array(part.astype(np.int8), f"{name}_{suffix}")
            )
            out = f"{node.output[0]}_{suffix}"
            rest = list(node.input[2:])
            nodes.append(helper.make_node("MatMulInteger", [node.input[0], f"{name}_{suffix}", *rest],
                                          [out], name=f"{node.name}_{suffix}"))  # fmt: skip
            parts.append(out)
        nodes.append(helper.make_node("Add", parts, [node.output[0]], name=f"{node.name}_sum"))
        split += 1
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return split


def exact_int8_model(onnx_path: Path) -> str | bytes:
    """What onnxruntime should load to compute an encoder file's exact integer products on this
    CPU: the file's path where they are exact already (VNNI, AMX; float products; weights within
    :data:`WEIGHT_RANGE`), else the bytes of the file with its wide products split
    (:func:`split_wide_products`: twice the int8 work where it is needed)."""
    import onnx

    model = onnx.load(str(onnx_path))  # read once: the extent and the split come from it
    extent = _weight_extent(model)
    if extent <= WEIGHT_LIMIT or int8_products_exact(-extent, min(extent, 127)):
        return str(onnx_path)
    split_wide_products(model)
    return bytes(model.SerializeToString())


def numerics_differ(trained: Mapping[str, Any] | None, here: Mapping[str, Any]) -> str | None:
    """Why an encoder computes other vectors here than where its model was trained, or None
    when it computes the same ones (or training did not record how it computed them)."""
    if not trained or "int8_products_exact" not in trained:
        return None
    if trained.get("int8_weight_extent") != here.get("int8_weight_extent"):
        return (
            f"the encoder file differs from training's (int8 weights up to "
            f"{trained.get('int8_weight_extent')} there, {here.get('int8_weight_extent')} here)"
        )
    if bool(trained["int8_products_exact"]) == bool(here["int8_products_exact"]):
        return None
    where = str(trained.get("cpu") or "the training machine")

    def how(exact: Any) -> str:
        return "exact" if exact else "saturated in int16 (AVX2 without VNNI)"

    return (
        f"the encoder's int8 products are {how(here['int8_products_exact'])} on this CPU but "
        f"were {how(trained['int8_products_exact'])} on {where}, where the model was trained: "
        "its vectors, and so the calibrated thresholds, are not those training measured"
    )


def machine_facts(cpuinfo: str | None = None) -> dict[str, Any]:
    """The machine int8 encoder results come from: CPU model, the int8-relevant instruction sets
    it has, whether its int8 products are exact (full-range weights: ``minilm-q8``,
    ``minilm-pairs``; :data:`WEIGHT_RANGE`: the E5 conversion), core count, onnxruntime version.
    ``cpuinfo`` is ``/proc/cpuinfo``'s text (read when None; empty where there is none)."""
    import os
    import platform

    import onnxruntime

    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    model, flags = platform.processor() or platform.machine(), set[str]()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return {
        "cpu": model,
        "int8_isa": [f for f in INT8_ISA_FLAGS if f in flags],
        "int8_full_range_exact": int8_products_exact(-127, 127),
        "int8_weight_grid_exact": int8_products_exact(*WEIGHT_RANGE),
        "cpus": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
    }
