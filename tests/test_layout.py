"""The test tree cannot stand in for a package, and the Detectron2 tests skip cleanly without it.

pytest puts ``tests/`` on ``sys.path``; a folder there named like a package (``tests/detectron2``)
is then imported as a namespace package when the real one is missing, so a test module's
``pytest.importorskip('detectron2')`` passes and its next import fails at collection.
"""

from __future__ import annotations

import importlib.machinery
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

# Runs pytest on the Detectron2 tests with detectron2 hidden as if it were not installed: the
# real package (wherever it is installed) cannot be found, but a folder on sys.path that
# shadows it still would be, as in an environment without detectron2.
_WITHOUT_DETECTRON2 = """
import importlib.machinery, sys
import pytest

class HideInstalledDetectron2:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] != 'detectron2':
            return None
        if path is None:
            path = [p for p in sys.path if 'site-packages' not in p]
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None:
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)
        return spec

sys.meta_path.insert(0, HideInstalledDetectron2())
sys.exit(pytest.main(sys.argv[1:]))
"""


def test_no_test_folder_shadows_an_importable_name():
    outside = [p for p in sys.path if p and not Path(p).resolve().is_relative_to(TESTS)]
    folders = [p.name for p in TESTS.iterdir() if p.is_dir() and any(p.glob('test_*.py'))]
    assert 'test_detectron2' in folders and 'test_mmseg' in folders
    shadowing = [
        name for name in folders if importlib.machinery.PathFinder.find_spec(name, outside)
    ]
    assert not shadowing, f'rename these test folders, they shadow importable names: {shadowing}'
    assert all(name.startswith('test_') for name in folders), folders


def test_detectron2_tests_skip_cleanly_without_detectron2(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            '-c',
            _WITHOUT_DETECTRON2,
            str(TESTS / 'test_detectron2'),
            '-q',
            '-rs',
            '-p',
            'no:cacheprovider',
            f'--rootdir={TESTS.parent}',
            f'--basetemp={tmp_path}',
        ],
        cwd=TESTS.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    # Every module skips at collection, so pytest reports no tests collected (exit code 5);
    # an import failing at collection would give 2.
    assert proc.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, out[-3000:]
    assert 'error' not in out.lower(), out[-3000:]
    skipped = [line for line in out.splitlines() if line.startswith('SKIPPED')]
    test_modules = sorted(p.name for p in (TESTS / 'test_detectron2').glob('test_*.py'))
    assert len(skipped) == len(test_modules), out[-3000:]
    assert all('detectron2 is not installed' in line for line in skipped), skipped
