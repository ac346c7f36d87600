import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.settings import EMBEDDED_BROKER, SettingsError, load_settings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _no_clad_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CLAD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env from the checkout


def test_defaults_are_the_embedded_demo() -> None:
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == EMBEDDED_BROKER
    assert settings.database.database_url.startswith("sqlite:///")
    assert settings.redis.redis_url is None
    assert settings.worker.batch_size == 8
    assert settings.model.backend == "auto"
    assert settings.model.infer_requests is None  # engine.runtime.parallel's default


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAD_BATCH_SIZE", "32")
    monkeypatch.setenv("CLAD_REDIS_URL", "redis://127.0.0.1:6379/3")
    monkeypatch.setenv("CLAD_BACKEND", "onnxruntime")
    settings = load_settings()
    assert settings.worker.batch_size == 32
    assert settings.redis.redis_url == "redis://127.0.0.1:6379/3"
    assert settings.model.backend == "onnxruntime"
    monkeypatch.setenv("CLAD_BACKEND", "openvino")
    monkeypatch.setenv("CLAD_INFER_REQUESTS", "3")
    settings = load_settings()
    assert settings.model.backend == "openvino" and settings.model.infer_requests == 3
    assert settings.model.cpu_precision == "fp32"
    monkeypatch.setenv("CLAD_CPU_PRECISION", "int8")
    assert load_settings().model.cpu_precision == "int8"
    assert settings.worker.metrics_host == "0.0.0.0"  # the pod IP is scraped and probed
    monkeypatch.setenv("CLAD_METRICS_HOST", "127.0.0.1")
    assert load_settings().worker.metrics_host == "127.0.0.1"


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / "custom.env"
    env_file.write_text("CLAD_MAX_WAIT_MS=250\nCLAD_TOPIC_FRAMES=line3.frames\n")
    settings = load_settings(env_file)
    assert settings.worker.max_wait_ms == 250
    assert settings.kafka.topic_frames == "line3.frames"


@pytest.mark.parametrize(("name", "value"), [
    ("CLAD_BATCH_SIZE", "abc"),
    ("CLAD_BATCH_SIZE", "0"),
    ("CLAD_BACKEND", "cuda-magic"),
    ("CLAD_INFER_REQUESTS", "0"),
    ("CLAD_CPU_PRECISION", "int4"),
    ("CLAD_DATABASE_URL", "mysql://x"),
    ("CLAD_REDIS_URL", "http://127.0.0.1"),
    ("CLAD_API_BOOTSTRAP_TOKEN", "changeme"),
    ("CLAD_CAMERA_MM_PER_PX", '{"cam-1": 0}'),
    ("CLAD_CAMERA_MM_PER_PX", "0.05"),
])
def test_invalid_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str,
                                            value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_camera_scales_per_camera(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().camera.camera_mm_per_px == {}
    monkeypatch.setenv("CLAD_CAMERA_MM_PER_PX", '{"cam-1": 0.05, "*": 0.08}')
    assert load_settings().camera.camera_mm_per_px == {"cam-1": 0.05, "*": 0.08}


def test_secret_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAD_API_BOOTSTRAP_TOKEN", "short-secret")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "short-secret" not in str(info.value)


def test_cli_bad_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {"CLAD_BATCH_SIZE": "abc", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "workers.cli.main", "db", "current"],
                            capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "CLAD_BATCH_SIZE" in lines[0]


def test_cli_help_lists_subcommands() -> None:
    result = subprocess.run([sys.executable, "-m", "workers.cli.main", "--help"],
                            capture_output=True, text=True, check=True)
    assert "db" in result.stdout
