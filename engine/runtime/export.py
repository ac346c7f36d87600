"""ONNX export of the whole scoring path (uint8 NHWC in; scores and maps out).

The memory bank, score scale, Gaussian kernel and text-branch prototypes are module
buffers, so the tracer bakes them into the graph as constants: one .onnx file per
model version is self-contained. The file name carries a hash of the weights and of
the scoring settings, so a re-export after any change can never be confused with a
stale file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from engine.runtime.onnx_passes import cast_input_first, fold_static_ifs

log = logging.getLogger(__name__)

OPSET = 17  # pinned: TensorRT 10 and onnxruntime >= 1.16 both implement it fully
INPUT_NAME = "frames"
OUTPUT_NAMES = ("scores", "maps")
RUNTIME_SUBDIR = "runtime"  # inside the model version directory, beside model.pt
# settings that change the graph without changing any tensor in the state dict
_GRAPH_ATTRS = ("input_size", "pool", "metric", "topk", "chunk",
                "w_visual", "w_text_pixel", "w_text_image")  # fmt: skip


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    model_hash: str
    opset: int
    frame_size: tuple[int, int]


def model_hash(runtime: nn.Module, length: int = 16) -> str:
    """SHA-256 over every state-dict tensor (name, dtype, shape, bytes) and the scoring
    attributes that shape the graph; first `length` hex digits."""
    h = hashlib.sha256()
    for name, tensor in sorted(runtime.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    attrs = {a: getattr(runtime, a, None) for a in _GRAPH_ATTRS}
    h.update(json.dumps(attrs, sort_keys=True, default=str).encode())
    return h.hexdigest()[:length]


def onnx_path(version_dir: str | Path, digest: str, frame_size: tuple[int, int]) -> Path:
    h, w = frame_size
    return Path(version_dir) / RUNTIME_SUBDIR / f"model-{digest}-{h}x{w}-op{OPSET}.onnx"


def export_onnx(
    runtime: nn.Module,
    path: str | Path,
    frame_size: tuple[int, int] | None = None,
    opset: int = OPSET,
) -> OnnxExport:
    """Trace `runtime` to ONNX at `path` with a dynamic batch axis and check the result.

    Height and width are fixed (default: the runtime's input size, which is what the
    worker resizes frames to): a static spatial shape lets TensorRT pick its fastest
    kernels and keeps the optimisation profile one-dimensional.
    """
    path = Path(path)
    size = frame_size or (int(runtime.input_size), int(runtime.input_size))
    digest = model_hash(runtime)
    # batch 2, not 1: a batch-1 trace can specialise reshapes to the constant 1
    example = torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, (2, *size, 3), dtype=np.uint8)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    runtime.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # tracer warnings about Python-level shape checks: those branches are static
        warnings.simplefilter("ignore")
        torch.onnx.export(
            runtime, (example,), str(tmp), input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES), opset_version=opset, do_constant_folding=True,
            dynamic_axes={INPUT_NAME: {0: "batch"}, "scores": {0: "batch"}, "maps": {0: "batch"}},
            dynamo=False,  # the TorchScript tracer: no onnxscript dependency, stable graphs
        )  # fmt: skip
    model = onnx.load(str(tmp))
    folded = fold_static_ifs(model)
    cast_input_first(model, INPUT_NAME)
    _check_signature(model, size)
    onnx.helper.set_model_props(model, {
        "clad.model_hash": digest, "clad.opset": str(opset),
        "clad.frame_size": f"{size[0]}x{size[1]}", "clad.torch": torch.__version__,
    })  # fmt: skip
    onnx.checker.check_model(model, full_check=True)  # full_check: also runs shape inference
    onnx.save(model, str(tmp))
    tmp.replace(path)  # atomic: a reader never sees a half-written file
    log.info("exported ONNX %s (opset %d, %dx%d, hash %s, %d static If folded)",
             path, opset, *size, digest, folded)  # fmt: skip
    return OnnxExport(path=path, model_hash=digest, opset=opset, frame_size=size)


def _check_signature(model: onnx.ModelProto, size: tuple[int, int]) -> None:
    """The I/O contract the backends rely on: uint8 [batch, H, W, 3] -> float [batch], ..."""
    (inp,) = model.graph.input
    tt = inp.type.tensor_type
    dims = [d.dim_param or d.dim_value for d in tt.shape.dim]
    if inp.name != INPUT_NAME or tt.elem_type != onnx.TensorProto.UINT8:
        raise RuntimeError(f"unexpected ONNX input {inp.name} of type {tt.elem_type}")
    if dims != ["batch", size[0], size[1], 3]:
        raise RuntimeError(f"unexpected ONNX input shape {dims}")
    outs = {o.name: o.type.tensor_type for o in model.graph.output}
    if tuple(outs) != OUTPUT_NAMES:
        raise RuntimeError(f"unexpected ONNX outputs {list(outs)}")
    for name, t in outs.items():
        if t.elem_type != onnx.TensorProto.FLOAT or t.shape.dim[0].dim_param != "batch":
            raise RuntimeError(f"output {name} must be float32 with a dynamic batch axis")


def read_model_hash(path: str | Path) -> str | None:
    """The weights hash stored in an exported file's metadata (None if absent)."""
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}.get("clad.model_hash")


def ensure_onnx(
    runtime: nn.Module, version_dir: str | Path, frame_size: tuple[int, int] | None = None
) -> OnnxExport:
    """The version's ONNX file for the current weights: reused if present, else exported."""
    digest = model_hash(runtime)
    size = frame_size or (int(runtime.input_size), int(runtime.input_size))
    path = onnx_path(version_dir, digest, size)
    if path.is_file() and read_model_hash(path) == digest:
        log.info("reusing ONNX %s", path)
        return OnnxExport(path=path, model_hash=digest, opset=OPSET, frame_size=size)
    return export_onnx(runtime, path, frame_size=size)
