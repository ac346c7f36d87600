"""`auto` on a CPU is onnxruntime whether or not openvino is installed (one session was
faster on the measured host); openvino runs when asked for; tensorrt and onnxruntime's
CUDA EP keep their precedence."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from engine.runtime import BackendUnavailableError, make_backend
from engine.runtime import select as sel
from engine.runtime.onnxruntime_backend import OnnxRuntimeBackend

pytestmark = pytest.mark.unit
SIZE = 64


@pytest.fixture
def without_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    hidden = lambda name, *a: None if name == "openvino" else real(name, *a)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", hidden)


@pytest.fixture
def cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sel, "tensorrt_usable", lambda: False)
    monkeypatch.setattr(sel, "onnxruntime_cuda_usable", lambda: False)


@pytest.mark.usefixtures("cpu_only")
@pytest.mark.parametrize(
    ("machine", "installed", "chosen"),
    [("x86_64", True, "onnxruntime"), ("AMD64", True, "onnxruntime"),
     ("x86_64", False, "onnxruntime"), ("aarch64", True, "onnxruntime"),
     ("arm64", False, "onnxruntime")],
)  # fmt: skip
def test_auto_on_a_cpu(
    monkeypatch: pytest.MonkeyPatch, machine: str, installed: bool, chosen: str
) -> None:
    monkeypatch.setattr("platform.machine", lambda: machine)
    monkeypatch.setattr("engine.runtime.openvino_backend.openvino_installed", lambda: installed)
    assert sel.resolve_kind("auto") == chosen
    assert sel.resolve_kind("onnxruntime") == "onnxruntime"
    assert sel.resolve_kind("openvino") == "openvino"


def test_gpus_keep_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.setattr("engine.runtime.openvino_backend.openvino_installed", lambda: True)
    monkeypatch.setattr(sel, "tensorrt_usable", lambda: True)
    monkeypatch.setattr(sel, "onnxruntime_cuda_usable", lambda: True)
    assert sel.resolve_kind("auto") == "tensorrt"
    monkeypatch.setattr(sel, "tensorrt_usable", lambda: False)
    assert sel.resolve_kind("auto") == "onnxruntime"  # its CUDA EP build


@pytest.mark.usefixtures("cpu_only", "without_openvino")
def test_auto_needs_no_openvino(runtime: torch.nn.Module) -> None:
    backend = make_backend("auto", runtime, requests=1, intra_op_threads=1)
    assert isinstance(backend, OnnxRuntimeBackend)
    scores, _ = backend.infer(np.zeros((1, SIZE, SIZE, 3), np.uint8))
    assert scores.shape == (1,)


@pytest.mark.usefixtures("without_openvino")
def test_openvino_asked_for_without_the_package_names_it(runtime: torch.nn.Module) -> None:
    with pytest.raises(BackendUnavailableError, match="pip install openvino"):
        make_backend("openvino", runtime)
