"""CladRuntime: shapes, dtypes, batch independence, monotonicity, text fusion, ONNX."""

import math

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from engine.scoring.builder import ScoringConfig, build_runtime
from engine.scoring.runtime_model import AnomalyOutput, CladRuntime, TextBranch

pytestmark = pytest.mark.unit
CFG = ScoringConfig(input_size=96, aug_shifts=(), sigma=2.0, bank_share=1.0)


def _texture(seed: int, size: int = 96) -> np.ndarray:
    """A regular stripe texture with a little noise (uint8 HWC RGB)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    base = 128 + 60 * np.sin(xx / 3.0) + rng.normal(0, 4, (size, size))
    return np.repeat(base.clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)


@pytest.fixture(scope="module")
def runtime() -> CladRuntime:
    torch.manual_seed(0)
    return build_runtime([_texture(0)], CFG)


def test_output_shapes_and_dtypes(runtime: CladRuntime) -> None:
    frames = torch.from_numpy(np.stack([_texture(1), _texture(2), _texture(3)]))
    frames = torch.nn.functional.pad(frames, (0, 0, 0, 10, 0, 20))  # 116 x 106 frames
    with torch.no_grad():
        out = runtime(frames)
    assert isinstance(out, AnomalyOutput)
    assert out.scores.shape == (3,) and out.scores.dtype == torch.float32
    assert out.maps.shape == (3, 116, 106) and out.maps.dtype == torch.float32


def test_batch_independence(runtime: CladRuntime) -> None:
    frames = torch.from_numpy(np.stack([_texture(i) for i in range(4)]))
    with torch.no_grad():
        together = runtime(frames)
        alone = [runtime(frames[i : i + 1]) for i in range(4)]
    torch.testing.assert_close(together.scores, torch.cat([a.scores for a in alone]))
    torch.testing.assert_close(together.maps, torch.cat([a.maps for a in alone]))


def test_pasted_defect_scores_higher(runtime: CladRuntime) -> None:
    clean = _texture(5)
    bad = clean.copy()
    cv2.circle(bad, (60, 40), 7, (20, 20, 20), -1)
    with torch.no_grad():
        out = runtime(torch.from_numpy(np.stack([clean, bad])))
    assert out.scores[1] > out.scores[0]
    peak = np.unravel_index(int(out.maps[1].argmax()), out.maps[1].shape)
    assert abs(peak[0] - 40) < 12 and abs(peak[1] - 60) < 12


def _like(rt: CladRuntime, scale: float | None = None, **kw: object) -> CladRuntime:
    """A runtime with `rt`'s encoder and banks (image and pixel) and other options."""
    return CladRuntime(rt.encoder, rt.bank, float(rt.scale) if scale is None else scale,
                       input_size=96, sigma=2.0, pixel_pool=rt.pixel_pool,
                       pixel_bank=rt.pixel_bank, pixel_scale=float(rt.pixel_scale), **kw)


def test_scores_are_divided_by_the_reference_scale(runtime: CladRuntime) -> None:
    frames = torch.from_numpy(np.stack([_texture(7)]))
    doubled = _like(runtime, 2 * float(runtime.scale))
    assert float(runtime.scale) > 0
    with torch.no_grad():
        torch.testing.assert_close(doubled(frames).scores, runtime(frames).scores / 2)


class _ConstText(nn.Module):
    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        f = features[0]
        return torch.full((f.shape[0],), 0.5), torch.ones(f.shape[0], *f.shape[-2:])


def test_text_branch_fusion(runtime: CladRuntime) -> None:
    branch = _ConstText()
    assert isinstance(branch, TextBranch)
    frames = torch.from_numpy(np.stack([_texture(1)]))
    fused = _like(runtime, text_branch=branch, w_text_pixel=0.5, w_text_image=2.0)
    with torch.no_grad():
        base, out = runtime(frames), fused(frames)
    # constant text map adds 0.5 everywhere, the image term adds 2.0 * 0.5
    torch.testing.assert_close(out.maps, base.maps + 0.5, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.scores, base.scores + 1.5, atol=1e-4, rtol=0)


def test_pixel_map_from_its_own_unpooled_bank(runtime: CladRuntime) -> None:
    # default config: image score from 3x3-pooled embeddings, pixel map from unpooled ones
    assert runtime.split_maps and runtime.pool == 3 and runtime.pixel_pool == 1
    assert runtime.pixel_bank.shape == runtime.bank.shape and float(runtime.pixel_scale) > 0
    frames = torch.from_numpy(np.stack([_texture(4), _texture(6)]))
    one_map = CladRuntime(runtime.encoder, runtime.bank, float(runtime.scale), input_size=96,
                          sigma=2.0)  # no pixel bank: the map is the image map
    with torch.no_grad():
        split, single = runtime(frames), one_map(frames)
    torch.testing.assert_close(split.scores, single.scores)  # image score unchanged
    assert split.maps.shape == single.maps.shape == (2, 96, 96)
    assert not torch.allclose(split.maps, single.maps)
    # and the single map is the one the image score is the top-k mean of
    top = single.maps.reshape(2, -1).topk(one_map.topk, dim=1).values.mean(dim=1)
    torch.testing.assert_close(top, single.scores)


