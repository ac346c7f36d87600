"""`clad eval`: k-shot evaluation of the scoring engine on MVTec-AD-layout folders."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)


def eval_command(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option(help="MVTec-layout root, or one category folder.")],
    shots: Annotated[int, typer.Option(min=0, help="Reference images per category (K).")] = 1,
    category: Annotated[list[str] | None, typer.Option(help="Only these categories.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
    model: Annotated[
        Path | None,
        typer.Option(help="Trained model directory (engine.scoring.artifacts); K=0 needs it."),
    ] = None,
    input_size: Annotated[int | None, typer.Option(help="Override the config.")] = None,
    backbone: Annotated[
        str | None, typer.Option(help="Override the config: efficientnet-lite0/1/2, mobilenet-v2.")
    ] = None,
    stages: Annotated[
        str | None, typer.Option(help="Override the config's block groups, e.g. '4' or '4,5'.")
    ] = None,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 2,
    protocol: Annotated[str | None, typer.Option(
        help="pure: references only. online: each test image (seeded order, in batches) also "
             "against the line context of the test images before it, as the worker scores. "
             "line: each test image inside a seeded stream of the category's spare "
             "train/good frames (never the references) at --defect-share, through the "
             "worker's context path; a category with fewer than 20 spare frames is skipped. "
             "Default: online when CLAD_LINE_CONTEXT is on (the default), else pure.",
    )] = None,
    context: Annotated[bool | None, typer.Option(
        "--context/--no-context",
        help="Aliases of --protocol online / --protocol pure.",
    )] = None,
    defect_share: Annotated[float, typer.Option(
        help="line protocol: share of defective frames in the stream after its lead-in.",
    )] = 0.1,
    max_images: Annotated[int, typer.Option(
        min=0, help="At most this many test images per category: a seeded draw that keeps "
                    "the defect share (0 = all).",
    )] = 0,
) -> None:
    """Image/pixel AUROC, AUPRO (FPR<=0.3) and F1-max per category and their mean."""
    import torch
    from rich.console import Console
    from rich.progress import track
    from rich.table import Table

    from engine.evaluation.evaluate import evaluate_category, mean_row
    from engine.scoring.builder import ScoringConfig
    from engine.scoring.visual_encoder import VisualEncoder
    from engine.training.datasets import find_categories

    torch.set_num_threads(threads)
    # a fixed width when piped, so logs keep the full table instead of wrapped cells
    console = Console(width=None if sys.stdout.isatty() else 130)
    cats = find_categories(data)
    if category:
        cats = [c for c in cats if c.name in set(category)]
        if not cats:
            raise typer.BadParameter(f"no category named {category} under {data}")
    overrides: dict[str, object] = {}
    if input_size is not None:
        overrides["input_size"] = input_size
    if backbone is not None:
        overrides["backbone"] = backbone
    if stages is not None:
        overrides["stages"] = tuple(int(s) for s in stages.split(","))
    cfg = ScoringConfig(**overrides)
    if shots == 0 and model is None:
        console.print("[red]error:[/red] --shots 0 (text only) needs a trained model (--model DIR)")
        raise typer.Exit(2)
    encoder = None if model is not None else VisualEncoder(cfg.backbone, cfg.stages)
    if not 0.0 < defect_share <= 1.0:
        raise typer.BadParameter(f"--defect-share must be in (0, 1], got {defect_share}")
    chosen, line = _protocol(ctx, protocol, context)
    results = []
    for cat in cats:
        factory = None
        if model is not None:
            factory, cfg = _trained_factory(model, cat.name, cfg)
        res = evaluate_category(
            cat, shots, cfg, encoder=encoder, model_factory=factory,
            progress=lambda it, name=cat.name: track(it, description=f"{name:>14}"),
            context=line, protocol=chosen, defect_share=defect_share, max_images=max_images,
        )  # fmt: skip
        results.append(res)
    console.print(_table(results, mean_row(results), shots, Table, chosen, defect_share))
    if json_out is not None:
        payload = {
            "data": str(data), "shots": shots, "model": str(model) if model else None,
            "protocol": chosen, "defect_share": defect_share if chosen == "line" else None,
            "max_images": max_images,
            "line_context": None if line is None else line.model_dump(mode="json"),
            "config": cfg.model_dump(mode="json"),
            "categories": [r.as_dict() for r in results], "mean": mean_row(results),
        }  # fmt: skip
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(_nan_to_none(payload), indent=2) + "\n")
        console.print(f"wrote {json_out}")


def _protocol(
    ctx: typer.Context, protocol: str | None, context: bool | None
) -> tuple[str, object | None]:
    """(protocol, the worker's ContextConfig from CLAD_LINE_CONTEXT*, None for pure).

    --context / --no-context are aliases of online / pure; with neither option the worker's
    own switch decides (CLAD_LINE_CONTEXT: online when on). online and line use the
    worker's context settings even where CLAD_LINE_CONTEXT switches the context off."""
    from engine.evaluation.evaluate import PROTOCOLS
    from workers.cli.main import settings_from
    from workers.streaming.scoring import context_config

    if protocol is not None and protocol not in PROTOCOLS:
        raise typer.BadParameter(f"--protocol must be one of {', '.join(PROTOCOLS)}, "
                                 f"got {protocol!r}")  # fmt: skip
    alias = None if context is None else ("online" if context else "pure")
    if protocol is not None and alias is not None and protocol != alias:
        raise typer.BadParameter(f"--protocol {protocol} contradicts "
                                 f"--{'' if context else 'no-'}context")  # fmt: skip
    settings = settings_from(ctx).context
    chosen = protocol or alias or ("online" if settings.line_context else "pure")
    if chosen == "pure":
        return chosen, None
    return chosen, context_config(settings.model_copy(update={"line_context": True}))


def _trained_factory(model: Path, category: str, cfg: object) -> tuple[object, object]:
    """A factory rebuilding the saved model with a memory bank from this run's references."""
    try:
        from engine.scoring.artifacts import load_model
    except ImportError as exc:  # E2's loader not there yet
        raise typer.BadParameter(
            f"--model needs engine.scoring.artifacts.load_model: {exc}") from exc
    from engine.scoring.builder import build_runtime

    loaded = load_model(model, category=category)
    saved_cfg = type(cfg).model_validate(loaded.metadata["config"]["scoring"])
    branch = loaded.runtime.text_branch

    def factory(refs: list) -> object:
        if not refs:
            return loaded.runtime if loaded.runtime.bank.shape[0] == 0 else _text_only(loaded)
        return build_runtime(refs, saved_cfg, text_branch=branch, encoder=loaded.runtime.encoder)

    return factory, saved_cfg


def _text_only(loaded: object) -> object:
    # K=0: drop the saved bank so only the text branch scores
    import torch

    rt = loaded.runtime
    rt.bank = torch.zeros(0, rt.bank.shape[1])
    return rt


def _nan_to_none(x: object) -> object:
    """NaN (a metric that does not apply) as JSON null, at any depth: json writes NaN."""
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_nan_to_none(v) for v in x]
    return None if isinstance(x, float) and math.isnan(x) else x


