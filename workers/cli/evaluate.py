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
    context: Annotated[bool | None, typer.Option(
        "--context/--no-context",
        help="Score as the worker does: each frame (seeded order, in batches) also against "
             "the line context of the frames before it. Default: CLAD_LINE_CONTEXT (on).",
    )] = None,
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
    line = _line_context(ctx, context)
    results = []
    for cat in cats:
        factory = None
        if model is not None:
            factory, cfg = _trained_factory(model, cat.name, cfg)
        res = evaluate_category(
            cat, shots, cfg, encoder=encoder, model_factory=factory,
            progress=lambda it, name=cat.name: track(it, description=f"{name:>14}"),
            context=line,
        )  # fmt: skip
        results.append(res)
    console.print(_table(results, mean_row(results), shots, Table, line is not None))
    if json_out is not None:
        payload = {
            "data": str(data), "shots": shots, "model": str(model) if model else None,
            "line_context": None if line is None else line.model_dump(mode="json"),
            "config": cfg.model_dump(mode="json"),
            "categories": [r.as_dict() for r in results], "mean": mean_row(results),
        }  # fmt: skip
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(payload, indent=2, default=_nan_to_none) + "\n")
        console.print(f"wrote {json_out}")


def _line_context(ctx: typer.Context, flag: bool | None) -> object | None:
    """The worker's ContextConfig (from CLAD_LINE_CONTEXT*), or None when switched off."""
    from workers.cli.main import settings_from
    from workers.streaming.scoring import context_config

    settings = settings_from(ctx).context
    if flag is not None:
        settings = settings.model_copy(update={"line_context": flag})
    return context_config(settings)


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
    return None if isinstance(x, float) and math.isnan(x) else x


def _fmt(v: float) -> str:
    return "—" if v != v else f"{v:.1f}"


def _table(results: list, mean: dict, shots: int, table_cls: type, context: bool) -> object:
    how = "with online line context" if context else "references only"
    t = table_cls(title=f"{shots}-shot evaluation, {how} (AUROC/AUPRO/F1 in %)")
    for col in ("category", "refs", "evaluated (anom.)", "image AUROC", "pixel AUROC",
                "AUPRO@0.3", "F1-max", "s"):  # fmt: skip
        t.add_column(col, justify="left" if col == "category" else "right")
    for r in results:
        t.add_row(
            r.category, f"{r.n_references} ({r.reference_source})",
            f"{r.n_evaluated} ({r.n_anomalous})", _fmt(r.image_auroc), _fmt(r.pixel_auroc),
            _fmt(r.aupro), _fmt(r.f1_max), f"{r.seconds:.0f}",
        )  # fmt: skip
    t.add_row("mean", "", "", *(_fmt(mean[k]) for k in ("image_auroc", "pixel_auroc", "aupro",
              "f1_max")), f"{mean['seconds']:.0f}", style="bold")  # fmt: skip
    return t
