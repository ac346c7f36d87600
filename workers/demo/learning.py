"""The demo's learning pass (issue 29 item 7): an operator names regions, the line learns.

After the first pass, half of each product's defect images (per defect folder: the
1st, 3rd, ... image) are labelled through the HTTP API the way an operator would: every
region the worker found on the defect (it overlaps the ground-truth mask) is described
with the folder's name, and where no region touches the defect the operator draws it
(missing_region with the ground-truth mask). Then the retraining job's describer step
runs (workers.retraining.describer_step), the worker picks up a promoted describer
between batches, and the other half is published again. Before / after: how many of
the held-back images' regions carry a kind, a fact description, or nothing, and how
many carry their folder's kind.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from engine.defects import rle
from engine.defects.defect_kinds import UNCLEAR, UNCLEAR_TEXT
from engine.defects.kind_names import kind_key, kind_phrase
from pipeline.producer import FramePublisher, publish_images
from pipeline.settings import Settings
from pipeline.storage.database import transaction
from pipeline.storage.queries_pipeline import verdicts_for
from pipeline.storage.repository import activate_model_version, register_model_version
from pipeline.storage.tokens import create_token
from workers.demo.data import DemoProduct

# The demo labels a handful of images per product: fewer than the line's minimum
# (two kinds with three regions each), so its describer step asks for one per kind.
DEMO_MIN_REGIONS_PER_KIND = 1
_DRAWN_SIDE = 256  # a drawn mask is sent at most this size (coarser than the frame is fine)


@dataclass
class Tally:
    regions: int = 0
    kind: int = 0  # the describer named a kind
    facts: int = 0  # no kind, but a description in words of what is measured
    nothing: int = 0  # "unclear defect" or no text at all
    folder_kind: int = 0  # the kind is the image's folder

    def add(self, region: Any, folder: str) -> None:
        self.regions += 1
        if region.kind and region.kind != UNCLEAR:
            self.kind += 1
            self.folder_kind += region.kind == folder
        elif region.description and region.description != UNCLEAR_TEXT:
            self.facts += 1
        else:
            self.nothing += 1

    def row(self) -> list[str]:
        share = f"{100 * self.folder_kind / self.regions:.0f}%" if self.regions else "-"
        return [str(self.regions), str(self.kind), str(self.facts), str(self.nothing),
                f"{self.folder_kind} ({share})"]


def halves(names: dict[uuid.UUID, tuple[str, Path]]
           ) -> tuple[dict[uuid.UUID, tuple[str, Path]], list[tuple[str, Path]]]:
    """(frames to label, images to hold back): per product and defect folder the 1st,
    3rd, ... image is labelled, the others held back; good images neither."""
    by_folder: dict[tuple[str, str], list[tuple[uuid.UUID, Path]]] = {}
    for fid, (product, path) in names.items():
        if path.parent.name != "good" and path.parent.parent.name == "test":
            by_folder.setdefault((product, path.parent.name), []).append((fid, path))
    label, hold = {}, []
    for (product, _folder), frames in sorted(by_folder.items()):
        for i, (fid, path) in enumerate(sorted(frames, key=lambda f: f[1].name)):
            if i % 2 == 0:
                label[fid] = (product, path)
            else:
                hold.append((product, path))
    return label, hold


def ground_truth(path: Path) -> np.ndarray | None:
    """The MVTec ground-truth mask of a defect image (bool), or None."""
    mask_path = (path.parents[2] / "ground_truth" / path.parent.name
                 / f"{path.stem}_mask.png")
    mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
    return None if mask is None else mask > 0


def register_models(factory: sessionmaker[Session], engines: dict[str, Any],
                    products: list[DemoProduct], model_root: Path) -> list[str]:
    """Save each k-shot engine as its product's active model version (its version name
    kept, so the worker does not reload it): what the retraining job starts from."""
    from engine.scoring.artifacts import ModelMetadata, save_model
    from engine.scoring.builder import ScoringConfig
    from engine.scoring.calibration import Threshold

    saved = []
    for p in products:
        engine = engines.get(p.name)
        if engine is None or not str(engine.version).startswith("demo-"):
            continue  # a trained model from the model directory: retrained by clad retrain
        threshold = Threshold(float(engine.threshold), "false_alarm_rate",
                              n_normal=len(p.references), n_anomalous=0,
                              pixel=float(engine.pixel_threshold))
        path = save_model(engine.runtime, model_root, ModelMetadata(
            p.name, ScoringConfig(aug_shifts=()), threshold, version=str(engine.version)))
        with transaction(factory) as session:
            register_model_version(session, version=str(engine.version), product=p.name,
                                   path=str(path), threshold=float(engine.threshold),
                                   metrics={"demo": f"{len(p.references)}-shot"})
            activate_model_version(session, str(engine.version))
        saved.append(p.name)
    return saved


class _Api:
    """The operator API served over HTTP on a free local port, for the labelling pass."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        import uvicorn

        from workers.api import create_app

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        config = uvicorn.Config(create_app(settings, engine), host="127.0.0.1",
                                port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="demo-api", daemon=True)

    def __enter__(self) -> _Api:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the operator API did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def post(self, path: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - local
            return json.loads(response.read())


def _overlaps(mask_rle: dict[str, Any], truth: np.ndarray) -> bool:
    mask = rle.decode(mask_rle)
    small = cv2.resize(truth.astype(np.uint8), mask.shape[::-1],
                       interpolation=cv2.INTER_NEAREST) > 0
    return bool((mask & small).any())


def label_half(api: _Api, token: str, factory: sessionmaker[Session],
               frames: dict[uuid.UUID, tuple[str, Path]]) -> dict[str, int]:
    """Name the defect's regions of each frame with its folder (or draw the defect);
    returns how many labels of each kind were posted."""
    posted = {"described": 0, "drawn": 0, "no_ground_truth": 0}
    with factory() as session:
        verdicts = verdicts_for(session, list(frames))
        for v in verdicts:
            _product, path = frames[v.frame_id]
            truth = ground_truth(path)
            if truth is None:
                posted["no_ground_truth"] += 1
                continue
            words = kind_phrase(kind_key(path.parent.name))
            on_defect = [r for r in v.regions if _overlaps(r.mask_rle, truth)]
            for region in on_defect:
                api.post(f"/api/v1/verdicts/{v.id}/labels", token,
                         {"label": "description", "region_id": region.id,
                          "description": words})
                posted["described"] += 1
            if not on_defect:
                side = min(_DRAWN_SIDE, truth.shape[0], truth.shape[1])
                small = cv2.resize(truth.astype(np.uint8), (side, side),
                                   interpolation=cv2.INTER_NEAREST) > 0
                if not small.any():
                    continue
                api.post(f"/api/v1/verdicts/{v.id}/labels", token,
                         {"label": "missing_region", "description": words,
                          "mask_rle": rle.encode(small)})
                posted["drawn"] += 1
    return posted


def _tallies(factory: sessionmaker[Session], frames: dict[uuid.UUID, tuple[str, Path]]
             ) -> dict[str, Tally]:
    out: dict[str, Tally] = {}
    with factory() as session:
        for v in verdicts_for(session, list(frames)):
            product, path = frames[v.frame_id]
            tally = out.setdefault(product, Tally())
            for r in v.regions:
                tally.add(r, kind_key(path.parent.name))
    return out


def learning_pass(console: Console, settings: Settings, engine: Engine,
                  factory: sessionmaker[Session], worker: Any, products: list[DemoProduct],
                  names: dict[uuid.UUID, tuple[str, Path]], out: Path,
                  wait: Any) -> dict[str, Tally]:
    """Label half, retrain the describers, score the other half again; prints and
    returns the after-tallies of the held-back images (per product and "all")."""
    from workers.retraining.describer_step import (
        DescriberOptions,
        describer_line,
        retrain_describer,
    )

    started = time.monotonic()
    label, hold = halves(names)
    held_first = {fid: pn for fid, pn in names.items() if pn in set(hold)}
    before = _tallies(factory, held_first)
    registered = register_models(factory, worker.engines, products, out / "models")
    with transaction(factory) as session:
        _row, token = create_token(session, name="demo-operator", role="operator",
                                   expires_in=timedelta(hours=2))
    api_settings = settings.model_copy(update={"alarms": settings.alarms.model_copy(
        update={"alarm_interval_s": 0})})
    with _Api(api_settings, engine) as api:
        posted = label_half(api, token, factory, label)
    console.print(f"learning pass: an operator labelled {len(label)} defect images through "
                  f"the HTTP API ({posted['described']} regions named, {posted['drawn']} "
                  f"drawn); {len(hold)} held back [{time.monotonic() - started:.0f} s]")
    promoted: dict[str, str] = {}
    for product in registered:
        result = retrain_describer(factory, product, model_dir=out / "models",
                                   frame_dir=settings.api.frame_dir, options=DescriberOptions(
                                       min_regions_per_kind=DEMO_MIN_REGIONS_PER_KIND))
        console.print(describer_line(product, result.as_dict())
                      + f" [{time.monotonic() - started:.0f} s]")
        if result.status == "promoted" and result.version:
            promoted[product] = result.version
    deadline = time.monotonic() + 300
    while any(worker.engines[p].version != v for p, v in promoted.items()):
        if time.monotonic() > deadline:
            console.print("[red]the worker did not load the new describers in 300 s[/]")
            break
        time.sleep(0.5)
    with FramePublisher(settings.kafka) as publisher:
        again: dict[uuid.UUID, tuple[str, Path]] = {}
        for p in products:
            images = [(str(path), path.read_bytes()) for product, path in hold
                      if product == p.name]
            report = publish_images(publisher, iter(images), camera_id=f"cam-{p.name}",
                                    line_id="demo-line", product=p.name)
            again.update({fid: (p.name, Path(n)) for n, fid in report.frame_ids.items()})
    wait(list(again))
    after = _tallies(factory, again)
    table = Table(title="held-back defect images: regions before / after the labelling pass")
    for column in ("product", "pass", "regions", "with a kind", "fact description",
                   "nothing", "folder's kind"):
        table.add_column(column)
    for tallies in (before, after):
        total = Tally()
        for t in tallies.values():
            for name in ("regions", "kind", "facts", "nothing", "folder_kind"):
                setattr(total, name, getattr(total, name) + getattr(t, name))
        tallies["all"] = total
    for product in [*sorted(p for p in after if p != "all"), "all"]:
        for label_, tallies in (("before", before), ("after", after)):
            table.add_row(product, label_, *tallies.get(product, Tally()).row())
    console.print(table)
    console.print(f"learning pass done [{time.monotonic() - started:.0f} s]")
    return after
