"""`clad describe` and `clad train-describer`: defect regions in words, from the shell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Opt = typer.Option


def _category_dir(data: Path, category: str) -> Path:
    cat = data / category
    if (cat / "test").is_dir():
        return cat
    if (data / "test").is_dir() and data.name == category:
        return data
    raise typer.BadParameter(f"no MVTec-layout category {category!r} under {data}")


def train_describer_cmd(
    data: Annotated[Path, Opt("--data", help="Folder with CATEGORY/{test,ground_truth}.")],
    category: Annotated[str, Opt("--category", "-c")],
    model: Annotated[Path | None, Opt("--model", help="Model dir (or version dir): the "
                                      "describer is saved into its latest version.")] = None,
    out: Annotated[Path | None, Opt("--out", help="Where to save without --model.")] = None,
    vocabulary: Annotated[Path | None, Opt("--vocabulary", help="Vocabulary JSON.")] = None,
    steps: Annotated[int, Opt("--steps")] = 300,
    seed: Annotated[int, Opt("--seed")] = 0,
) -> None:
    """Fine-tune the region describer on every ground-truth region of CATEGORY's defects.

    Its kinds are CATEGORY's defect folders (test/KIND with ground_truth/KIND masks);
    --vocabulary (or the model's or a shipped vocabulary) lends phrasings to the kinds it
    knows and is never required."""
    import torch

    from engine.defects.describer import RegionDescriber
    from engine.defects.describer_artifacts import init_from_clad, save_describer
    from engine.defects.vocabulary import Vocabulary, load_vocabulary
    from engine.scoring.artifacts import load_model, resolve
    from engine.scoring.text_encoder import load_text_encoder
    from engine.training.datasets import split_category
    from engine.training.describer_train import (
        DescriberTrainConfig,
        build_region_set,
        dataset_vocabulary,
        feature_settings,
        make_feature_cache,
        train_describer,
    )

    cat = _category_dir(data, category)
    target, runtime = out, None
    if model is not None:
        target = resolve(model, category)
        runtime = load_model(target).runtime
    if target is None:
        raise typer.BadParameter("pass --model DIR or --out DIR")
    # the kinds are the category's defect folders; a vocabulary file only lends phrasings
    seeds = load_vocabulary(category, path=vocabulary, model_dir=target if model else None)
    samples = split_category(cat, 0).evaluated
    try:
        vocab = dataset_vocabulary(category, samples, seed=seeds)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    defects = [s for s in samples if s.label == 1]
    unmasked = sorted({s.kind for s in defects if s.mask_path is None})
    if unmasked:
        typer.echo(f"skipped {sum(s.mask_path is None for s in defects)} defect image(s) "
                   f"without a ground-truth mask (kinds: {', '.join(unmasked)})")
    cache = make_feature_cache(runtime=runtime)
    regions = build_region_set(samples, vocab.keys, cache)
    counts = {k: int((regions.labels == i).sum()) for i, k in enumerate(vocab.keys)}
    empty = [k for k, n in counts.items() if n == 0]
    if empty:  # masks too small to hold a region: a kind with no example is not learnt
        typer.echo(f"skipped {len(empty)} kind(s) with no region: {', '.join(empty)}")
        vocab = Vocabulary(vocab.category, vocab.object_name,
                           {k: v for k, v in vocab.kinds.items() if k not in empty})
        regions = build_region_set(samples, vocab.keys, cache, progress=False)
    typer.echo("kinds: " + ", ".join(f"{k} ({counts[k]} regions)" for k in vocab.keys))
    phrases, owner = vocab.phrases()
    torch.manual_seed(seed)
    text = load_text_encoder().encode(phrases)
    describer = RegionDescriber(int(regions.features.shape[1]), int(text.shape[1]), text, owner)
    pretrained = init_from_clad(describer, getattr(runtime, "text_branch", None))
    metrics = train_describer(describer, regions, owner, DescriberTrainConfig(steps=steps,
                              seed=seed))  # fmt: skip
    metrics["init_from_clad"] = pretrained
    save_describer(target, describer, vocab, feature_settings(cache), metrics)
    typer.echo(f"{len(regions.labels)} regions of {len(regions.images)} images, "
               f"loss {metrics['final_loss']:.3f}; describer saved in {target}")  # fmt: skip


def describe_cmd(
    image: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    mask: Annotated[Path | None, Opt("--mask", help="Binary mask PNG: describe its regions "
                                     "instead of the model's thresholded map.")] = None,
    model: Annotated[Path | None, Opt("--model", help="Model (version) directory.")] = None,
    category: Annotated[str | None, Opt("--category", "-c")] = None,
    describer_dir: Annotated[Path | None, Opt("--describer", help="Describer dir "
                                              "(default: the model's version dir).")] = None,
    threshold: Annotated[float | None, Opt("--threshold", help="Region (pixel) "
                                           "threshold (default: the model's).")] = None,
    min_area: Annotated[int, Opt("--min-area")] = 16,
    out: Annotated[Path, Opt("--out")] = Path("overlay.png"),
    reference: Annotated[list[Path] | None, Opt(
        "--reference", exists=True, dir_okay=False,
        help="A normal image of the same product (repeat for more): a k-shot model is "
             "built from them to find the regions, when there is no --model.")] = None,
    mm_per_px: Annotated[float | None, Opt(
        "--mm-per-px", min=0.0, help="The camera's millimetres per pixel: sizes of unnamed "
                                     "regions in mm too.")] = None,
) -> None:
    """Print IMAGE's defect regions with descriptions and write an overlay PNG.

    Regions: --mask, else the thresholded map of --model or of a k-shot model built from
    --reference images. Words: the product's describer (--describer, or the model's),
    else the default describer of generic defect kinds."""
    from workers.cli.describe_image import describe_image

    try:
        lines, png = describe_image(image, mask=mask, model=model, category=category,
                                    describer_dir=describer_dir, threshold=threshold,
                                    min_area=min_area, references=reference or [],
                                    mm_per_px=mm_per_px or None)  # fmt: skip
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    for line in lines:
        typer.echo(line)
    out.write_bytes(png)
    typer.echo(f"overlay written to {out}")


def register(app: typer.Typer) -> None:
    app.command("describe")(describe_cmd)
    app.command("train-describer")(train_describer_cmd)
