"""A filter model records how its training machine computed the encoder's int8 products, and
serving refuses it on a CPU that computes them otherwise (its thresholds would not hold)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest

from labeling.int8 import encoder_numerics, int8_products_exact, int8_weight_extent, numerics_differ
from targeting.model import ModelLoadError, TargetingFilterModel
from targeting.scorer import FilterBundle


def _integer_model(path: Path, weights: np.ndarray) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    k, n = weights.shape
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "probe",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [None, k])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [None, n])],
        [numpy_helper.from_array(weights.astype(np.int8), "B")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path.write_bytes(model.SerializeToString())
    return path


def _float_model(path: Path) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "B"], ["Y"])], "float",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 2])],
        [numpy_helper.from_array(np.ones((4, 2), dtype=np.float32), "B")],
    )  # fmt: skip
    path.write_bytes(helper.make_model(graph).SerializeToString())
    return path


def test_the_weight_extent_is_read_from_the_integer_products(tmp_path: Path) -> None:
    weights = np.zeros((8, 3), dtype=np.int64)
    weights[2, 1], weights[5, 0] = -100, 37
    assert int8_weight_extent(_integer_model(tmp_path / "q.onnx", weights)) == 100
    assert int8_weight_extent(_float_model(tmp_path / "f.onnx")) == 0


def test_float_products_and_the_derived_grid_are_exact_full_range_is_what_this_cpu_does(
    tmp_path: Path,
) -> None:
    assert encoder_numerics(_float_model(tmp_path / "f.onnx")) == {
        "int8_weight_extent": 0, "int8_products_exact": True,
    }  # fmt: skip
    grid = np.full((8, 3), 64, dtype=np.int64)
    assert encoder_numerics(_integer_model(tmp_path / "g.onnx", grid))["int8_products_exact"]
    full = np.full((8, 3), -127, dtype=np.int64)
    got = encoder_numerics(_integer_model(tmp_path / "full.onnx", full))
    assert got == {"int8_weight_extent": 127, "int8_products_exact": int8_products_exact(-127, 127)}


def test_numerics_differ_names_both_machines_and_is_silent_when_they_agree() -> None:
    here = {"int8_weight_extent": 127, "int8_products_exact": False}
    trained = {"int8_weight_extent": 127, "int8_products_exact": True, "cpu": "Intel Xeon 8480+"}
    why = numerics_differ(trained, here)
    assert why is not None and "Intel Xeon 8480+" in why and "saturated" in why
    assert numerics_differ({**trained, "int8_products_exact": False}, here) is None
    assert numerics_differ(None, here) is None  # a model from before the record: unknown
    assert numerics_differ({"cpu": "x"}, here) is None
    other_file = numerics_differ({**trained, "int8_weight_extent": 64}, here)
    assert other_file is not None and "64" in other_file


def _loaded_model(onnx: Path, trained: dict[str, Any] | None) -> TargetingFilterModel:
    """A model as ``load_context`` leaves it: a bundle whose meta says how training computed,
    and the bundled encoder file."""
    m = TargetingFilterModel()
    meta = {} if trained is None else {"encoder_numerics": trained}
    m.bundle = cast(FilterBundle, SimpleNamespace(meta=meta, embedding_model_id="q8@test"))
    m.onnx_path = onnx
    m.model_version = "7"
    return m


@pytest.mark.parametrize("exact_in_training", [True, False])
def test_serving_refuses_a_model_whose_encoder_computes_otherwise_here(
    tmp_path: Path, exact_in_training: bool
) -> None:
    onnx = _integer_model(tmp_path / "full.onnx", np.full((8, 3), 127, dtype=np.int64))
    here = int8_products_exact(-127, 127)
    trained = {
        "int8_weight_extent": 127,
        "int8_products_exact": exact_in_training,
        "cpu": "elsewhere",
    }
    m = _loaded_model(onnx, trained)
    if exact_in_training == here:
        m.configure_serving()
        assert m.numerics_mismatch is None
        return
    with pytest.raises(ModelLoadError, match=r"model 7 is not served on this machine.*elsewhere"):
        m.configure_serving()
    m.configure_serving(require_training_numerics=False)  # allowed: served, and the reason kept
    assert m.numerics_mismatch is not None and "elsewhere" in m.numerics_mismatch


def test_a_model_without_the_record_or_without_an_encoder_is_served(tmp_path: Path) -> None:
    onnx = _integer_model(tmp_path / "full.onnx", np.full((8, 3), 127, dtype=np.int64))
    m = _loaded_model(onnx, None)
    m.configure_serving()
    assert m.numerics_mismatch is None
    no_encoder = TargetingFilterModel()
    no_encoder.bundle = cast(
        FilterBundle, SimpleNamespace(meta={"encoder_numerics": {"int8_products_exact": False}})
    )
    no_encoder.configure_serving()
    assert no_encoder.check_numerics() is None


def _settings(tmp_path: Path, *, require: bool) -> Any:
    from tests.unit.test_filter_service import service_settings

    return service_settings(tmp_path, filter_require_training_numerics=require)


@pytest.mark.parametrize("require", [True, False])
def test_every_serving_path_hands_the_setting_to_the_model(tmp_path: Path, require: bool) -> None:
    from labelloop.runtime import scoring_spec, service_config, serving_check
    from targeting.service import serving_configurer

    class Recording:
        def __init__(self) -> None:
            self.calls: list[dict[str, Any]] = []

        def configure_serving(self, **kwargs: Any) -> None:
            self.calls.append(kwargs)

    s = _settings(tmp_path, require=require)
    model = Recording()
    serving_configurer(service_config(s))(model)  # the filter service
    serving_check(s)(model)  # the batch filter (labelloop filter)
    assert [c["require_training_numerics"] for c in model.calls] == [require, require]
    assert scoring_spec(s).require_training_numerics is require  # the cluster workers


def test_the_service_shows_why_a_model_it_serves_computes_otherwise(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from labelloop.runtime import service_config
    from targeting.service import create_app
    from tests.unit.test_filter_service import API, holder_with, reference_loaded

    loaded = reference_loaded()
    why = "the encoder's int8 products are exact on this CPU but were saturated on the trainer"
    loaded.model.numerics_mismatch = why  # type: ignore[attr-defined]
    app = create_app(
        service_config(_settings(tmp_path, require=False)),
        holder=holder_with(loaded),
        start_holder=False,
    )
    with TestClient(app) as client:
        assert client.get("/v1/model", headers=API).json()["numerics_mismatch"] == why
    with TestClient(create_app(service_config(_settings(tmp_path, require=False)),
                               holder=holder_with(reference_loaded()), start_holder=False)) as client:  # fmt: skip
        assert client.get("/v1/model", headers=API).json()["numerics_mismatch"] is None


def _run(model_bytes: bytes, acts: np.ndarray, zero_point: int) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    feeds = {"A": acts, "azp": np.array(zero_point, dtype=np.uint8)}
    return np.asarray(sess.run(None, feeds)[0], dtype=np.int64)


def test_split_products_are_the_exact_integer_product_on_this_cpu() -> None:
    """A full-range product split into two within +-64: exact here whatever the CPU, where the
    plain product is exact only with VNNI (the probe says which)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from labeling.int8 import WEIGHT_LIMIT, split_wide_products

    rng = np.random.default_rng(3)
    w = rng.integers(-127, 128, (384, 32)).astype(np.int8)
    w[:, 0] = 127  # the largest pair sums
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "W", "azp"], ["Y"], name="mm")], "g",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [None, 384]),
         helper.make_tensor_value_info("azp", TensorProto.UINT8, [])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [None, 32])],
        [numpy_helper.from_array(w, "W")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    plain = model.SerializeToString()
    assert split_wide_products(model) == 1
    weights = [numpy_helper.to_array(t) for t in model.graph.initializer]
    assert len(weights) == 2 and all(
        int(np.abs(x.astype(np.int16)).max()) <= WEIGHT_LIMIT for x in weights
    )
    acts = rng.integers(0, 256, (8, 384)).astype(np.uint8)
    acts[0] = 255
    want = (acts.astype(np.int64) - 3) @ w.astype(np.int64)
    np.testing.assert_array_equal(_run(model.SerializeToString(), acts, 3), want)
    assert np.array_equal(_run(plain, acts, 3), want) == int8_products_exact(-127, 127)
    onnx.checker.check_model(model)
    assert split_wide_products(model) == 0  # nothing wide is left


def test_exact_int8_model_splits_only_where_this_cpu_saturates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx

    import labeling.int8 as int8

    full = _integer_model(tmp_path / "full.onnx", np.full((8, 3), -127, dtype=np.int64))
    grid = _integer_model(tmp_path / "grid.onnx", np.full((8, 3), 64, dtype=np.int64))
    monkeypatch.setattr(int8, "int8_products_exact", lambda low, high, **_: True)  # VNNI
    assert int8.exact_int8_model(full) == str(full)
    monkeypatch.setattr(int8, "int8_products_exact", lambda low, high, **_: high <= 64)  # AVX2
    assert int8.exact_int8_model(grid) == str(grid)
    split = int8.exact_int8_model(full)
    assert isinstance(split, bytes)
    (tmp_path / "split.onnx").write_bytes(split)
    assert int8.int8_weight_extent(tmp_path / "split.onnx") == 64
    assert [n.op_type for n in onnx.load(str(tmp_path / "split.onnx")).graph.node] == [
        "MatMulInteger", "MatMulInteger", "Add",
    ]  # fmt: skip


def test_an_exact_model_id_is_served_exact_and_never_refused(tmp_path: Path) -> None:
    from labeling.encoders import EXACT_INT8_ID, computes_exact_int8, load_encoder

    onnx_file = _integer_model(tmp_path / "full.onnx", np.full((8, 3), 127, dtype=np.int64))
    tok = tmp_path / "tokenizer.json"  # read on first use only
    exact = load_encoder("minilm-q8", onnx_file, tok, exact_int8=True)
    plain = load_encoder("minilm-q8", onnx_file, tok)
    assert exact.model_id == plain.model_id + EXACT_INT8_ID and exact.exact_int8
    assert computes_exact_int8(exact.model_id) and not computes_exact_int8(plain.model_id)
    assert encoder_numerics(onnx_file, exact=True)["int8_products_exact"] is True
    m = TargetingFilterModel()
    trained = {"int8_weight_extent": 127, "int8_products_exact": True, "cpu": "elsewhere"}
    m.bundle = cast(
        FilterBundle,
        SimpleNamespace(meta={"encoder_numerics": trained}, embedding_model_id=exact.model_id),
    )
    m.onnx_path, m.model_version = onnx_file, "8"
    m.configure_serving()  # exact where it was trained, exact here: whatever this CPU is
    assert m.numerics_mismatch is None


def test_a_model_pickled_before_the_numerics_record_still_loads_and_serves(tmp_path: Path) -> None:
    """Models logged before these attributes existed are unpickled without them (pickling skips
    ``__init__``): loading must set them, or every such model would be refused."""
    from experiments.dataset import snapshot_from_records
    from experiments.training import TrainConfig, train_filter
    from labeling.policy import load_policy
    from labeling.records import Conversation
    from labeling.synth import generate
    from labeling.taxonomy import load_taxonomy
    from targeting.model import model_artifacts, save_bundle

    policy = load_policy()
    tax = load_taxonomy(categories=policy.categories)
    snap = snapshot_from_records(
        [Conversation.model_validate(r) for r in generate(120, 5)], tax, policy.categories
    )
    bundle = train_filter(snap, tax, None, config=TrainConfig(folds=2, use_embeddings=False)).bundle
    old = TargetingFilterModel()
    del old.onnx_path, old.numerics_mismatch  # as unpickled from such a model
    arts = model_artifacts(save_bundle(bundle, tmp_path / "bundle.pkl"), policy)
    old.load_context(SimpleNamespace(artifacts=arts))
    old.configure_serving()
    assert old.numerics_mismatch is None and old.onnx_path is None
    assert len(old.decide(generate(3, 9))) == 3
