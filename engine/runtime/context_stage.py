"""The first half of the scoring path as its own ONNX graph, for line-context scoring.

Context scoring (engine.line_context) needs every frame's patch embeddings, which the
full export does not return. This graph runs encoder, embeddings and the reference
search — the costly part, fast under onnxruntime — and outputs the embeddings and the
reference distance grids; the context search and `CladRuntime.finish` (a matmul, a
resize, a blur, a top-k) stay in torch. Text-branch models keep the torch path (the
text heads read the encoder features, not the embeddings).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from engine.runtime.export import INPUT_NAME, OPSET, RUNTIME_SUBDIR, model_hash
from engine.runtime.onnx_passes import cast_input_first, fold_static_ifs
from engine.runtime_model import CladRuntime, patch_embeddings

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
    """The stage under onnxruntime (CPU); callable like `ContextStage` on torch tensors."""

    def __init__(self, runtime: CladRuntime, version_dir: Path | None = None,
                 intra_op_threads: int | None = None) -> None:  # fmt: skip
        import onnxruntime as ort

        name = f"context-{model_hash(runtime)}-op{OPSET}.onnx"
        opts = ort.SessionOptions()
        if intra_op_threads is not None:
            opts.intra_op_num_threads = int(intra_op_threads)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if version_dir is not None:
            path = Path(version_dir) / RUNTIME_SUBDIR / name
            if not path.is_file():
                export_context_stage(runtime, path)
            source: str | bytes = str(path)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                source = export_context_stage(runtime, Path(tmp) / name).read_bytes()
        self.session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
        self.name = "onnxruntime-cpu-context"

    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = np.ascontiguousarray(frames.numpy())
        return tuple(torch.from_numpy(o) for o in self.session.run(list(OUTPUTS), {INPUT_NAME: x}))
