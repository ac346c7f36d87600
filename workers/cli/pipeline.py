"""`clad produce`, `clad worker`, `clad broker` and `clad demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.settings import EMBEDDED_BROKER, Settings
from workers.cli.main import settings_from

_DEMO_OUT = Path("demo-output")


def _need_broker(settings: Settings) -> None:
    if settings.kafka.bootstrap_servers == EMBEDDED_BROKER:
        typer.echo("error: CLAD_BOOTSTRAP_SERVERS is 'embedded', which only `clad demo` starts; "
                   "point it at a broker (host:port)", err=True)
        raise typer.Exit(2)


def produce(ctx: typer.Context,
            source: str = typer.Argument(..., help="Folder of PNG/JPEG, a video file, or an "
                                                   "OpenCV camera index (0, 1, ...)."),
            camera: str = typer.Option("cam-1", help="Camera id (Kafka key)."),
            line: str = typer.Option("line-1", help="Production line id."),
            product: str = typer.Option(..., help="Product / category the model scores."),
            fps: float | None = typer.Option(None, min=0.01, help="Rate; default: max."),
            max_frames: int | None = typer.Option(None, "--max", min=1, help="Stop after N."),
            compression: str | None = typer.Option(None, help="none or gzip (overrides "
                                                              "CLAD_COMPRESSION)."),
            encoding: str = typer.Option(".jpg", help="Encoding for video/camera frames."),
            ) -> None:
    """Publish frames to the frames topic with a progress bar and a final count."""
    from pipeline.kafka_io import ensure_topics
    from pipeline.producer import FramePublisher, capture_images, folder_images, publish_images

    settings = settings_from(ctx)
    _need_broker(settings)
    kafka = settings.kafka
    if compression is not None:
        kafka = kafka.model_copy(update={"compression": compression})
    path = Path(source)
    if path.is_dir():
        images = folder_images(path)
    elif path.is_file():
        images = capture_images(str(path), encoding=encoding)
    elif source.isdigit():
        images = capture_images(int(source), encoding=encoding)
    else:
        typer.echo(f"error: {source} is neither a folder, a file nor a camera index", err=True)
        raise typer.Exit(2)
    ensure_topics(kafka)
    with FramePublisher(kafka) as publisher:
        report = publish_images(publisher, images, camera_id=camera, line_id=line,
                                product=product, fps=fps, max_frames=max_frames, progress=True)
    typer.echo(f"published {report.published} frames to {kafka.topic_frames} "
               f"({report.failed} failed, {report.skipped} skipped)")
    if report.failed:
        raise typer.Exit(1)


def worker(ctx: typer.Context) -> None:
    """Run an inference worker until SIGTERM (finishes its batch, commits, leaves)."""
    from workers.streaming.opencv_limit import limit_opencv_pixels
    from workers.streaming.shutdown import install_stop_handlers

    settings = settings_from(ctx)
    limit_opencv_pixels(settings.kafka.max_frame_pixels)  # before anything imports cv2
    # Before the slow imports and model loading: a SIGTERM during start-up exits cleanly.
    stop = install_stop_handlers(settings.worker.shutdown_timeout_s)
    _need_broker(settings)
    from pipeline.kafka_io import BrokerUnavailableError
    from workers.streaming.active_models import NoActiveModelError
    from workers.streaming.runner import run_worker

    try:
        run_worker(settings, stop=stop)
    except BrokerUnavailableError as exc:
        typer.echo(f"error: {exc}; check CLAD_BOOTSTRAP_SERVERS", err=True)
        raise typer.Exit(1) from None
    except NoActiveModelError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def demo(ctx: typer.Context,
         images: Annotated[Path | None, typer.Option(
             "--images", help="MVTec-layout folder or a folder of images; default: synthetic "
                              "parts.")] = None,
         out: Annotated[Path, typer.Option(
             help="Each run keeps its database, overlays and frames in a folder of its own "
                  "here (run-YYYYMMDD-HHMMSS; `latest` points at the newest).")] = _DEMO_OUT,
         shots: int = typer.Option(4, min=1, help="Reference images per product (k-shot)."),
         max_per_product: int | None = typer.Option(None, min=1, help="Cap frames/product."),
         ) -> None:
    """One command: broker, SQLite, worker and producer; prints every verdict."""
    from workers.streaming.opencv_limit import limit_opencv_pixels

    limit_opencv_pixels(settings_from(ctx).kafka.max_frame_pixels)  # before cv2 loads
    from workers.demo.run import run_demo

    raise typer.Exit(run_demo(settings_from(ctx), images=images, out=out, shots=shots,
                              max_per_product=max_per_product))


def broker(port: int = typer.Option(9092, min=1, max=65535,
                                    help="Loopback port the broker listens on."),
           ) -> None:
    """Run the bundled Kafka-protocol broker (Tansu, in memory) for a local trial, until
    Ctrl-C / SIGTERM. It keeps nothing across restarts: production uses Apache Kafka."""
    import signal
    import threading

    from pipeline.broker import BrokerError, EmbeddedBroker

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        running = EmbeddedBroker(port).start()
    except BrokerError as exc:
        typer.echo(f"error: {exc} (is port {port} taken? try --port)", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"bundled broker (in memory, for trials) on {running.bootstrap_servers}; "
               "in other shells:\n"
               f"  export CLAD_BOOTSTRAP_SERVERS={running.bootstrap_servers}\n"
               "Ctrl-C stops it (its topics and messages are gone then).")
    try:
        stop.wait()
    finally:
        running.stop()
    typer.echo("broker stopped")


def register(app: typer.Typer) -> None:
    app.command("broker")(broker)
    app.command("produce")(produce)
    app.command("worker")(worker)
    app.command("demo")(demo)
