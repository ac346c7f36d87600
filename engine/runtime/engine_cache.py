"""TensorRT engines cached beside the model version they were built from.

An engine is only valid for the exact GPU model, compute capability, TensorRT
version, precision and batch profile it was built with (and, of course, for the
weights), so all of these are in its key and file name. A worker on another GPU,
or after a TensorRT upgrade, finds no file under its key and builds a new engine;
engines for other keys are left alone (a shared model directory may serve several
GPU types). Pure Python: nothing here needs tensorrt, so it is tested on CPU.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from engine.runtime.export import RUNTIME_SUBDIR

log = logging.getLogger(__name__)

Precision = Literal["fp16", "fp32"]
ProgressFn = Callable[[str], None]
ENGINE_SUBDIR = "engines"


@dataclass(frozen=True)
class EngineKey:
    model_hash: str  # engine.runtime.export.model_hash of the weights it was built from
    gpu_name: str
    compute_capability: tuple[int, int]
    tensorrt_version: str
    precision: Precision
    max_batch: int
    opt_batch: int
    frame_size: tuple[int, int]

    def slug(self) -> str:
        gpu = re.sub(r"[^A-Za-z0-9]+", "-", self.gpu_name).strip("-").lower()
        major, minor = self.compute_capability
        h, w = self.frame_size
        return (
            f"{self.model_hash}-{gpu}-sm{major}{minor}-trt{self.tensorrt_version}-"
            f"{self.precision}-b{self.opt_batch}of{self.max_batch}-{h}x{w}"
        )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> EngineKey:
        d = dict(data)
        d["compute_capability"] = tuple(d["compute_capability"])  # type: ignore[arg-type]
        d["frame_size"] = tuple(d["frame_size"])  # type: ignore[arg-type]
        return cls(**d)  # type: ignore[arg-type]


def engine_dir(version_dir: str | Path) -> Path:
    return Path(version_dir) / RUNTIME_SUBDIR / ENGINE_SUBDIR


def engine_path(version_dir: str | Path, key: EngineKey) -> Path:
    return engine_dir(version_dir) / f"{key.slug()}.plan"


def cached_keys(version_dir: str | Path) -> list[EngineKey]:
    """Keys of the engines stored for a model version (from their sidecar files)."""
    folder = engine_dir(version_dir)
    keys = []
    for meta in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            keys.append(EngineKey.from_dict(json.loads(meta.read_text())["key"]))
        except (KeyError, TypeError, ValueError):
            log.warning("ignoring unreadable engine metadata %s", meta)
    return keys


def _changed_fields(old: EngineKey, new: EngineKey) -> list[str]:
    return [f for f, v in new.to_dict().items() if old.to_dict()[f] != v]


@contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    # several workers on one host may start at once: one builds, the others wait for it
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".build.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load_or_build(
    version_dir: str | Path | None,
    key: EngineKey,
    build: Callable[[], bytes],
    progress: ProgressFn | None = None,
) -> tuple[bytes, Path | None]:
    """Serialized engine for `key`: read from the cache, or built, stored and returned.

    Without a version directory (a model that was never saved) the engine is built
    every time and nothing is written. Returns (engine bytes, path or None).
    """
    say = progress or (lambda msg: log.info("%s", msg))
    if version_dir is None:
        say("no model directory: building a TensorRT engine that will not be cached")
        return build(), None
    path = engine_path(version_dir, key)
    with _build_lock(path.parent):
        if path.is_file():
            say(f"using cached TensorRT engine {path.name}")
            return path.read_bytes(), path
        same_model = [k for k in cached_keys(version_dir) if k.model_hash == key.model_hash]
        if same_model:
            changes = sorted({f for k in same_model for f in _changed_fields(k, key)})
            say(
                f"cached engines do not match this machine (changed: {', '.join(changes)}); "
                "building a new one"
            )
        else:
            say("no cached TensorRT engine for this model; building one (takes minutes)")
        start = time.monotonic()
        data = build()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        meta = {"key": key.to_dict(), "build_seconds": round(time.monotonic() - start, 1),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "bytes": len(data)}  # fmt: skip
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
        tmp.replace(path)  # the .plan appears last: its presence means "complete"
        say(f"built TensorRT engine {path.name} in {meta['build_seconds']} s")
        return data, path


def load_or_build_file(
    path: Path, key: dict[str, object], build: Callable[[], bytes], say: ProgressFn, what: str
) -> bytes:
    """A compiled artefact at `path` (sidecar `.json` holding `key`), built once.

    The generic half of `load_or_build` for runtimes whose compiled form is keyed by a
    plain dict (OpenVINO): same lock, same atomic write, the file appears last.
    """
    with _build_lock(path.parent):
        if path.is_file():
            say(f"using cached {what} {path.name}")
            return path.read_bytes()
        say(f"no cached {what} for this model and machine; compiling one")
        start = time.monotonic()
        data = build()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        meta = {"key": key, "build_seconds": round(time.monotonic() - start, 1),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "bytes": len(data)}  # fmt: skip
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
        tmp.replace(path)
        say(f"compiled {what} {path.name} in {meta['build_seconds']} s")
        return data
