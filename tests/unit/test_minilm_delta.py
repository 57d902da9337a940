"""Weight deltas of a tuned MiniLM (``labeling.minilm_q8``): parameter names found in a graph,
low-rank parts multiplied out, and a delta that does not fit the network refused."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from labeling.minilm_q8 import DeltaError, apply_delta, delta_tensors, parameter_initializers

W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
BIAS = np.array([0.1, 0.2, 0.3], dtype=np.float32)
SCALE = np.ones(3, dtype=np.float32)


def graph(prefix: str = "inner.") -> onnx.ModelProto:
    """x @ W + key.bias, times a layer norm's weight: how the bundled and exported graphs look."""
    nodes = [
        helper.make_node("MatMul", ["x", "val_57"], ["p"]),
        helper.make_node("Add", ["p", f"{prefix}encoder.layer.0.attention.self.key.bias"], ["q"]),
        helper.make_node("Mul", ["q", f"{prefix}encoder.layer.0.output.LayerNorm.weight"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(W, "val_57"),
        numpy_helper.from_array(BIAS, f"{prefix}encoder.layer.0.attention.self.key.bias"),
        numpy_helper.from_array(SCALE, f"{prefix}encoder.layer.0.output.LayerNorm.weight"),
    ]
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits,
    )  # fmt: skip
    return helper.make_model(g)


def low_rank(name: str, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    a_scale = np.abs(a).max(axis=0) / 127
    b_scale = np.abs(b).max(axis=1) / 127
    return {
        f"{name}.a": np.round(a / a_scale).astype(np.int8),
        f"{name}.a_scale": a_scale.astype(np.float32),
        f"{name}.b": np.round(b / b_scale[:, None]).astype(np.int8),
        f"{name}.b_scale": b_scale.astype(np.float32),
    }


@pytest.mark.parametrize("prefix", ["inner.", "m.", ""])
def test_a_products_weight_is_named_after_the_bias_added_to_it(prefix: str) -> None:
    names = parameter_initializers(graph(prefix))
    assert names == {
        "encoder.layer.0.attention.self.key.weight": "val_57",
        "encoder.layer.0.attention.self.key.bias": f"{prefix}encoder.layer.0.attention.self.key.bias",
        "encoder.layer.0.output.LayerNorm.weight": f"{prefix}encoder.layer.0.output.LayerNorm.weight",
    }


def test_low_rank_parts_are_multiplied_out_and_dense_ones_kept() -> None:
    a = np.array([[1.0], [0.5], [-0.25], [0.0]])
    b = np.array([[0.2, -0.4, 0.1]])
    stored = {**low_rank("encoder.layer.0.attention.self.key.weight", a, b),
              "encoder.layer.0.attention.self.key.bias": np.array([0.01, 0, -0.01], np.float32)}  # fmt: skip
    out = delta_tensors(stored)
    assert set(out) == {"encoder.layer.0.attention.self.key.weight",
                        "encoder.layer.0.attention.self.key.bias"}  # fmt: skip
    np.testing.assert_allclose(out["encoder.layer.0.attention.self.key.weight"], a @ b, atol=2e-3)
    del stored["encoder.layer.0.attention.self.key.weight.b_scale"]
    with pytest.raises(DeltaError, match="b_scale missing"):
        delta_tensors(stored)


def test_apply_adds_the_change_to_the_named_tensors_only() -> None:
    model = graph()
    a, b = np.array([[1.0], [0.0], [0.0], [-1.0]]), np.array([[0.5, 0.0, -0.5]])
    n = apply_delta(model, {**low_rank("encoder.layer.0.attention.self.key.weight", a, b),
                            "encoder.layer.0.attention.self.key.bias": -BIAS})  # fmt: skip
    assert n == 2
    got = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    np.testing.assert_allclose(got["val_57"], W + a @ b, atol=1e-6)
    np.testing.assert_array_equal(got["inner.encoder.layer.0.attention.self.key.bias"], 0 * BIAS)
    np.testing.assert_array_equal(got["inner.encoder.layer.0.output.LayerNorm.weight"], SCALE)


def test_a_delta_that_does_not_fit_the_network_is_refused() -> None:
    with pytest.raises(DeltaError, match="lacks"):
        apply_delta(graph(), {"encoder.layer.7.attention.self.key.bias": BIAS})
    with pytest.raises(DeltaError, match=r"shape \(4,\)"):
        apply_delta(graph(), {"encoder.layer.0.attention.self.key.bias": np.zeros(4, np.float32)})
    model = graph()
    before = model.SerializeToString()
    with pytest.raises(DeltaError, match="LayerNorm"):  # the fitting bias is not applied either
        apply_delta(model, {"encoder.layer.0.attention.self.key.bias": -BIAS,
                            "encoder.layer.0.output.LayerNorm.weight": np.zeros(2, np.float32)})  # fmt: skip
    assert model.SerializeToString() == before
