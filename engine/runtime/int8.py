"""INT8 trunk for the OpenVINO backend (issue 17, item 4), an option only.

The encoder's convolutions are quantized by NNCF (post-training, min-max statistics,
per-channel weights) on the product's own reference views; the memory-bank search,
the map chain and the score stay FP32. A bank built with FP32 features and searched
with INT8 ones moves every normal patch's distance (bottle, 1 reference: scores up to
7.7% off), so the bank and the reference scale are rebuilt from the quantized
encoder's own embeddings, exactly as `engine.scoring.builder` builds them in FP32:

1. quantize the FP32 export, read the embeddings the bank search receives (the query
   side of its MatMuls) for the bank views and the held-out views;
2. the banks (same core-set rule) and scales from those embeddings, in torch;
3. export the runtime with those banks and scales and quantize it again with the same
   calibration: the trunk is the same subgraph on the same data, so it gets the same
   quantizers; checked: its embeddings of the held-out views equal step 1's.

The IR (`.xml` + `.bin`, weights kept FP32 where not quantized) is written to
`runtime/openvino/` in the model version directory under the weights hash and a hash
of the calibration images, with a JSON report of the check. `nncf` and `openvino` are
imported only here, when an INT8 model is built or loaded.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from engine.runtime.export import RUNTIME_SUBDIR, export_onnx, model_hash
from engine.runtime.protocol import BackendUnavailableError
from engine.scoring.builder import (
    ScoringConfig,
    bank_views,
    held_out_views,
    resize_to,
    scale_statistics,
    select_bank,
)
from engine.scoring.runtime_model import AnomalyOutput, CladRuntime

log = logging.getLogger(__name__)

INT8_SUBDIR = "openvino"
# the encoder's nodes in the export (efficientnet / mobilenet trunks): everything else,
# the bank search, the map chain and the top-k score, is left in FP32
TRUNK_PATTERN = r"^(?!/(stem|blocks|features|encoder)).*"
# the stem and the first block stay FP32 too: quantizing the normalised input image and
# the first full-resolution layers cost capsule (mvtec-sample, 1 reference) 21 image AUROC
# points, these two kept FP32 12 of them (bench.precision, engine/runtime/NOTES.md)
FP32_HEAD_PATTERN = r"^/(stem|blocks\.0|features\.0|features\.1)/"
INSTALL_HINT = "pip install nncf openvino"
# step 3 must reproduce step 1's embeddings; a larger gap means the two quantizations
# differed and the rebuilt bank does not belong to the final trunk
MAX_RELATIVE_MISMATCH = 1e-3


@dataclass(frozen=True)
class Int8Report:
    """What the INT8 build measured, written beside the IR."""

    model_hash: str
    calibration_hash: str
    calibration_views: int
    image_scale_fp32: float
    image_scale_int8: float
    pixel_scale_fp32: float
    pixel_scale_int8: float
    # held-out views: the final IR's bank-search inputs against the first quantization's
    # (relative to their largest value)
    self_check_relative_diff: float
    nncf_version: str
    openvino_version: str


@dataclass(frozen=True)
class Int8Model:
    path: Path  # the IR's .xml
    report: Int8Report


def int8_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("nncf", "openvino"))


def _require() -> tuple[Any, Any]:
    if not int8_available():
        raise BackendUnavailableError(f"INT8 needs the nncf and openvino packages ({INSTALL_HINT})")
    import nncf
    import openvino as ov

    return nncf, ov


def calibration_hash(views: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for v in views:
        h.update(f"{v.shape}|".encode())
        h.update(np.ascontiguousarray(v).tobytes())
    return h.hexdigest()[:8]


def drawn_defects(refs: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """Each reference with each generic defect kind drawn on it (seeded).

    Calibration ranges measured on normal views only clip what a defect does to the
    activations: a dark hole scored 6.2 against 11.2 in FP32 (tests/unit/engine/runtime/
    test_int8.py's texture). These views are never in the bank."""
    from engine.training.synthetic_defects import DRAWINGS, draw_defect

    rng = np.random.default_rng(seed)
    return [draw_defect(r, kind, rng)[0] for r in refs for kind in sorted(DRAWINGS)]


def int8_dir(version_dir: str | Path) -> Path:
    """Where a model version's INT8 IRs live (beside its compiled OpenVINO models)."""
    return Path(version_dir) / RUNTIME_SUBDIR / INT8_SUBDIR


def find_int8(directory: str | Path, runtime: CladRuntime) -> Path | None:
    """The newest INT8 IR built for these weights in `directory`, if any."""
    found = sorted(Path(directory).glob(f"{model_hash(runtime)}-int8-*.xml"),
                   key=lambda p: p.stat().st_mtime)  # fmt: skip
    return found[-1] if found else None


def bank_queries(onnx_file: Path, runtime: CladRuntime) -> tuple[str, str | None]:
    """Names of the tensors the bank searches receive: (image-map embeddings, pixel-map
    embeddings or None), found as the MatMuls whose constant side is the bank."""
    model = onnx.load(str(onnx_file))
    inits = {i.name: i for i in model.graph.initializer}
    found: dict[str, str] = {}
    banks = {"bank": runtime.bank.numpy(), "pixel_bank": runtime.pixel_bank.numpy()}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        const = numpy_helper.to_array(inits[node.input[1]])
        for name, bank in banks.items():
            # a bank above the search's chunk is split over several MatMuls: the first
            # chunk's constant is the bank's first rows, and all share one query
            m = const.shape[-1]
            if const.ndim == 2 and 0 < m <= len(bank) and np.array_equal(const, bank[:m].T):
                found.setdefault(name, node.input[0])
    if "bank" not in found or (runtime.split_maps and "pixel_bank" not in found):
        raise RuntimeError(f"{onnx_file}: the bank search was not found in the export")
    return found["bank"], found.get("pixel_bank")


def quantize(onnx_file: Path, views: list[np.ndarray], batch: int = 4) -> Any:
    """The export with its trunk quantized to INT8 on `views` (uint8 HWC frames)."""
    nncf, ov = _require()
    data = [np.stack(views[i : i + batch]) for i in range(0, len(views), batch)]
    return nncf.quantize(
        ov.Core().read_model(str(onnx_file)),
        nncf.Dataset(data),
        preset=nncf.QuantizationPreset.PERFORMANCE,
        subset_size=len(data),  # batches: every calibration view
        ignored_scope=nncf.IgnoredScope(patterns=[TRUNK_PATTERN, FP32_HEAD_PATTERN],
                                        validate=False),
    )


def _run(model: Any, frames: list[np.ndarray], outputs: list[str] | None = None,
         batch: int = 8) -> list[np.ndarray]:  # fmt: skip
    """Every output of `model` (or the named tensors) over `frames`, concatenated."""
    _, ov = _require()
    model = model.clone()
    if outputs:
        for name in outputs:
            model.add_outputs(name)
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    names = [o.get_any_name() for o in compiled.outputs]
    picks = [names.index(n) if n in names else
             next(i for i, o in enumerate(compiled.outputs) if n in o.get_names())
             for n in outputs] if outputs else list(range(len(names)))  # fmt: skip
    got: list[list[np.ndarray]] = [[] for _ in picks]
    for i in range(0, len(frames), batch):
        request.infer({0: np.stack(frames[i : i + batch])})
        for acc, k in zip(got, picks, strict=True):
            acc.append(np.array(request.get_output_tensor(k).data, np.float32, copy=True))
    return [np.concatenate(a) for a in got]


@torch.no_grad()
def _maps_from_embeddings(rt: CladRuntime, emb: np.ndarray, pemb: np.ndarray | None,
                          grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The runtime's (scores, maps) at the processing size from bank-search inputs
    ([N*h*w, C] rows) as the graph computes them after the search."""
    h, w = grid
    c = emb.shape[1]

    def as_grid(rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(rows).reshape(-1, h, w, c).permute(0, 3, 1, 2)

    e = as_grid(emb)
    amap = rt.w_visual * rt.bank_map(e)
    pmap = rt.w_visual * rt.bank_map(as_grid(pemb), pixel=True) if pemb is not None else None
    s = int(rt.input_size)
    out = rt.finish([e], amap, pmap, s, s)
    return out.scores, out.maps


def build_int8(
    runtime: CladRuntime,
    references: list[np.ndarray],
    config: ScoringConfig,
    directory: str | Path,
) -> Int8Model:
    """Quantize `runtime`'s trunk on `references` (the product's normal images, at any
    size) and rebuild its banks and scales with the quantized trunk; write the IR to
    `directory` (a model version's: `int8_dir`). `config`: the model's ScoringConfig
    (views, core-set rule). The scales are the visual term's, as in FP32; a text
    branch stays FP32 and reads the quantized trunk's features."""
    nncf, ov = _require()
    if not references:
        raise ValueError("INT8 needs the product's reference images (none given)")
    refs = [resize_to(r, int(runtime.input_size)) for r in references]
    views, held = bank_views(refs, config), held_out_views(refs, config)
    calibration = views + held + drawn_defects(refs, config.seed)
    digest, cal = model_hash(runtime), calibration_hash(calibration)
    with tempfile.TemporaryDirectory() as tmp:
        first = export_onnx(runtime, Path(tmp) / "fp32.onnx")
        query, pixel_query = bank_queries(first.path, runtime)
        names = [query] + ([pixel_query] if pixel_query else [])
        log.info("INT8: quantizing the trunk on %d views", len(calibration))
        quantized = quantize(first.path, calibration)
        got = _run(quantized, views + held, names)
        n_views = len(views)
        cells = _cells(got[0], len(views) + len(held))
        rt = copy.deepcopy(runtime)
        # the FP32 model's core-set rows: the same patches, embedded by the quantized
        # trunk (a core-set of the INT8 embeddings picks other patches, and a small cut
        # bank then moves normal scores by a quarter on the unit test's texture)
        (fp32_bank,) = _run(ov.Core().read_model(str(first.path)), views, [query])
        banks = select_bank([torch.from_numpy(g[: n_views * cells]) for g in got], config,
                            rows_from=torch.from_numpy(fp32_bank))  # fmt: skip
        rt.bank = banks[0].contiguous()
        if pixel_query:
            rt.pixel_bank = banks[1].contiguous()
        rt.scale.fill_(1.0)
        rt.pixel_scale.fill_(1.0)
        grid = _grid(cells)
        held_rows = [g[n_views * cells :] for g in got]
        pixel_rows = held_rows[1] if pixel_query else None
        text, rt.text_branch = rt.text_branch, None  # the scales are the visual term's
        scores, maps = _maps_from_embeddings(rt, held_rows[0], pixel_rows, grid)
        rt.text_branch = text
        image_scale, pixel_scale = scale_statistics(scores, maps, rt.topk, config.w_visual)
        rt.scale.fill_(image_scale)
        rt.pixel_scale.fill_(pixel_scale)
        final_onnx = export_onnx(rt, Path(tmp) / "int8-bank.onnx")
        final = quantize(final_onnx.path, calibration)
        # the final trunk must be the one the banks came from: same embeddings
        again = _run(final, held, [n for n in bank_queries(final_onnx.path, rt) if n])
        self_check = max(float(np.max(np.abs(a - h)) / max(float(np.max(np.abs(h))), 1e-12))
                         for a, h in zip(again, held_rows, strict=True))  # fmt: skip
        if self_check > MAX_RELATIVE_MISMATCH:
            raise RuntimeError(
                f"INT8: the final quantization does not reproduce the embeddings its bank was "
                f"built from (relative {self_check:.2e} > {MAX_RELATIVE_MISMATCH:g})"
            )
        report = Int8Report(
            model_hash=digest, calibration_hash=cal, calibration_views=len(calibration),
            image_scale_fp32=float(runtime.scale), image_scale_int8=image_scale,
            pixel_scale_fp32=float(runtime.pixel_scale), pixel_scale_int8=pixel_scale,
            self_check_relative_diff=self_check, nncf_version=nncf.__version__,
            openvino_version=ov.get_version().split("-")[0],
        )  # fmt: skip
        path = Path(directory) / f"{digest}-int8-{cal}.xml"
        path.parent.mkdir(parents=True, exist_ok=True)
        # FP16 weight compression would round the bank: keep FP32 where not quantized
        ov.save_model(final, str(path), compress_to_fp16=False)
        path.with_suffix(".json").write_text(json.dumps(asdict(report), indent=2) + "\n")
        log.info("INT8 model %s: image scale %.4g (FP32 %.4g), pixel scale %.4g (FP32 %.4g)",
                 path, image_scale, report.image_scale_fp32, pixel_scale,
                 report.pixel_scale_fp32)  # fmt: skip
    return Int8Model(path=path, report=report)


def _cells(rows: np.ndarray, frames: int) -> int:
    return rows.shape[0] // frames


def _grid(cells: int) -> tuple[int, int]:
    """The feature grid of a square processing size."""
    side = int(round(cells**0.5))
    if side * side != cells:
        raise RuntimeError(f"INT8: {cells} patches per frame is not a square grid")
    return side, side


def read_report(path: str | Path) -> Int8Report:
    return Int8Report(**json.loads(Path(path).with_suffix(".json").read_text()))


class IrScorer:
    """An INT8 IR called like a CladRuntime: uint8 NHWC frames -> AnomalyOutput, so the
    evaluation code that scores runtimes scores it too."""

    def __init__(self, xml: str | Path, threads: int | None = None) -> None:
        _, ov = _require()
        config = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        self._request = ov.Core().compile_model(str(xml), "CPU", config).create_infer_request()

    def __call__(self, frames: torch.Tensor) -> AnomalyOutput:
        self._request.infer({0: np.ascontiguousarray(frames.numpy())})
        scores, maps = (np.array(self._request.get_output_tensor(i).data, np.float32, copy=True)
                        for i in range(2))  # fmt: skip
        return AnomalyOutput(scores=torch.from_numpy(scores), maps=torch.from_numpy(maps))
