"""`clad train`: train one product's CLAD heads and write a versioned model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the `train` command to the `clad` CLI."""

    @app.command("train")
    def train(
        data: Annotated[Path, typer.Option(help="MVTec-layout folder (or one category)")],
        category: Annotated[str, typer.Option(help="product / category folder name")],
        out: Annotated[Path, typer.Option(help="model directory root")] = Path("models"),
        epochs: Annotated[int, typer.Option(min=1)] = 15,
        seed: int = 0,
        shots: Annotated[int, typer.Option(min=0, help="memory-bank references")] = 1,
        resume: Annotated[bool, typer.Option(help="continue from the last epoch")] = False,
        text_backend: Annotated[str, typer.Option(help="minilm | clip")] = "minilm",
        text_path: Annotated[str | None, typer.Option(help="HF CLIP directory")] = None,
    ) -> None:
        """Train on normals + synthetic anomalies, calibrate, save <out>/<category>/<version>."""
        # imported here: `clad --help` must not pay for torch and the encoders
        from engine.errors import MissingWeightsError
        from engine.scoring.text_encoder import TextEncoderConfig
        from engine.training.train import TrainConfig
        from engine.training.train_run import train_product

        if text_backend not in ("minilm", "clip"):
            raise typer.BadParameter("--text-backend must be minilm or clip")
        try:
            version_dir = train_product(
                data, category, out, TrainConfig(epochs=epochs, seed=seed),
                text_cfg=TextEncoderConfig(text_backend, text_path),  # type: ignore[arg-type]
                shots=shots, resume=resume,
            )  # fmt: skip
        except (MissingWeightsError, FileNotFoundError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        typer.echo(f"model written to {version_dir}")
