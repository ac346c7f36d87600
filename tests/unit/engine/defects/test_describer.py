"""Region describer: best + runner-up with sane confidences, fine-tuning learns kinds,
artefact round trip, vocabularies. Tiny synthetic shapes: no encoder, no text model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.defects.describer import RegionDescriber, describe_regions, mask_stats
from engine.defects.describer_artifacts import load_describer, save_describer
from engine.defects.vocabulary import Vocabulary, load_vocabulary, parse_vocabulary
from engine.training.describer_train import (
    DescriberTrainConfig,
    RegionSet,
    predict_kinds,
    supcon_loss,
    train_describer,
)

pytestmark = pytest.mark.unit

KINDS = ["crack", "hole", "stain"]
PHRASES = ["a crack", "a cracked part", "a hole", "a puncture", "a stain", "a dirty spot"]
OWNER = [0, 0, 1, 1, 2, 2]


def _describer(seed: int = 0, channels: int = 8) -> RegionDescriber:
    torch.manual_seed(seed)
    return RegionDescriber(channels, 16, torch.randn(len(PHRASES), 16), OWNER, joint_dim=12,
                           hidden=32, rank=4, grid=10)


def _masks() -> np.ndarray:
    masks = np.zeros((2, 40, 40), bool)
    masks[0, 2:10, 2:10] = True
    masks[1, 30:38, 20:40] = True
    return masks


def test_best_and_runner_up_with_confidences() -> None:
    d = _describer()
    out = describe_regions(d, torch.randn(1, 8, 10, 10), _masks(), KINDS, PHRASES)
    assert len(out) == 2
    for x in out:
        assert x.kind in KINDS and x.runner_up_kind in KINDS and x.kind != x.runner_up_kind
        assert PHRASES.index(x.text) in [i for i, o in enumerate(OWNER) if KINDS[o] == x.kind]
        assert 1 / 3 - 1e-6 <= x.confidence <= 1.0
        assert 0.0 <= x.runner_up_confidence <= x.confidence
        assert x.confidence + x.runner_up_confidence <= 1.0 + 1e-6
        assert x.embedding.shape == (12,)
        assert np.linalg.norm(x.embedding) == pytest.approx(1.0, abs=1e-5)
    assert describe_regions(d, torch.randn(1, 8, 10, 10), np.zeros((0, 40, 40), bool), KINDS,
                            PHRASES) == []  # fmt: skip


def test_mask_stats_see_shape_and_position() -> None:
    s = mask_stats(torch.from_numpy(_masks()))
    assert s.shape == (2, 7)
    assert s[0, 4] < 0.2 and s[1, 5] > 0.8  # centroid x of the first, y of the second
    assert s[1, 6] == 0  # the second region touches the right border


def _toy_set(n_per_kind: int = 12, seed: int = 0) -> RegionSet:
    """Each kind is a bright spot in its own channel, anywhere in the frame."""
    rng = np.random.default_rng(seed)
    feats, masks, labels = [], [], []
    for k in range(3):
        for _ in range(n_per_kind):
            f = torch.randn(8, 10, 10) * 0.3
            y, x = rng.integers(1, 8, size=2)
            f[k, y : y + 2, x : x + 2] += 3.0
            m = torch.zeros(20, 20, dtype=torch.bool)
            m[2 * y : 2 * y + 4, 2 * x : 2 * x + 4] = True
            feats.append(f)
            masks.append(m)
            labels.append(k)
    n = len(labels)
    return RegionSet(KINDS, [Path(f"{i}.png") for i in range(n)], torch.stack(feats).half(),
                     torch.arange(n), torch.stack(masks), torch.tensor(labels))  # fmt: skip


def test_fine_tuning_beats_the_untuned_describer_on_held_out_regions() -> None:
    train, test = _toy_set(seed=0), _toy_set(seed=1)
    d = _describer()
    before = (predict_kinds(d, test) == test.labels.numpy()).mean()
    metrics = train_describer(d, train, OWNER, DescriberTrainConfig(steps=60, batch_size=24),
                              progress=False)  # fmt: skip
    after = (predict_kinds(d, test) == test.labels.numpy()).mean()
    assert after >= 0.9 and after > before
    assert metrics["weight_decay"] == 1e-4 and metrics["lr_pretrained"] < metrics["lr_new"]


def test_supcon_prefers_aligned_embeddings() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    t = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [1, 0.1], [0, 1], [0.1, 1]]), dim=1)
    assert supcon_loss(t, t, labels, 0.1) < supcon_loss(t, t.flip(0), labels, 0.1)


class _FakeText:
    def encode(self, texts: list[str]) -> torch.Tensor:
        return torch.stack([torch.full((16,), float(len(t))) for t in texts]) / 10


def test_artifact_round_trip_and_edited_vocabulary(tmp_path: Path) -> None:
    d = _describer()
    vocab = Vocabulary("toy", "part", {k: [p for p, o in zip(PHRASES, OWNER, strict=True)
                                           if KINDS[o] == k] for k in KINDS})  # fmt: skip
    save_describer(tmp_path, d, vocab, {"input_size": 320, "pool": 3})
    loaded = load_describer(tmp_path, text_encoder=_FakeText())
    x, m = torch.randn(2, 8, 10, 10), torch.from_numpy(_masks())
    assert torch.allclose(loaded.describer(x, m), d(x, m))
    assert loaded.vocabulary.keys == KINDS
    data = json.loads((tmp_path / "vocabulary.json").read_text())
    data["kinds"]["dent"] = ["a dent in the <object>"]  # an operator adds a kind
    (tmp_path / "vocabulary.json").write_text(json.dumps(data))
    edited = load_describer(tmp_path, text_encoder=_FakeText())
    assert edited.vocabulary.kinds["dent"] == ["a dent in the part"]
    assert edited.describer(x, m).shape == (2, 4)


def test_shipped_vocabularies_and_user_override(tmp_path: Path) -> None:
    for cat, kinds in (("magnetic_tile", {"blowhole", "break", "crack", "fray", "uneven"}),
                       ("bottle", {"broken_large", "broken_small", "contamination"}),
                       ("grid", {"bent", "broken", "glue", "metal_contamination", "thread"})):
        assert set(load_vocabulary(cat).keys) == kinds
    assert set(load_vocabulary("capsule").keys) >= {"crack", "poke", "scratch", "squeeze"}
    default = load_vocabulary("wooden_pallet")
    assert "a crack in the wooden pallet" in default.kinds["crack"]
    user = tmp_path / "v.json"
    user.write_text(json.dumps({"kinds": {"chip": "a chip on the <object>"}}))
    assert load_vocabulary("bottle", path=user).kinds == {"chip": ["a chip on the bottle"]}
    with pytest.raises(ValueError):
        parse_vocabulary({"kinds": {}}, "x")
