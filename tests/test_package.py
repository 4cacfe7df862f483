"""The package imports without any framework and exposes its public API."""

from __future__ import annotations

import subprocess
import sys


def test_import_pulls_in_no_framework():
    code = (
        'import sys, anyup_plugin\n'
        'from anyup_plugin import AnyUp, FrozenTimmEncoder\n'
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('mmseg', 'mmengine', 'mmcv', 'detectron2')]\n"
        'assert not bad, bad\n'
    )
    subprocess.run([sys.executable, '-c', code], check=True)


def test_import_has_no_output():
    proc = subprocess.run(
        [sys.executable, '-c', 'import anyup_plugin'], capture_output=True, text=True, check=True
    )
    assert proc.stdout == '' and proc.stderr == ''
