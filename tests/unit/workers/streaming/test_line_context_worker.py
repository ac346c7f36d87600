"""The worker's line context: per product, bounded, rebuilt with a reload, guarded
against a defect burst, and its drift exported as a Prometheus gauge."""

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.scoring.artifacts import ModelMetadata, save_model
from engine.scoring.builder import ScoringConfig
from engine.scoring.calibration import Threshold
from engine.scoring.line_context import ContextConfig
from engine.scoring.runtime_model import CladRuntime
from pipeline.settings import LineContextSettings
from tests.line_context_support import SIZE, stripe_frame, stripe_runtime
from workers.streaming.metrics import WorkerMetrics
from workers.streaming.scoring import CladRuntimeEngine, context_config, load_trained

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def runtime() -> CladRuntime:
    return stripe_runtime()


def _engine(rt: CladRuntime, version: str = "v1", frames: int = 64) -> CladRuntimeEngine:
    # lead off: under this threshold every frame is normal on its reference score, and
    # these tests watch the context's own scores (the lead: test_context_index.py)
    return CladRuntimeEngine(rt, threshold=1e9, version=version,
                             context=ContextConfig(max_frames=frames, lead=False),
                             clock=lambda: 0.0)


def _feed(engine: CladRuntimeEngine, frames: list[np.ndarray], batch: int = 10) -> list[float]:
    out: list[float] = []
    for i in range(0, len(frames), batch):
        scores, maps = engine.infer(np.stack(frames[i : i + batch]))
        assert maps.shape == (len(scores), SIZE, SIZE)
        out += scores.tolist()
    return out


def test_settings_switch_the_context() -> None:
    assert context_config(LineContextSettings(line_context=False)) is None
    cfg = context_config(LineContextSettings(line_context_frames=16, line_context_floor=0.5,
                                             line_context_search_frames=4))  # fmt: skip
    assert isinstance(cfg, ContextConfig) and cfg.max_frames == 16 and cfg.floor == 0.5
    assert cfg.search_frames == 4
    assert context_config(LineContextSettings()).search_frames == ContextConfig().search_frames  # type: ignore[union-attr]
    assert context_config(LineContextSettings()).lead is True  # type: ignore[union-attr]
    assert context_config(LineContextSettings(line_context_lead=False)).lead is False  # type: ignore[union-attr]


def test_without_context_infer_is_the_plain_runtime(runtime: CladRuntime) -> None:
    plain = CladRuntimeEngine(runtime, threshold=1.0, version="v1")
    assert plain.line_context is None
    x = np.stack([stripe_frame(1), stripe_frame(2, defect=True)])
    with torch.no_grad():
        want = runtime(torch.from_numpy(x))
    scores, maps = plain.infer(x)
    np.testing.assert_allclose(scores, want.scores.numpy(), rtol=1e-6)


def test_context_is_bounded_and_per_product(runtime: CladRuntime) -> None:
    a, b = _engine(runtime, frames=12), _engine(runtime, frames=12)
    _feed(a, [stripe_frame(s) for s in range(10, 40)])
    assert len(a.line_context) == 12  # 30 normal frames, bounded at 12
    assert len(b.line_context) == 0  # product b's context never saw product a's frames
    first_b = _feed(b, [stripe_frame(99)])
    again_a = _feed(a, [stripe_frame(99)])
    assert again_a[0] < first_b[0]  # a's context vouches for the frame, b has none yet


def test_reload_rebuilds_the_context(runtime: CladRuntime) -> None:
    old = _engine(runtime, "v1")
    _feed(old, [stripe_frame(s) for s in range(10, 30)])
    new = _engine(runtime, "v2")  # what the model watcher swaps in
    assert len(new.line_context) == 0  # embeddings of another model are not reused
    _feed(new, [stripe_frame(s) for s in range(30, 50)])
    assert 5 <= len(new.line_context) <= 20 and len(old.line_context) >= 5
    warm = _feed(new, [stripe_frame(77)])[0]
    cold = _feed(_engine(runtime, "v3"), [stripe_frame(77)])[0]
    assert warm < cold  # scoring with context again after the reload