def _fmt(v: float) -> str:
    return "—" if v != v else f"{v:.1f}"


def _table(results: list, mean: dict, shots: int, table_cls: type, protocol: str,
           defect_share: float) -> object:  # fmt: skip
    how = {"pure": "references only", "online": "with online line context (test images only)",
           "line": f"line protocol ({defect_share:.0%} defective stream)"}[protocol]  # fmt: skip
    t = table_cls(title=f"{shots}-shot evaluation, {how} (AUROC/AUPRO/F1 in %)")
    for col in ("category", "refs", "evaluated (anom.)", "image AUROC", "pixel AUROC",
                "AUPRO@0.3", "F1-max", "s"):  # fmt: skip
        t.add_column(col, justify="left" if col == "category" else "right")
    for r in results:
        head = [r.category, f"{r.n_references} ({r.reference_source})",
                f"{r.n_evaluated} ({r.n_anomalous})"]  # fmt: skip
        if r.skipped is not None:
            t.add_row(*head, f"skipped: {r.skipped}", "", "", "", f"{r.seconds:.0f}")
            continue
        t.add_row(*head, _fmt(r.image_auroc), _fmt(r.pixel_auroc), _fmt(r.aupro),
                  _fmt(r.f1_max), f"{r.seconds:.0f}")  # fmt: skip
    t.add_row("mean", "", "", *(_fmt(mean[k]) for k in ("image_auroc", "pixel_auroc", "aupro",
              "f1_max")), f"{mean['seconds']:.0f}", style="bold")  # fmt: skip
    return t
