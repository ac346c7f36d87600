"""TensorRT backend plumbing on CPU, against stand-ins for tensorrt and pycuda.

These fakes implement only the API calls the backend makes, with the semantics that
matter for correctness: copies and inference are *queued* on a stream and run only
when an event or the stream is synchronised, and the "engine" runs the ONNX export
with onnxruntime on the bytes in "device" memory. So a result read before its
batch ran, a slot overwritten while its results are still needed, or a wrong
buffer size fails here. TensorRT itself is tested in tests/gpu.
"""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from engine.runtime.protocol import InferenceBackend, pipelined
from tests.tensorrt_stand_ins import RecordingContext

pytestmark = pytest.mark.unit
SIZE = 64  # also the side of the shared `runtime` fixture (conftest reads it)
_MEM: dict[int, bytearray] = {}
_STREAMS: dict[int, FakeStream] = {}


class FakeAlloc:
    def __init__(self, nbytes: int) -> None:
        self.buf = bytearray(nbytes)
        _MEM[id(self)] = self.buf

    def __int__(self) -> int:
        return id(self)

    def free(self) -> None:
        _MEM.pop(id(self))


class FakeStream:
    def __init__(self) -> None:
        self.queue: list = []
        self.handle = id(self)
        _STREAMS[self.handle] = self

    def synchronize(self, upto: object = None) -> None:
        while self.queue:
            op = self.queue.pop(0)
            if op is upto:
                return
            if callable(op):
                op()


class FakeEvent:
    def record(self, stream: FakeStream) -> None:
        self.stream = stream
        stream.queue.append(self)

    def synchronize(self) -> None:
        if self in self.stream.queue:
            self.stream.synchronize(upto=self)


def _htod(dev: FakeAlloc, host: np.ndarray, stream: FakeStream) -> None:
    data = host.copy()  # pinned memory is read when the copy runs, not when queued
    stream.queue.append(lambda: _MEM[int(dev)].__setitem__(slice(0, data.nbytes), data.tobytes()))
    # a caller that changes `host` before the copy ran would be a bug; catch it
    stream.queue.append(lambda: np.testing.assert_array_equal(host, data))


def _dtoh(host: np.ndarray, dev: FakeAlloc, stream: FakeStream) -> None:
    def run() -> None:
        host[...] = np.frombuffer(_MEM[int(dev)], host.dtype, host.size).reshape(host.shape)

    stream.queue.append(run)


def fake_pycuda() -> types.ModuleType:
    drv = types.ModuleType("pycuda.driver")
    ctx = types.SimpleNamespace(push=lambda: None, detach=lambda: None)
    dev = types.SimpleNamespace(name=lambda: "Fake GPU", compute_capability=lambda: (9, 0),
                                retain_primary_context=lambda: ctx)  # fmt: skip
    drv.Error = RuntimeError
    drv.init = lambda: None
    drv.Device = type(
        "Device", (), {"__new__": lambda cls, i=0: dev, "count": staticmethod(lambda: 1)}
    )
    drv.Context = types.SimpleNamespace(pop=lambda: None)
    drv.pagelocked_empty = lambda shape, dtype: np.zeros(shape, dtype)
    drv.mem_alloc = FakeAlloc
    drv.memcpy_htod_async, drv.memcpy_dtoh_async = _htod, _dtoh
    drv.Stream, drv.Event = FakeStream, FakeEvent
    drv.mem_get_info = lambda: (1 << 30, 2 << 30)
    return drv


class FakeContext(RecordingContext):
    def __init__(self, session: ort.InferenceSession) -> None:
        super().__init__()
        self.session = session

    def execute_async_v3(self, stream_handle: int) -> bool:
        shape, addr = self.shape, dict(self.addr)  # state captured at enqueue, like TRT

        def run() -> None:
            n = int(np.prod(shape))
            x = np.frombuffer(_MEM[addr["frames"]], np.uint8, n).reshape(shape)
            scores, maps = self.session.run(None, {"frames": x})
            _MEM[addr["scores"]][: scores.nbytes] = scores.tobytes()
            _MEM[addr["maps"]][: maps.nbytes] = maps.tobytes()

        _STREAMS[stream_handle].queue.append(run)
        return True


