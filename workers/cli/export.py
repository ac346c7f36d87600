"""`clad export`: ONNX file, TensorRT engine or OpenVINO compiled model of a saved model version.

Both are written inside the model version directory (runtime/), named by a hash of
the weights, so workers find them instead of rebuilding at start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)


def export_command(
    ctx: typer.Context,
    model: Annotated[Path | None, typer.Option(
        "--model", help="Model version directory, or the model root with --category "
        "(default: the configured CLAD_MODEL_DIR).")] = None,
    category: Annotated[str | None, typer.Option(
        "--category", help="Product, when --model is the model root.")] = None,
    version: Annotated[str | None, typer.Option(
        "--version", help="Version (default: the latest).")] = None,
    backend: Annotated[Literal["onnx", "tensorrt", "openvino"],
                       typer.Option("--backend")] = "onnx",
    requests: Annotated[int | None, typer.Option(
        "--requests", min=1, help="OpenVINO: requests in flight, as the worker's "
        "CLAD_INFER_REQUESTS (default: the worker's rule, one per 4 cores up to 4).")] = None,
    max_batch: Annotated[int, typer.Option(
        "--max-batch", min=1, help="TensorRT profile maximum.")] = 32,
    opt_batch: Annotated[int | None, typer.Option(
        "--opt-batch", min=1, help="TensorRT profile optimum (default: min(8, max)).")] = None,
    precision: Annotated[Literal["fp16", "fp32", "int8"], typer.Option(
        "--precision", help="TensorRT fp16/fp32; int8: OpenVINO, with --references.")] = "fp16",
    references: Annotated[Path | None, typer.Option(
        "--references", help="INT8: a folder of the product's normal images (calibration; "
        "the bank and scale are rebuilt from them, as the model was built).")] = None,
    eval_dir: Annotated[Path | None, typer.Option(
        "--eval", help="INT8: an MVTec-layout folder of the product (test/good, test/<defect>, "
        "ground_truth/): AUROC of INT8 against FP32, adopted within 0.5 points.")] = None,
    check: Annotated[bool, typer.Option(
        "--check/--no-check", help="Compare the export with torch on two frames.")] = True,
) -> None:  # fmt: skip
    """Export a saved model to ONNX (opset 17, dynamic batch), build its TensorRT engine or
    compile it for this CPU with OpenVINO (cached under the key the worker looks up)."""
    from engine.runtime.export import ensure_onnx
    from engine.runtime.protocol import BackendUnavailableError
    from engine.scoring.artifacts import load_model, resolve

    if precision == "int8" and (backend != "openvino" or references is None):
        typer.echo("error: --precision int8 runs on --backend openvino and needs --references DIR "
                   "(the product's normal images)", err=True)  # fmt: skip
        raise typer.Exit(2)
    root = model if model is not None else ctx.find_root().obj.model.model_dir
    version_dir = resolve(root, category, version)
    loaded = load_model(version_dir)
    typer.echo(f"model {loaded.category} {loaded.version} ({version_dir})")
    if precision == "int8":
        _export_int8(loaded, version_dir, references, eval_dir)  # type: ignore[arg-type]
        return
    exp = ensure_onnx(loaded.runtime, version_dir)
    typer.echo(f"onnx: {exp.path} (opset {exp.opset}, frames [batch, {exp.frame_size[0]}, "
               f"{exp.frame_size[1]}, 3], weights hash {exp.model_hash})")  # fmt: skip
    if backend == "onnx":
        if check:
            _check(loaded.runtime, "onnxruntime", version_dir, exp.frame_size, max_batch, precision)
        return
    if backend == "openvino":
        from engine.runtime.select import make_backend

        try:
            ov = make_backend("openvino", loaded.runtime, version_dir=version_dir,
                              max_batch=max_batch, requests=requests,
                              progress=typer.echo)  # fmt: skip
        except BackendUnavailableError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"openvino: compiled model ready ({ov.name}, "
                   f"{ov.requests} requests)")  # type: ignore[attr-defined]  # fmt: skip
        if check:
            _check(loaded.runtime, ov, version_dir, exp.frame_size, max_batch, precision)
        return
    from engine.runtime.tensorrt_backend import tensorrt_backend

    try:
        trt = tensorrt_backend(loaded.runtime, version_dir, precision, max_batch, opt_batch,
                               progress=typer.echo)  # fmt: skip
    except BackendUnavailableError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"tensorrt: engine ready ({trt.name}, batch 1..{trt.max_batch})")
    if check:
        _check(loaded.runtime, trt, version_dir, exp.frame_size, max_batch, precision)


def _export_int8(loaded: object, version_dir: Path, references: Path,
                 eval_dir: Path | None) -> None:  # fmt: skip
    """Build the INT8 IR from the reference folder; with `eval_dir`, compare it with FP32."""
    from engine.runtime.int8 import build_int8, int8_dir
    from engine.runtime.protocol import BackendUnavailableError
    from engine.scoring.builder import ScoringConfig
    from engine.training.datasets import IMAGE_SUFFIXES, load_rgb

    paths = sorted(p for p in references.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) \
        if references.is_dir() else []  # fmt: skip
    if not paths:
        typer.echo(f"error: no images ({', '.join(IMAGE_SUFFIXES)}) in {references}", err=True)
        raise typer.Exit(2)
    runtime = loaded.runtime  # type: ignore[attr-defined]
    cfg = ScoringConfig.from_stored(loaded.metadata["config"]["scoring"])  # type: ignore[attr-defined]
    typer.echo(f"int8: quantizing the trunk on {len(paths)} reference images ...")
    try:
        built = build_int8(runtime, [load_rgb(p) for p in paths], cfg, int8_dir(version_dir))
    except (BackendUnavailableError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    r = built.report
    typer.echo(f"int8: {built.path}\n  reference scale image {r.image_scale_int8:.4g} "
               f"(fp32 {r.image_scale_fp32:.4g}), pixel {r.pixel_scale_int8:.4g} "
               f"(fp32 {r.pixel_scale_fp32:.4g}); serve it with CLAD_BACKEND=openvino "
               f"CLAD_CPU_PRECISION=int8 CLAD_LINE_CONTEXT=false")  # fmt: skip
    if eval_dir is None:
        typer.echo("int8: not checked against FP32 (pass --eval DIR with labelled test images)")
        return
    from engine.evaluation.precision import TOLERANCE, compare_int8

    check = compare_int8(runtime, built.path, eval_dir, float(loaded.threshold),  # type: ignore[attr-defined]
                         exclude={p.resolve() for p in paths})  # fmt: skip

    def pair(a: float | None, b: float | None) -> str:
        return "-" if a is None or b is None else f"{a:.1f} -> {b:.1f}"

    typer.echo(f"int8 check on {check.images} images ({check.anomalous} defective): image AUROC "
               f"{pair(check.image_auroc_fp32, check.image_auroc_int8)}, pixel AUROC "
               f"{pair(check.pixel_auroc_fp32, check.pixel_auroc_int8)}, same verdict "
               f"{100 * check.verdicts_agree:.1f}% -> "
               f"{'ADOPT' if check.within_tolerance else 'KEEP FP32'} "
               f"(within {TOLERANCE} points: {check.within_tolerance})")  # fmt: skip


def _check(runtime: object, backend: object, version_dir: Path, size: tuple[int, int],
           max_batch: int, precision: str) -> None:  # fmt: skip
    """Two random frames through the export and through torch: print the largest gap."""
    import numpy as np

    from engine.runtime.select import make_backend
    from engine.runtime.torch_backend import TorchBackend

    if isinstance(backend, str):
        backend = make_backend(backend, runtime, version_dir=version_dir,  # type: ignore[arg-type]
                               max_batch=max_batch, precision=precision)  # fmt: skip
    frames = np.random.default_rng(0).integers(0, 256, (2, *size, 3), dtype=np.uint8)
    ref_scores, ref_maps = TorchBackend(runtime).infer(frames)  # type: ignore[arg-type]
    scores, maps = backend.infer(frames)  # type: ignore[attr-defined]
    typer.echo(f"check vs torch: max |Δscore| {np.abs(scores - ref_scores).max():.2e}, "
               f"max |Δmap| {np.abs(maps - ref_maps).max():.2e}")  # fmt: skip