def test_defect_burst_stays_high_and_raises_the_drift_gauge(runtime: CladRuntime) -> None:
    """30 consecutive frames of one defect after 100 normal ones."""
    engine, metrics = _engine(runtime), WorkerMetrics()
    normal = _feed(engine, [stripe_frame(100 + s) for s in range(100)])
    metrics.record_context("part", engine)
    before = metrics.registry.get_sample_value("clad_context_drift", {"product": "part"})
    burst = _feed(engine, [stripe_frame(300 + s, defect=True) for s in range(30)])
    metrics.record_context("part", engine)
    after = metrics.registry.get_sample_value("clad_context_drift", {"product": "part"})
    assert min(burst) > max(normal[50:])
    assert burst[-1] >= 0.8 * burst[0]
    assert before is not None and before <= 0.1
    assert after is not None and after >= 0.5
    frames = metrics.registry.get_sample_value("clad_context_frames", {"product": "part"})
    assert frames is not None and 30 <= frames <= 64  # about half the normals are admitted


@pytest.mark.parametrize(("backend", "requests"),
                         [("onnxruntime", None), ("onnxruntime", 2), ("openvino", 2)])
def test_cpu_context_stage_matches_torch(tmp_path: Path, runtime: CladRuntime, backend: str,
                                         requests: int | None) -> None:
    """The worker's CPU paths with context: embeddings from a second graph (under the
    backend's runtime, `requests` in flight), scores and maps as the torch path's."""
    if backend == "openvino":
        pytest.importorskip("openvino")
    save_model(runtime, tmp_path, ModelMetadata(
        category="part", scoring=ScoringConfig(input_size=SIZE, sigma=2.0),
        threshold=Threshold(1e9, "false_alarm_rate", 2, 0), version="v1"))
    cfg = ContextConfig()
    _, ort = load_trained(tmp_path, "part", backend=backend, context=cfg, requests=requests)
    _, ref = load_trained(tmp_path, "part", backend="torch", context=cfg)
    assert ort.context_stage is not None and ref.context_stage is None
    assert ort.context_stage.name == f"{backend}-cpu-context"
    if requests is not None:
        assert ort.context_stage.requests == requests
    assert list((tmp_path / "part" / "v1" / "runtime").glob("context-*.onnx"))
    frames = [stripe_frame(s) for s in range(10, 30)] + [stripe_frame(5, defect=True)]
    got, want = _feed(ort, frames, batch=7), _feed(ref, frames, batch=7)
    np.testing.assert_allclose(got, want, rtol=1e-3)
    assert len(ort.line_context) == len(ref.line_context) > 3  # context was used
    scores, maps = ort.infer(np.stack(frames[-2:]))
    want_scores, want_maps = ref.infer(np.stack(frames[-2:]))
    np.testing.assert_allclose(scores, want_scores, rtol=1e-3)
    np.testing.assert_allclose(maps, want_maps, atol=1e-3)


def test_drift_event_once_per_episode_on_the_verdicts_topic() -> None:
    import json
    from types import SimpleNamespace

    from pipeline.settings import Settings
    from workers.streaming.worker import InferenceWorker

    worker = SimpleNamespace(settings=Settings(), _drifting=set())
    line = SimpleNamespace(drift=0.1)
    engine = SimpleNamespace(line_context=line, version="v7")
    event = lambda: InferenceWorker._drift_event(worker, "part", engine)  # type: ignore[arg-type]  # noqa: E731
    assert event() is None
    line.drift = 0.6
    first = event()
    assert first is not None and first["key"] == b"part"
    payload = json.loads(first["value"])
    assert payload["event"] == "context_drift" and payload["drift"] == 0.6
    assert payload["model_version"] == "v7"
    assert event() is None  # still drifting: no second event
    line.drift = 0.3
    assert event() is None  # between half and the alert: not re-armed yet
    line.drift = 0.2
    assert event() is None  # below half: re-armed
    line.drift = 0.55
    assert event() is not None
    assert InferenceWorker._drift_event(worker, "x", SimpleNamespace()) is None  # no context
