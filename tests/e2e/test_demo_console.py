"""From the demo to the console by following only what the demo prints: its run folder,
the commands that make an account and serve the console on that run's database, and
signing in there to find the run's verdicts (issue 32 item 1)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.pipeline_support import free_port
from workers.demo.console_hint import CONSOLE_HEADER

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
CLAD = [sys.executable, "-m", "workers.cli.main"]
PASSWORD = "demo-password-42"


def _printed_commands(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(CONSOLE_HEADER))
    commands = []
    for line in lines[start + 1:]:
        if not line.startswith("  ") or line.strip().startswith("("):
            break
        commands.append(line.split("#")[0].strip())
    return commands


def _run(command: str, env: dict[str, str], cwd: Path, **kwargs: object
         ) -> subprocess.Popen | subprocess.CompletedProcess:
    """A printed command as a shell would run it: VAR=value prefixes, then `clad ...`."""
    words = shlex.split(command)
    while "=" in words[0]:
        name, _, value = words.pop(0).partition("=")
        env = {**env, name: value}
    assert words[0] == "clad", command
    argv = [*CLAD, *words[1:]]
    if kwargs.pop("background", False):
        return subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False, **kwargs)


def test_the_demo_prints_how_to_open_its_results_in_the_console(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAD_")}
    env.update(PYTHONPATH=str(REPO), CLAD_API_PORT=str(port))
    demo = subprocess.run([*CLAD, "demo", "--out", "demo-output"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    runs = sorted((tmp_path / "demo-output").glob("run-*"))
    assert len(runs) == 1 and (tmp_path / "demo-output" / "latest").resolve() == runs[0]
    assert f"this run's database, overlays and frames: {runs[0]}" in demo.stdout
    assert len(list((runs[0] / "overlays").glob("*.png"))) == 12

    commands = _printed_commands(demo.stdout)
    assert [c.split()[0] for c in commands] == ["export", "clad", "CLAD_API_DOCS=viewer"]
    name, _, value = commands[0].removeprefix("export ").partition("=")
    env[name] = shlex.split(value)[0]
    assert env["CLAD_DATABASE_URL"] == f"sqlite:///{runs[0] / 'demo.db'}"
    made = _run(commands[1], env, tmp_path, input=f"{PASSWORD}\n{PASSWORD}\n")
    assert made.returncode == 0, made.stdout + made.stderr
    api = _run(commands[2], env, tmp_path, background=True)
    base = f"http://127.0.0.1:{port}"
    assert f"open {base} and sign in as demo" in demo.stdout
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert api.poll() is None and time.monotonic() < deadline, api.stderr.read()
                time.sleep(0.3)
            assert client.get("/history").status_code in (303, 307)  # sign in first
            login = client.post("/console/session",
                                json={"username": "demo", "password": PASSWORD})
            assert login.status_code == 200 and login.json()["role"] == "admin"
            items = client.get("/api/v1/verdicts").json()["items"]
            assert len(items) == 12 and {v["camera_id"] for v in items} == {"cam-synthetic-part"}
            page = client.get("/history")
            assert page.status_code == 200 and f'data-verdict="{items[0]["id"]}"' in page.text
            thumb = client.get(f"/api/v1/verdicts/{items[0]['id']}/overlay.png?max_side=96")
            assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
            assert client.get("/docs").status_code == 200
    finally:
        api.terminate()
        api.wait(timeout=30)
