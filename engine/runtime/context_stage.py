"""The first half of the scoring path as its own ONNX graph, for line-context scoring.

Context scoring (engine.scoring.line_context) needs every frame's patch embeddings, which the
full export does not return. This graph runs encoder, embeddings and the reference
search — the costly part, fast under onnxruntime or OpenVINO — and outputs the embeddings and the
reference distance grids; the context search and `CladRuntime.finish` (a matmul, a
resize, a blur, a top-k) stay in torch. Text-branch models keep the torch path (the
text heads read the encoder features, not the embeddings).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import torch
from torch import nn

from engine.runtime.export import INPUT_NAME, OPSET, RUNTIME_SUBDIR, model_hash
from engine.runtime.onnx_passes import cast_input_first, fold_static_ifs
from engine.runtime.parallel import RequestPool, Runner
from engine.scoring.runtime_model import CladRuntime, patch_embeddings

OUTPUTS = ("image_emb", "pixel_emb", "image_grid", "pixel_grid")


class ContextStage(nn.Module):
    """uint8 NHWC -> (image emb [N,C,h,w], pixel emb, image grid [N,h,w], pixel grid).

    Grids are reference distances / scale (w_visual not applied); with one map the
    pixel outputs repeat the image ones."""

    def __init__(self, runtime: CladRuntime) -> None:
        super().__init__()
        if runtime.text_branch is not None:
            raise ValueError("context stage: models with a text branch score with torch")
        if runtime.bank.shape[0] == 0:
            raise ValueError("context stage: the model has no memory bank")
        self.rt = runtime

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        rt = self.rt
        feats = rt.encoder.forward_features(rt.preprocess(frames))
        emb = patch_embeddings(feats, rt.pool)
        grid = rt.bank_map(emb)
        if not rt.split_maps:
            return emb, emb, grid, grid
        pemb = patch_embeddings(feats, rt.pixel_pool)
        return emb, pemb, grid, rt.bank_map(pemb, pixel=True)


def export_context_stage(runtime: CladRuntime, path: Path) -> Path:
    """Trace the stage to `path` (dynamic batch, the runtime's input size)."""
    s = int(runtime.input_size)
    example = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, s, s, 3), np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    dyn = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUTS)}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings on static shape checks
        torch.onnx.export(ContextStage(runtime).eval(), (example,), str(tmp),
                          input_names=[INPUT_NAME], output_names=list(OUTPUTS),
                          opset_version=OPSET, do_constant_folding=True, dynamic_axes=dyn,
                          dynamo=False)  # fmt: skip
    model = onnx.load(str(tmp))
    fold_static_ifs(model)
    cast_input_first(model, INPUT_NAME)
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp))
    tmp.replace(path)
    return path


class OnnxContextStage:
    """The stage's graph under onnxruntime (CPU) or OpenVINO, `requests` requests in flight
    (each batch split over them, parallel.py); callable like `ContextStage` on tensors."""

    def __init__(self, runtime: CladRuntime, version_dir: Path | None = None,
                 intra_op_threads: int | None = None, *, requests: int = 1,
                 kind: Literal["onnxruntime", "openvino"] = "onnxruntime") -> None:  # fmt: skip
        digest = model_hash(runtime)
        name = f"context-{digest}-op{OPSET}.onnx"
        threads = intra_op_threads if intra_op_threads is not None else 1
        with tempfile.TemporaryDirectory() as tmp:
            if version_dir is not None:
                path = Path(version_dir) / RUNTIME_SUBDIR / name
                if not path.is_file():
                    export_context_stage(runtime, path)
            else:
                path = export_context_stage(runtime, Path(tmp) / name)
            if kind == "openvino":
                runners = _openvino_runners(runtime, path, f"context-{digest}", version_dir,
                                            requests, threads)  # fmt: skip
            else:
                runners = _onnxruntime_runners(path.read_bytes(), requests, intra_op_threads)
        self.requests = len(runners)
        self._pool = RequestPool(runners, "context")
        self.name = f"{kind}-cpu-context"

    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = np.ascontiguousarray(frames.numpy())
        return tuple(torch.from_numpy(o) for o in self._pool.run(x))

    def close(self) -> None:
        self._pool.close()


def _onnxruntime_runners(model: bytes, requests: int, threads: int | None) -> list[Runner]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

    def runner(session: ort.InferenceSession) -> Runner:
        return lambda x: tuple(session.run(list(OUTPUTS), {INPUT_NAME: x}))

    return [runner(ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"]))
            for _ in range(max(1, requests))]  # fmt: skip


def _openvino_runners(runtime: CladRuntime, path: Path, digest: str, version_dir: Path | None,
                      requests: int, threads: int) -> list[Runner]:  # fmt: skip
    from engine.runtime.openvino_backend import compile_config, compile_onnx, request_runner

    size = (int(runtime.input_size), int(runtime.input_size))
    config = compile_config(max(1, requests), threads, "fp32")
    compiled = compile_onnx(path, digest, size, version_dir, config)
    count = int(compiled.get_property("NUM_STREAMS"))
    return [request_runner(compiled.create_infer_request()) for _ in range(count)]
