"""Fixtures shared by every test folder."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / 'tools'


@pytest.fixture(scope='session')
def load_tool() -> Callable[[str], ModuleType]:
    """``load_tool(name)``: a fresh module of ``tools/<name>.py`` (the tools are scripts)."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f'anyup_tool_{name}', TOOLS / f'{name}.py')
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope='session')
def run_python() -> Callable[[list[str], Path], subprocess.CompletedProcess]:
    """``run_python(args, cwd)``: runs ``python *args`` with the repository importable.

    Fails the test, with the end of both output streams, unless the command exits with 0.
    """

    def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.run(
            [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, f'{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
        return proc

    return run
