"""`auto` on a CPU: openvino on x86 where the package is installed, else onnxruntime
with one log line; tensorrt and onnxruntime's CUDA EP keep their precedence."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from engine.runtime import BackendUnavailableError, make_backend
from engine.runtime import select as sel
from engine.runtime.onnxruntime_backend import OnnxRuntimeBackend

pytestmark = pytest.mark.unit
SIZE = 64


@pytest.fixture(autouse=True)
def _fresh_openvino_check() -> Iterator[None]:
    sel.openvino_usable.cache_clear()  # cached per process: each test asks anew
    yield
    sel.openvino_usable.cache_clear()


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
    [("x86_64", True, "openvino"), ("AMD64", True, "openvino"), ("x86_64", False, "onnxruntime"),
     ("aarch64", True, "onnxruntime"), ("arm64", False, "onnxruntime")],
)  # fmt: skip
def test_auto_on_a_cpu(
    monkeypatch: pytest.MonkeyPatch, machine: str, installed: bool, chosen: str
) -> None:
    monkeypatch.setattr(sel.platform, "machine", lambda: machine)
    monkeypatch.setattr("engine.runtime.openvino_backend.openvino_installed", lambda: installed)
    assert sel.resolve_kind("auto") == chosen
    assert sel.resolve_kind("onnxruntime") == "onnxruntime"
    assert sel.resolve_kind("openvino") == "openvino"


def test_gpus_keep_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sel.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr("engine.runtime.openvino_backend.openvino_installed", lambda: True)
    monkeypatch.setattr(sel, "tensorrt_usable", lambda: True)
    monkeypatch.setattr(sel, "onnxruntime_cuda_usable", lambda: True)
    assert sel.resolve_kind("auto") == "tensorrt"
    monkeypatch.setattr(sel, "tensorrt_usable", lambda: False)
    assert sel.resolve_kind("auto") == "onnxruntime"  # its CUDA EP build


@pytest.mark.usefixtures("cpu_only", "without_openvino")
def test_without_openvino_auto_falls_back_with_one_log_line(
    monkeypatch: pytest.MonkeyPatch, runtime: torch.nn.Module, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sel.platform, "machine", lambda: "x86_64")
    with caplog.at_level(logging.INFO, logger="engine.runtime.select"):
        assert sel.resolve_kind("auto") == "onnxruntime"
        backend = make_backend("auto", runtime, requests=1, intra_op_threads=1)
        assert sel.resolve_kind("auto") == "onnxruntime"
    assert isinstance(backend, OnnxRuntimeBackend)
    said = [r.getMessage() for r in caplog.records if "openvino is not installed" in r.getMessage()]
    assert len(said) == 1 and "pip install openvino" in said[0]
    scores, _ = backend.infer(np.zeros((1, SIZE, SIZE, 3), np.uint8))
    assert scores.shape == (1,)


@pytest.mark.usefixtures("without_openvino")
def test_openvino_asked_for_without_the_package_names_it(runtime: torch.nn.Module) -> None:
    with pytest.raises(BackendUnavailableError, match="pip install openvino"):
        make_backend("openvino", runtime)
