"""How long the console's History page takes with its 50 thumbnails: first visit (each
thumbnail rendered once and stored) and later visits (read back), through the API with
real frames from shared/data.

    .venv/bin/python -m bench.console_thumbs [--side 1024] [--rows 50] [--reps 5]

Seeds a scratch Postgres database with `rows` verdicts whose frames are real MVTec
images scaled to `side` px (PNG) with a heatmap and a region each, serves the API in a
process of its own (uvicorn, as `clad api`), and times from a client: the /history page
alone, then the page plus its 50 thumbnails, 6 requests at a time as a browser does,
first visit (each rendered and stored) and later visits (read back), and one at a time.
The old path (a full-size overlay per row) and a floor (51 trivial requests) are timed
beside. Figures go to bench/results/console_thumbs.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import socket
import statistics
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import httpx
import numpy as np
from sqlalchemy import create_engine, delete, text, update

from engine.defects import rle
from pipeline.heatmap_codec import encode_heatmap
from pipeline.settings import AlarmSettings, Settings
from pipeline.storage.database import make_engine, make_session_factory, transaction
from pipeline.storage.migrate import upgrade
from pipeline.storage.models import Frame, Thumbnail
from pipeline.storage.records import HeatmapRecord, RegionRecord, VerdictRecord
from pipeline.storage.repository import write_verdicts
from pipeline.storage.tokens import create_token
from workers.api import create_app

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mvtec-sample"
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def _frames(side: int, count: int) -> list[tuple[bytes, np.ndarray, np.ndarray]]:
    """(PNG bytes, heatmap, mask) from the shared defect images and their masks."""
    paths = sorted(DATA.glob("*/test/*/*.png"))
    paths = [p for p in paths if p.parent.name != "good"][:count]
    out = []
    for path in paths:
        image = cv2.resize(cv2.imread(str(path)), (side, side), interpolation=cv2.INTER_AREA)
        gt = path.parents[2] / "ground_truth" / path.parent.name / f"{path.stem}_mask.png"
        small = 256  # the model's map resolution, as the worker stores it
        mask = cv2.resize(cv2.imread(str(gt), cv2.IMREAD_GRAYSCALE), (small, small)) > 127
        heat = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 6) * 1.6
        ok, png = cv2.imencode(".png", image)
        assert ok
        out.append((png.tobytes(), heat, heat > 0.5))
    return out


def seed(engine, side: int, rows: int) -> str:  # noqa: ANN001 - Engine
    frames = _frames(side, rows)
    records, images = [], []
    for i in range(rows):
        png, heat, mask = frames[i % len(frames)]
        ys, xs = np.nonzero(mask) if mask.any() else (np.array([0]), np.array([0]))
        scale = side / mask.shape[0]
        bbox = (int(xs.min() * scale), int(ys.min() * scale),
                int((np.ptp(xs) + 1) * scale), int((np.ptp(ys) + 1) * scale))
        heat_png, top = encode_heatmap(heat)
        records.append(VerdictRecord(
            frame_id=uuid.uuid4(), camera_id="cam-1", line_id="line-1", product="bottle",
            captured_at=T0 + timedelta(seconds=i), width=side, height=side,
            content_type="image/png", model_version="v1", score=0.8, threshold=0.5,
            label="anomalous",
            heatmap=HeatmapRecord(png=heat_png, width=256, height=256, max_value=top),
            regions=(RegionRecord(index=0, mask_rle=rle.encode(mask), bbox=bbox,
                                  area=int(mask.sum()), peak_score=1.0, mean_score=0.7,
                                  description="a crack", kind="crack"),)))
        images.append(png)
    with transaction(make_session_factory(engine)) as session:
        write_verdicts(session, records)
        for r, png in zip(records, images, strict=True):
            session.execute(update(Frame).where(Frame.id == r.frame_id).values(image_bytes=png))
        return create_token(session, name="bench", role="viewer",
                            expires_in=timedelta(days=1))[1]


def _serve(url: str, port: int) -> None:
    """The API in its own process, as `clad api` runs it."""
    import uvicorn

    engine = make_engine(url)
    app = create_app(Settings(alarms=AlarmSettings(alarm_interval_s=0)), engine,
                     clock=lambda: T0 + timedelta(hours=1))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _visit(client: httpx.Client, parallel: int, size: str = "max_side=96") -> float:
    """Seconds for /history and every thumbnail it names, `parallel` requests at a time
    (a browser opens 6 connections to one host)."""
    start = time.perf_counter()
    page = client.get("/history")
    assert page.status_code == 200
    urls = re.findall(r'src="(/api/v1/verdicts/\d+/overlay\.png)\?max_side=96"', page.text)

    def fetch(url: str) -> None:
        assert client.get(f"{url}?{size}").status_code == 200

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(fetch, urls))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=1024, help="Frame side in pixels.")
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--out", type=Path, default=Path("bench/results/console_thumbs.json"))
    args = parser.parse_args()

    admin = create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    name = f"clad_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    port = _free_port()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(url, port))
    try:
        upgrade(engine)
        token = seed(engine, args.side, args.rows)
        server.start()
        results: dict[str, dict[str, float]] = {}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120,
                          cookies={"clad_token": token}) as client:
            _wait_until_up(client)
            samples: dict[str, list[float]] = {}

            def timed(label: str, run: Callable[[], object]) -> None:
                start = time.perf_counter()
                run()
                samples.setdefault(label, []).append(time.perf_counter() - start)

            for _ in range(args.reps):
                timed("floor: 51 x /healthz, one at a time",
                      lambda: [client.get("/healthz") for _ in range(51)])
                timed("history page alone", lambda: client.get("/history"))
                with transaction(make_session_factory(engine)) as session:
                    session.execute(delete(Thumbnail))
                timed("page + 50 thumbnails, first visit (render, store), 6 at a time",
                      lambda: _visit(client, 6))
                timed("page + 50 thumbnails, later visits (stored), 6 at a time",
                      lambda: _visit(client, 6))
                timed("page + 50 thumbnails, later visits (stored), one at a time",
                      lambda: _visit(client, 1))
                # The old path: a full-size overlay per row (the old code then shrank it).
                timed("page + 50 full-size overlays (the old path), 6 at a time",
                      lambda: _visit(client, 6, "max_side=4096"))
        for label, values in samples.items():
            results[label] = {"median_s": round(statistics.median(values), 3),
                              "max_s": round(max(values), 3), "reps": len(values)}
            print(f"{label:66s} median {results[label]['median_s']:7.3f} s   "
                  f"max {results[label]['max_s']:7.3f} s")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"side": args.side, "rows": args.rows,
                                        "measured_at": datetime.now(UTC).isoformat(),
                                        "results": results}, indent=2))
        print(f"wrote {args.out}")
    finally:
        server.terminate()
        server.join(timeout=30)
        engine.dispose()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(client: httpx.Client, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError("the API did not start")


if __name__ == "__main__":
    main()