def fake_tensorrt(calls: dict) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.0.0"
    trt.float32, trt.float16, trt.int32, trt.uint8 = "float32", "float16", "int32", "uint8"
    trt.nptype = lambda t: np.dtype(t).type
    names = ("MATRIX_MULTIPLY", "TOPK", "REDUCE", "NORMALIZATION", "SOFTMAX", "RESIZE",
             "CONVOLUTION", "SHAPE", "CAST")  # fmt: skip
    trt.LayerType = types.SimpleNamespace(**{n: n for n in names})
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", PREFER_PRECISION_CONSTRAINTS="PREFER")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=2: None})
    trt.IProgressMonitor = type("IProgressMonitor", (), {"__init__": lambda self: None})

    def tensor(dtype: str) -> types.SimpleNamespace:
        return types.SimpleNamespace(dtype=dtype)

    class Layer:
        def __init__(self, name: str, type_: str, ins: list, outs: list) -> None:
            self.name, self.type, self.precision, self.out_types = name, type_, None, {}
            self.num_inputs, self.num_outputs = len(ins), len(outs)
            self.get_input, self.get_output = ins.__getitem__, outs.__getitem__

        def set_output_type(self, k: int, t: str) -> None:
            self.out_types[k] = t

    layers = [Layer("/stem/stem.0/Conv", "CONVOLUTION", [tensor("float16")], [tensor("float16")]),
              Layer("/blocks.3/Mul", "MATRIX_MULTIPLY", [tensor("float32")], [tensor("float32")]),
              Layer("/MatMul", "MATRIX_MULTIPLY", [tensor("float32")], [tensor("float32")]),
              Layer("/Shape_3", "SHAPE", [tensor("float32")], [tensor("int32")]),
              Layer("/Cast", "CAST", [tensor("uint8")], [tensor("float32")])]  # fmt: skip
    calls["layers"] = layers
    network = types.SimpleNamespace(num_layers=len(layers), get_layer=layers.__getitem__)

    class Config:
        def __init__(self) -> None:
            self.flags, self.profiles, self.progress_monitor = set(), [], None

        def set_flag(self, f: str) -> None:
            self.flags.add(f)

        def set_memory_pool_limit(self, pool: str, n: int) -> None:
            pass

        def add_optimization_profile(self, p: types.SimpleNamespace) -> None:
            self.profiles.append(p)

    class Builder:
        def __init__(self, logger: object) -> None:
            pass

        def create_network(self, flags: int) -> types.SimpleNamespace:
            return network

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> types.SimpleNamespace:
            p = types.SimpleNamespace(shapes={})
            p.set_shape = lambda name, lo, opt, hi: p.shapes.__setitem__(name, (lo, opt, hi))
            return p

        def build_serialized_network(self, net: object, config: Config) -> bytes:
            calls["builds"] = calls.get("builds", 0) + 1
            calls["flags"] = config.flags
            config.progress_monitor.phase_start("Building", None, 3)
            head = json.dumps({"profile": config.profiles[0].shapes["frames"]}).encode()
            return head + b"\n" + calls["onnx"]

    class Parser:
        def __init__(self, net: object, logger: object) -> None:
            pass

        def parse(self, data: bytes) -> bool:
            calls["onnx"] = data
            return True

    class Engine:
        def __init__(self, data: bytes) -> None:
            head, onnx_bytes = data.split(b"\n", 1)
            self.profile = json.loads(head)["profile"]
            self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])

        def get_tensor_profile_shape(self, name: str, index: int) -> list:
            return self.profile

        def get_tensor_dtype(self, name: str) -> str:
            return "uint8" if name == "frames" else "float32"

        def create_execution_context(self) -> FakeContext:
            return FakeContext(self.session)

    trt.Builder, trt.OnnxParser = Builder, Parser
    runtime_attrs = {
        "__init__": lambda self, lg: None,
        "deserialize_cuda_engine": lambda self, d: Engine(d),
    }
    trt.Runtime = type("Runtime", (), runtime_attrs)
    return trt


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> dict:
    calls: dict = {}
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = fake_pycuda()
    modules = {"tensorrt": fake_tensorrt(calls), "pycuda": pycuda, "pycuda.driver": pycuda.driver}
    for name, module in modules.items():
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, module)
    return calls


def test_build_cache_and_double_buffered_run(
    fake_gpu: dict, runtime: torch.nn.Module, tmp_path: Path
) -> None:
    from engine.runtime import make_backend, resolve_kind

    assert resolve_kind("auto") == "tensorrt"  # packages present and the driver sees a GPU
    messages: list[str] = []
    backend = make_backend("tensorrt", runtime, version_dir=tmp_path, max_batch=4,
                           precision="fp16", progress=messages.append)  # fmt: skip
    assert isinstance(backend, InferenceBackend) and backend.max_batch == 4
    assert fake_gpu["flags"] == {"FP16", "PREFER"} and fake_gpu["builds"] == 1
    assert any("Building" in m for m in messages)  # the progress monitor reached us
    # FP16 trunk conv untouched; MatMul (bank search) pinned FP32 in and out of the trunk;
    # shape arithmetic and the uint8 cast left alone
    precision = {layer.name: layer.precision for layer in fake_gpu["layers"]}
    assert precision == {"/stem/stem.0/Conv": None, "/blocks.3/Mul": "float32",
                         "/MatMul": "float32", "/Shape_3": None, "/Cast": None}  # fmt: skip

    frames = np.random.default_rng(2).integers(0, 256, (10, SIZE, SIZE, 3), dtype=np.uint8)
    with torch.no_grad():
        ref = runtime(torch.from_numpy(frames))
    scores, maps = backend.infer(frames)  # chunks 4, 4, 2: slot 0 is reused for chunk 3
    np.testing.assert_allclose(scores, ref.scores.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(maps, ref.maps.numpy(), rtol=0, atol=1e-3)
    piped = list(pipelined(backend, (frames[i : i + 3] for i in range(0, 10, 3))))
    np.testing.assert_allclose(np.concatenate([s for s, _ in piped]), scores, atol=1e-5)

    again = make_backend("tensorrt", runtime, version_dir=tmp_path, max_batch=4,
                         progress=messages.append)  # fmt: skip
    assert fake_gpu["builds"] == 1 and any("cached" in m for m in messages)
    again.close()


def test_wrong_frame_size_and_oversize_submit(fake_gpu: dict, runtime: torch.nn.Module) -> None:
    from engine.runtime.tensorrt_backend import tensorrt_backend

    backend = tensorrt_backend(runtime, None, "fp32", max_batch=2)
    with pytest.raises(ValueError, match="resize"):
        backend.infer(np.zeros((1, SIZE, SIZE + 1, 3), np.uint8))
    with pytest.raises(ValueError, match="max batch"):
        backend.submit(np.zeros((3, SIZE, SIZE, 3), np.uint8))
    assert "FP16" not in fake_gpu["flags"]
