"""Where a demo run keeps its results, and the exact commands that open them in the console.

Each run gets a folder of its own under the output folder (run-YYYYMMDD-HHMMSS, UTC),
holding its SQLite database, its overlays and its synthetic frames; earlier runs stay
beside it, and `latest` points at the newest. The demo ends by printing the commands
that serve that database in the operator console, with absolute paths, so they work
from any folder.
"""

from __future__ import annotations

import shlex
from datetime import UTC, datetime
from pathlib import Path

from pipeline.settings import Settings

CONSOLE_HEADER = "To see these results in the operator console:"


def new_run_folder(out: Path, now: datetime | None = None) -> Path:
    """A fresh folder for this run under `out` (never an earlier run's), and `latest`
    pointing at it."""
    stamp = (now or datetime.now(UTC)).strftime("run-%Y%m%d-%H%M%S")
    run = out / stamp
    n = 1
    while run.exists():
        n += 1
        run = out / f"{stamp}-{n}"
    run.mkdir(parents=True)
    latest = out / "latest"
    try:
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(run.name, target_is_directory=True)
    except OSError:
        pass  # a file system without links: the printed paths name the run anyway
    return run


def console_commands(settings: Settings, database_url: str, *, wrapper: str) -> list[str]:
    """The commands, in order, that open `database_url` in the console. `wrapper` runs
    clad: "./clad-line clad" in a checkout, "clad" where it is installed."""
    api = settings.api
    url = f"http://{api.api_host}:{api.api_port}"
    exported = ([f"export CLAD_DATABASE_URL={shlex.quote(database_url)}"]
                if database_url.startswith("sqlite") else [])  # else: as already set
    return [
        *exported,
        f"{wrapper} user create demo --role admin   # asks for a password (10+ characters)",
        f"CLAD_API_DOCS=viewer {wrapper} api   # then open {url} and sign in as demo",
    ]


def print_console_hint(console, settings: Settings, database_url: str,  # noqa: ANN001 - rich
                       run: Path) -> None:
    wrapper = "./clad-line clad" if Path("clad-line").is_file() else "clad"
    console.print(f"this run's database, overlays and frames: {run.resolve()}",
                  soft_wrap=True, markup=False, highlight=False)
    console.print(CONSOLE_HEADER)
    for command in console_commands(settings, database_url, wrapper=wrapper):
        console.print(f"  {command}", soft_wrap=True, markup=False, highlight=False)
    console.print("  (the database is already migrated; Ctrl-C stops the console)")
