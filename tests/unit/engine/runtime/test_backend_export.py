"""ONNX export: dynamic batch, pinned opset, checked I/O contract, weights hash in the name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from engine.runtime.export import (
    OPSET,
    OUTPUT_NAMES,
    ensure_onnx,
    export_onnx,
    model_hash,
    read_model_hash,
)

pytestmark = pytest.mark.unit
SIZE = 64  # also the side of the shared `runtime` fixture (conftest reads it)


@pytest.fixture(scope="module")
def exported(runtime: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_onnx(runtime, tmp_path_factory.mktemp("version")).path


def test_graph_contract(exported: Path, runtime: torch.nn.Module) -> None:
    model = onnx.load(str(exported))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == OPSET == 17
    (inp,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "frames" and dims == ["batch", SIZE, SIZE, 3]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert tuple(o.name for o in model.graph.output) == OUTPUT_NAMES == ("scores", "maps")
    assert exported.parent.name == "runtime" and model_hash(runtime) in exported.name
    assert read_model_hash(exported) == model_hash(runtime)


def test_memory_bank_is_baked_in(exported: Path, runtime: torch.nn.Module) -> None:
    # the bank is an initializer of the graph (constant-folded to bank.T for the MatMul):
    # nothing to load beside the file
    bank_t = runtime.bank.numpy().T
    inits = [onnx.numpy_helper.to_array(t) for t in onnx.load(str(exported)).graph.initializer]
    assert any(a.shape == bank_t.shape and np.array_equal(a, bank_t) for a in inits)


@pytest.mark.parametrize("batch", [1, 3, 9])
def test_dynamic_batch(exported: Path, runtime: torch.nn.Module, batch: int) -> None:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(exported), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(batch).integers(0, 256, (batch, SIZE, SIZE, 3), dtype=np.uint8)
    scores, maps = sess.run(None, {"frames": x})
    with torch.no_grad():
        ref = runtime(torch.from_numpy(x))
    assert scores.shape == (batch,) and maps.shape == (batch, SIZE, SIZE)
    np.testing.assert_allclose(scores, ref.scores.numpy(), rtol=0, atol=1e-4)


def test_hash_follows_weights_and_settings(runtime: torch.nn.Module) -> None:
    before = model_hash(runtime)
    assert model_hash(runtime) == before  # deterministic
    saved = runtime.bank[0, 0].item()
    runtime.bank[0, 0] = saved + 1.0
    try:
        assert model_hash(runtime) != before
    finally:
        runtime.bank[0, 0] = saved
    old = runtime.w_visual
    runtime.w_visual = 2.0  # not a tensor, but it changes the graph
    try:
        assert model_hash(runtime) != before
    finally:
        runtime.w_visual = old
    assert model_hash(runtime) == before


def test_ensure_reuses_then_reexports_on_change(runtime: torch.nn.Module, tmp_path: Path) -> None:
    first = ensure_onnx(runtime, tmp_path)
    assert ensure_onnx(runtime, tmp_path).path == first.path
    saved = runtime.scale.item()
    runtime.scale.fill_(saved * 2.0)
    try:
        second = ensure_onnx(runtime, tmp_path)
    finally:
        runtime.scale.fill_(saved)
    assert second.path != first.path and second.path.is_file()


def test_export_other_frame_size(runtime: torch.nn.Module, tmp_path: Path) -> None:
    exp = export_onnx(runtime, tmp_path / "m.onnx", frame_size=(48, 80))
    sess = ort.InferenceSession(str(exp.path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).integers(0, 256, (2, 48, 80, 3), dtype=np.uint8)
    scores, maps = sess.run(None, {"frames": x})
    with torch.no_grad():
        ref = runtime(torch.from_numpy(x))
    assert maps.shape == (2, 48, 80)
    np.testing.assert_allclose(maps, ref.maps.numpy(), rtol=0, atol=1e-3)


def test_no_control_flow_left(exported: Path) -> None:
    # squeeze(1) after a Resize traces to If(dim == 1); folded for TensorRT (onnx_passes)
    ops = {n.op_type for n in onnx.load(str(exported)).graph.node}
    assert "If" not in ops and "Loop" not in ops, ops


def test_uint8_input_only_feeds_a_cast(exported: Path) -> None:
    # TensorRT accepts a UINT8 network input only as the input of a cast (onnx_passes)
    users = [n for n in onnx.load(str(exported)).graph.node if "frames" in n.input]
    assert [n.op_type for n in users] == ["Cast"]
