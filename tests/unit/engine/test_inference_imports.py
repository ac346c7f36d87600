"""The inference side (engine.scoring, engine.defects, engine.runtime) imports no training
module: every module of it is imported in a fresh interpreter where importing anything
under engine.training raises (issue 18)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]

PROBE = """
import importlib, pkgutil, sys

class BlockTraining:
    def find_spec(self, name, path=None, target=None):
        if name == "engine.training" or name.startswith("engine.training."):
            raise ImportError(f"inference code imported the training module {name}")
        return None

sys.meta_path.insert(0, BlockTraining())
import engine
for package in ("engine.scoring", "engine.defects", "engine.runtime"):
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        importlib.import_module(info.name)
        print(info.name)
"""


def test_inference_modules_import_nothing_from_training() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    imported = done.stdout.split()
    # the probe really walked the packages (a vacuous pass would import nothing)
    assert "engine.scoring.runtime_model" in imported
    assert "engine.defects.describer" in imported
    assert "engine.runtime.select" in imported


def test_the_blocker_catches_a_training_import() -> None:
    code = PROBE.replace('for package in ("engine.scoring"', 'import engine.training.train\n'
                         'for package in ("engine.scoring"')
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, check=False)
    assert done.returncode != 0
    assert "imported the training module engine.training" in done.stderr


def _worker_imports(source: str) -> list[str]:
    """The workers modules a Python source imports (any nesting: lazy imports count)."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return [n for n in names if n == "workers" or n.startswith("workers.")]


def test_the_engine_imports_no_worker() -> None:
    files = sorted((REPO / "engine").rglob("*.py"))
    assert len(files) > 50  # the walk really found the engine
    offenders = {str(f.relative_to(REPO)): found for f in files
                 if (found := _worker_imports(f.read_text()))}
    assert offenders == {}


def test_the_worker_import_scan_sees_a_lazy_import() -> None:
    source = "def f():\n    from workers.demo.run import main\n    import workers.cli\n"
    assert _worker_imports(source) == ["workers.demo.run", "workers.cli"]
