"""TensorRT engine cache: keyed by GPU, compute capability, TRT version, precision, batch.

Pure Python: the build is a stand-in function, so these run without tensorrt; also
the pre-build check of documented TensorRT limits.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from engine.runtime.engine_cache import EngineKey, cached_keys, engine_path, load_or_build

pytestmark = pytest.mark.unit

KEY = EngineKey(model_hash="abc123", gpu_name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0),
                tensorrt_version="10.3.0", precision="fp16", max_batch=32, opt_batch=8,
                frame_size=(320, 320))  # fmt: skip


class Builder:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return f"engine-{self.calls}".encode()


def test_built_once_then_read_from_cache(tmp_path: Path) -> None:
    build, messages = Builder(), []
    data, path = load_or_build(tmp_path, KEY, build, messages.append)
    assert data == b"engine-1" and path == engine_path(tmp_path, KEY) and path.is_file()
    assert path.parent == tmp_path / "runtime" / "engines"
    again, _ = load_or_build(tmp_path, KEY, build, messages.append)
    assert again == b"engine-1" and build.calls == 1
    assert any("building" in m for m in messages) and any("cached" in m for m in messages)
    assert cached_keys(tmp_path) == [KEY]
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["key"]["tensorrt_version"] == "10.3.0" and meta["bytes"] == len(data)


@pytest.mark.parametrize(
    "change",
    [
        {"gpu_name": "NVIDIA L4"},
        {"compute_capability": (8, 9)},
        {"tensorrt_version": "10.4.0"},
        {"precision": "fp32"},
        {"max_batch": 128},
        {"model_hash": "def456"},
    ],
)
def test_key_change_rebuilds(tmp_path: Path, change: dict[str, object]) -> None:
    build, messages = Builder(), []
    load_or_build(tmp_path, KEY, build, messages.append)
    other = dataclasses.replace(KEY, **change)  # type: ignore[arg-type]
    assert other.slug() != KEY.slug()
    data, path = load_or_build(tmp_path, other, build, messages.append)
    assert data == b"engine-2" and build.calls == 2
    assert engine_path(tmp_path, KEY).is_file()  # another GPU type may still use the old one
    if "model_hash" not in change:  # same weights: the message names what changed
        assert any(next(iter(change)) in m for m in messages)


def test_no_version_dir_builds_without_writing(tmp_path: Path) -> None:
    build = Builder()
    data, path = load_or_build(None, KEY, build)
    assert data == b"engine-1" and path is None


def test_failed_build_leaves_no_engine(tmp_path: Path) -> None:
    def broken() -> bytes:
        raise RuntimeError("parser error")

    with pytest.raises(RuntimeError, match="parser error"):
        load_or_build(tmp_path, KEY, broken)
    assert not engine_path(tmp_path, KEY).exists() and cached_keys(tmp_path) == []


def test_slug_is_a_safe_file_name() -> None:
    slug = KEY.slug()
    assert "/" not in slug and " " not in slug
    assert slug == "abc123-nvidia-h100-80gb-hbm3-sm90-trt10.3.0-fp16-b8of32-320x320"


def _topk_graph(k: int) -> bytes:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], name="/TopK")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5000])],
        [helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, k]),
         helper.make_tensor_value_info("i", TensorProto.INT64, [1, k])],
        initializer=[numpy_helper.from_array(np.array([k], np.int64), "k")],
    )  # fmt: skip
    return helper.make_model(graph).SerializeToString()


def test_topk_beyond_tensorrt_limit_is_refused_before_building() -> None:
    from engine.runtime.tensorrt_build import check_tensorrt_limits

    check_tensorrt_limits(_topk_graph(1024))  # 1 % of 320 x 320: fine
    with pytest.raises(ValueError, match=r"k=4096, TensorRT supports k <= 3840"):
        check_tensorrt_limits(_topk_graph(4096))  # 1 % of 640 x 640