def test_no_pixel_pool_builds_one_bank() -> None:
    rt = build_runtime([_texture(0)], CFG.model_copy(update={"pixel_pool": None}))
    assert not rt.split_maps and rt.pixel_bank.shape[0] == 0


def test_bank_share_keeps_that_share_of_both_banks(runtime: CladRuntime) -> None:
    """bank_share: one core-set of the image bank, the pixel bank cut to the same rows;
    the scale recomputed on the cut bank, so normal still scores ~1 and a defect stands out."""
    full_rows = runtime.bank.shape[0]
    assert full_rows == 36 * 3  # 96 px at stride 16: 6 x 6 patches, of 3 views (no shifts)
    cut = build_runtime([_texture(0)], CFG.model_copy(update={"bank_share": 0.25}))
    assert cut.bank.shape[0] == cut.pixel_bank.shape[0] == math.ceil(0.25 * full_rows)
    # every kept row is one of the full bank's rows, image and pixel bank alike
    picked = (cut.bank @ runtime.bank.T).max(dim=1).values
    assert torch.allclose(picked, torch.ones_like(picked), atol=1e-5)
    clean, bad = _texture(5), _texture(6)
    bad[30:50, 30:50] = 0
    with torch.no_grad():
        s = cut(torch.from_numpy(np.stack([clean, bad]))).scores
    assert s[0] < 2.0 and s[1] > 2 * s[0]
    with pytest.raises(ValueError):
        ScoringConfig(bank_share=0.0)


def test_a_config_saved_before_bank_share_keeps_the_whole_bank() -> None:
    stored = CFG.model_dump(mode="json")
    del stored["bank_share"]
    assert ScoringConfig.from_stored(stored).bank_share == 1.0
    assert ScoringConfig().bank_share == 0.25  # new models: a quarter of the rows
    kept = ScoringConfig(bank_share=0.5).model_dump(mode="json")
    assert ScoringConfig.from_stored(kept).bank_share == 0.5


def test_state_dict_without_pixel_bank_loads(runtime: CladRuntime) -> None:
    # models saved before the pixel bank existed: load with one map for both
    state = {k: v for k, v in runtime.state_dict().items() if not k.startswith("pixel_")}
    rt = CladRuntime(runtime.encoder, torch.zeros(1, runtime.bank.shape[1]), 1.0,
                     input_size=96, sigma=2.0, pixel_pool=1)
    rt.load_state_dict(state)
    assert rt.bank.shape == runtime.bank.shape and not rt.split_maps


def test_zero_shots_needs_text_branch() -> None:
    with pytest.raises(ValueError, match="trained model"):
        build_runtime([], CFG)


def test_onnx_export_dynamic_batch(runtime: CladRuntime, tmp_path: object) -> None:
    ort = pytest.importorskip("onnxruntime")
    path = str(tmp_path / "rt.onnx")
    x = torch.from_numpy(np.stack([_texture(1), _texture(2)]))
    torch.onnx.export(runtime, (x,), path, input_names=["frames"], output_names=["s", "m"],
                      dynamic_axes={"frames": {0: "n"}, "s": {0: "n"}, "m": {0: "n"}},
                      opset_version=17, dynamo=False)
    x3 = torch.from_numpy(np.stack([_texture(i) for i in range(3)]))
    s, m = ort.InferenceSession(path).run(None, {"frames": x3.numpy()})
    with torch.no_grad():
        ref = runtime(x3)
    np.testing.assert_allclose(s, ref.scores.numpy(), atol=1e-4)
    np.testing.assert_allclose(m, ref.maps.numpy(), atol=1e-3)


@pytest.mark.parametrize(
    ("sigma", "height", "width"), [(2.0, 96, 96), (2.0, 131, 77), (0.0, 96, 96), (4.0, 200, 150)]
)
def test_map_resize_matches_the_stepwise_chain(sigma: float, height: int, width: int) -> None:
    from engine.scoring.runtime_model import gaussian_kernel1d, resize_map_stepwise

    rt = build_runtime([_texture(0)], CFG.model_copy(update={"sigma": sigma}))
    grid = torch.rand(2, 12, 12, generator=torch.Generator().manual_seed(1)) * 3
    gauss = gaussian_kernel1d(sigma) if sigma > 0 else torch.ones(1)
    want = resize_map_stepwise(grid, 96, gauss, height, width)
    got = rt.resize_map(grid, height, width)
    assert got.shape == (2, height, width)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the smoothing is there: a single hot cell spreads, and more with a larger sigma
    spike = torch.zeros(1, 12, 12)
    spike[0, 6, 6] = 1.0
    hot = rt.resize_map(spike, 96, 96)
    assert (hot > 0.01).sum() > (64 if sigma > 0 else 0)


def test_axis_operators_are_cached_per_kernel_and_handed_out_as_copies() -> None:
    from engine.scoring.runtime_model import axis_operator, gaussian_kernel1d

    g2, g4 = gaussian_kernel1d(2.0), gaussian_kernel1d(4.0)
    first = axis_operator(12, 96, 50, g2)
    first.fill_(0.0)  # a caller writing into its matrix must not change the next one's
    again = axis_operator(12, 96, 50, g2)
    assert again.shape == (50, 12) and again.sum() > 0
    torch.testing.assert_close(again.sum(dim=1), torch.ones(50))  # rows of weights sum to 1
    assert not torch.allclose(axis_operator(12, 96, 50, g4), again)  # the kernel is in the key
